//! JUnit XML for CI systems: one test case per replayed file (or finding).

use std::fmt::Write as _;
use std::path::Path;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `results` are the JSON objects `privmem replay --json` prints: `file`, and `ok` with
/// `findings`, or `skipped`.
pub fn write(path: &Path, suite: &str, results: &[serde_json::Value]) -> std::io::Result<()> {
    let failures = results.iter().filter(|r| r["ok"] == false).count();
    let skipped = results.iter().filter(|r| r.get("skipped").is_some()).count();
    let mut o = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        esc(suite),
        results.len()
    );
    for r in results {
        let name = esc(r["file"].as_str().or(r["signature"].as_str()).unwrap_or("case"));
        let _ = write!(o, "  <testcase classname=\"{}\" name=\"{name}\">", esc(suite));
        if let Some(s) = r["skipped"].as_str() {
            let _ = write!(o, "<skipped message=\"{}\"/>", esc(s));
        } else if r["ok"] == false {
            let detail: Vec<String> = r["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| f["detail"].as_str().unwrap_or("").to_string())
                .collect();
            let sig = r["signatures"].as_array().and_then(|a| a.first()).and_then(|s| s.as_str()).unwrap_or("finding");
            let _ = write!(o, "<failure message=\"{}\">{}</failure>", esc(sig), esc(&detail.join("\n")));
        }
        o.push_str("</testcase>\n");
    }
    o.push_str("</testsuite>\n");
    super::write_atomic(path, o.as_bytes())
}
