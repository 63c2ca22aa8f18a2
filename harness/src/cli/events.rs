//! The events one privmem writes and another reads (the lab's host side reads what `fuzz` and
//! `exec` print inside the lab VM), as serde structs: one schema for both ends. Each line also
//! carries `type` and `format` ([`super::typed`]); readers ignore fields they do not know.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A finding of a campaign, as `privmem fuzz --json` writes it when it arrives.
    Finding(FindingEvent),
    /// A program `privmem exec` ran, and how it ended.
    Exec(ExecEvent),
    /// The kernel PCs a command reached (hex).
    Coverage(CoverageEvent),
    /// Any other event (a campaign's summary), read by field.
    #[serde(other)]
    Other,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindingEvent {
    pub signature: String,
    pub label: String,
    pub known: bool,
    pub file: String,
    pub sequence: String,
    pub seconds: f64,
    pub detail: String,
    /// The finding itself (`oracle::Finding` as JSON: kind, step (1-based), op, state, ...).
    pub finding: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecEvent {
    pub file: String,
    pub exit: Option<i32>,
    pub output: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoverageEvent {
    pub source: String,
    pub pcs: Vec<String>,
}

impl Event {
    /// The event as one typed JSON line's value.
    pub fn to_json(&self, ty: &str) -> serde_json::Value {
        super::typed(ty, serde_json::to_value(self).expect("plain data"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_written_and_others_pass_through() {
        let e = Event::Exec(ExecEvent { file: "/corpus/x".into(), exit: Some(4), output: "skip".into() });
        let line = e.to_json("exec").to_string();
        assert!(line.contains("\"event\":\"exec\"") && line.contains("\"type\":\"exec\""), "{line}");
        match serde_json::from_str::<Event>(&line).unwrap() {
            Event::Exec(x) => assert_eq!((x.file.as_str(), x.exit), ("/corpus/x", Some(4))),
            other => panic!("{other:?}"),
        }
        let summary = r#"{"event":"summary","cases":3,"type":"fuzz.summary","format":1}"#;
        assert!(matches!(serde_json::from_str::<Event>(summary).unwrap(), Event::Other));
    }
}
