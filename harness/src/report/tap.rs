//! TAP 13 (the Test Anything Protocol kselftest speaks) for `replay --tap` and `lab --tap`: one
//! test point per scenario, a skip with its reason, a failure with its findings as YAML.

use super::records::{ScenarioResult, Verdict};

/// The TAP text of per-scenario results.
pub fn tap(results: &[ScenarioResult]) -> String {
    let mut o = format!("TAP version 13\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        let n = i + 1;
        let file = &r.file;
        match r.verdict() {
            Verdict::Skipped => o.push_str(&format!("ok {n} - {file} # SKIP {}\n", r.skipped.as_deref().unwrap_or(""))),
            Verdict::Passed => o.push_str(&format!("ok {n} - {file}\n")),
            Verdict::Failed => {
                o.push_str(&format!("not ok {n} - {file}\n  ---\n  findings:\n"));
                for d in r.failure_details() {
                    o.push_str(&format!("    - \"{}\"\n", d.replace('"', "'")));
                }
                o.push_str("  ...\n");
            }
        }
    }
    o
}

/// kselftest's exit status: 4 (KSFT_SKIP) when every test point was skipped.
pub fn all_skipped(results: &[ScenarioResult]) -> bool {
    !results.is_empty() && results.iter().all(|r| r.verdict() == Verdict::Skipped)
}

#[cfg(test)]
mod tests {
    use super::ScenarioResult;

    #[test]
    fn points_skips_and_failures() {
        let r = [
            ScenarioResult::ran("a.seq", vec![]),
            ScenarioResult::skip("b.seq", "no TDX"),
            ScenarioResult::failed("c.seq", "step 1: expected ok"),
        ];
        let t = super::tap(&r);
        assert!(t.starts_with("TAP version 13\n1..3\nok 1 - a.seq\nok 2 - b.seq # SKIP no TDX\nnot ok 3 - c.seq\n"));
        assert!(t.contains("    - \"step 1: expected ok\"\n"));
        assert!(!super::all_skipped(&r));
        assert!(super::all_skipped(&r[1..2]));
    }
}
