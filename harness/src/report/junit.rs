//! JUnit XML for CI systems: one test case per replayed file (or finding).

use std::fmt::Write as _;
use std::path::Path;

use super::records::{ScenarioResult, Verdict};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One test case per result: `file` names it (a campaign's finding is named by its signature).
pub fn write(path: &Path, suite: &str, results: &[ScenarioResult]) -> std::io::Result<()> {
    let failures = results.iter().filter(|r| r.verdict() == Verdict::Failed).count();
    let skipped = results.iter().filter(|r| r.verdict() == Verdict::Skipped).count();
    let mut o = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        esc(suite),
        results.len()
    );
    for r in results {
        let _ = write!(o, "  <testcase classname=\"{}\" name=\"{}\">", esc(suite), esc(&r.file));
        match r.verdict() {
            Verdict::Skipped => {
                let _ = write!(o, "<skipped message=\"{}\"/>", esc(r.skipped.as_deref().unwrap_or("")));
            }
            Verdict::Failed => {
                let sig = r.signatures.first().map(String::as_str).unwrap_or("finding");
                let _ =
                    write!(o, "<failure message=\"{}\">{}</failure>", esc(sig), esc(&r.failure_details().join("\n")));
            }
            Verdict::Passed => {}
        }
        o.push_str("</testcase>\n");
    }
    o.push_str("</testsuite>\n");
    super::write_atomic(path, o.as_bytes())
}
