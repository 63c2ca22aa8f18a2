//! TAP 13 (the Test Anything Protocol kselftest speaks) for `replay --tap` and `lab --tap`: one
//! test point per scenario, a skip with its reason, a failure with its findings as YAML.

/// The TAP text of per-scenario results (`file`, and `ok` or `skipped`, and `findings`).
pub fn tap(results: &[serde_json::Value]) -> String {
    let mut o = format!("TAP version 13\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        let n = i + 1;
        let file = r["file"].as_str().unwrap_or("?");
        if let Some(why) = r["skipped"].as_str() {
            o.push_str(&format!("ok {n} - {file} # SKIP {why}\n"));
        } else if r["ok"].as_bool() == Some(true) {
            o.push_str(&format!("ok {n} - {file}\n"));
        } else {
            o.push_str(&format!("not ok {n} - {file}\n  ---\n  findings:\n"));
            for f in r["findings"].as_array().into_iter().flatten() {
                let d = f["detail"].as_str().unwrap_or("").replace('"', "'");
                o.push_str(&format!("    - \"{d}\"\n"));
            }
            o.push_str("  ...\n");
        }
    }
    o
}

/// kselftest's exit status: 4 (KSFT_SKIP) when every test point was skipped.
pub fn all_skipped(results: &[serde_json::Value]) -> bool {
    !results.is_empty() && results.iter().all(|r| r.get("skipped").is_some())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn points_skips_and_failures() {
        let r = [
            json!({"file": "a.seq", "ok": true}),
            json!({"file": "b.seq", "skipped": "no TDX"}),
            json!({"file": "c.seq", "ok": false, "findings": [{"detail": "step 1: expected ok"}]}),
        ];
        let t = super::tap(&r);
        assert!(t.starts_with("TAP version 13\n1..3\nok 1 - a.seq\nok 2 - b.seq # SKIP no TDX\nnot ok 3 - c.seq\n"));
        assert!(t.contains("    - \"step 1: expected ok\"\n"));
        assert!(!super::all_skipped(&r));
        assert!(super::all_skipped(&r[1..2]));
    }
}
