//! The events one privmem writes and another reads (the lab's host side reads what `fuzz` and
//! `exec` print inside the lab VM), as serde structs: one schema for both ends. Each line also
//! carries `type` and `format` ([`crate::report::records::typed`]); readers ignore fields they
//! do not know.

use crate::report::records::{typed, FuzzSummary};
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
    /// The end of a campaign.
    Summary(FuzzSummary),
    /// An event this privmem does not know (a newer writer's).
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
    /// The finding itself (kind, step (1-based in JSON), op, state, ...).
    pub finding: crate::oracle::Finding,
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
    /// The line's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Finding(_) => "fuzz.finding",
            Event::Exec(_) => "exec",
            Event::Coverage(_) => "coverage",
            Event::Summary(_) => "fuzz.summary",
            Event::Other => "event",
        }
    }

    /// The event as one typed JSON line's value.
    pub fn to_json(&self) -> serde_json::Value {
        typed(self.type_name(), serde_json::to_value(self).expect("plain data"))
    }

    /// A line of output as an event: None where it is no event (another record, console text).
    pub fn read(line: &str) -> Option<Event> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v.get("event")?;
        Some(serde_json::from_value(v).unwrap_or(Event::Other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_written_and_others_pass_through() {
        let e = Event::Exec(ExecEvent { file: "/corpus/x".into(), exit: Some(4), output: "skip".into() });
        let line = e.to_json().to_string();
        assert!(line.contains("\"event\":\"exec\"") && line.contains("\"type\":\"exec\""), "{line}");
        match serde_json::from_str::<Event>(&line).unwrap() {
            Event::Exec(x) => assert_eq!((x.file.as_str(), x.exit), ("/corpus/x", Some(4))),
            other => panic!("{other:?}"),
        }
        let newer = r#"{"event":"progress","cases":3,"type":"fuzz.progress","format":1}"#;
        assert!(matches!(Event::read(newer), Some(Event::Other)));
        assert!(Event::read(r#"{"file":"x.seq","ok":true}"#).is_none());
        let s = Event::Summary(FuzzSummary { cases: 7, ..Default::default() }).to_json().to_string();
        assert!(s.contains("\"type\":\"fuzz.summary\""), "{s}");
        assert!(matches!(Event::read(&s), Some(Event::Summary(x)) if x.cases == 7));
    }
}
