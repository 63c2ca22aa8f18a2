//! `privmem coverage`: which model states a corpus or a campaign reached, drawn as an HTML page
//! with SVG heat maps a person can open: S-EPT state × level against op kind, and outcomes
//! against op kind, plus the counters of splits, promotions and partial conversions.

use crate::model::Coverage;
use crate::seq::{Level, OpKind, SeptState};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Add `b` into `a`.
pub fn merge(a: &mut Coverage, b: &Coverage) {
    for (k, v) in &b.outcomes {
        *a.outcomes.entry(*k).or_default() += v;
    }
    if a.sept.is_empty() {
        a.sept = vec![[[0; OpKind::ALL.len()]; Level::ALL.len()]; SeptState::ALL.len()];
    }
    for (s, lv) in b.sept.iter().enumerate() {
        for (l, ops) in lv.iter().enumerate() {
            for (o, n) in ops.iter().enumerate() {
                a.sept[s][l][o] += n;
            }
        }
    }
    a.splits += b.splits;
    a.split_failures += b.split_failures;
    a.promote_attempts += b.promote_attempts;
    a.promote_failures += b.promote_failures;
    a.partial_conversions += b.partial_conversions;
    for (x, y) in a.final_leaves.iter_mut().zip(b.final_leaves) {
        *x += y;
    }
    a.final_thp_leaves += b.final_thp_leaves;
}

fn color(n: u64, max: u64) -> String {
    if n == 0 {
        return "#f4f4f4".into();
    }
    let t = ((n as f64).ln_1p() / (max as f64).ln_1p()).clamp(0.05, 1.0);
    let g = (230.0 - 170.0 * t) as u8;
    let r = (255.0 - 220.0 * t) as u8;
    format!("rgb({r},{g},255)")
}

/// A heat map: `rows` × `cols`, cell values from `value`.
fn heatmap(title: &str, rows: &[String], cols: &[String], value: impl Fn(usize, usize) -> u64) -> String {
    let (cw, ch, left, top) = (34, 18, 110, 120);
    let w = left + cols.len() * cw + 90;
    let h = top + rows.len() * ch + 10;
    let max = (0..rows.len())
        .flat_map(|r| (0..cols.len()).map(move |c| (r, c)))
        .map(|(r, c)| value(r, c))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut s = format!("<h2>{title}</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"11\">\n");
    for (c, name) in cols.iter().enumerate() {
        let x = left + c * cw + cw / 2;
        let _ = writeln!(s, "<text transform=\"translate({x},{}) rotate(-60)\">{name}</text>", top - 6);
    }
    for (r, name) in rows.iter().enumerate() {
        let y = top + r * ch;
        let _ = writeln!(s, "<text x=\"4\" y=\"{}\">{name}</text>", y + 13);
        for (c, col) in cols.iter().enumerate() {
            let n = value(r, c);
            let _ = writeln!(
                s,
                "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{name} / {}: {n}</title></rect>",
                left + c * cw,
                cw - 2,
                ch - 2,
                color(n, max),
                col
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Bars of the stage-2 leaves per level the cases ended with (a log scale: 4K leaves outnumber
/// huge ones by orders of magnitude).
fn levels_chart(cov: &Coverage) -> String {
    let bars = [
        ("4K", cov.final_leaves[0], "#5b8def"),
        ("2M", cov.final_leaves[1].saturating_sub(cov.final_thp_leaves), "#e0884b"),
        ("2M (THP decides)", cov.final_thp_leaves, "#f3c39a"),
        ("1G", cov.final_leaves[2], "#6bbf59"),
    ];
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let mut s = String::from("<h2>Mapping levels: leaves present when the cases ended</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"150\" font-family=\"monospace\" font-size=\"12\">\n");
    for (i, (name, n, color)) in bars.iter().enumerate() {
        let y = 10 + i * 32;
        let w = if *n == 0 { 0.0 } else { 420.0 * (*n as f64).ln_1p() / max.ln_1p() };
        let _ = writeln!(s, "<text x=\"4\" y=\"{}\">{name}</text>", y + 16);
        let _ = writeln!(s, "<rect x=\"140\" y=\"{y}\" width=\"{w:.1}\" height=\"22\" fill=\"{color}\"/>");
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{}\">{n}</text>", 146.0 + w, y + 16);
    }
    s.push_str("</svg>\n");
    s
}

pub fn html(cov: &Coverage, title: &str, cases: usize) -> String {
    let ops: Vec<OpKind> = OpKind::ALL.to_vec();
    let rows: Vec<String> = ops.iter().map(|o| o.name().to_string()).collect();
    let mut cols = Vec::new();
    let mut idx = Vec::new();
    for st in SeptState::ALL {
        for l in Level::ALL {
            cols.push(format!("{} {}", st.name(), l.name()));
            idx.push((st as usize, l as usize));
        }
    }
    let sept = |r: usize, c: usize| cov.sept.get(idx[c].0).map(|lv| lv[idx[c].1][ops[r] as usize]).unwrap_or(0);
    let reached =
        (0..rows.len()).flat_map(|r| (0..cols.len()).map(move |c| (r, c))).filter(|&(r, c)| sept(r, c) > 0).count();
    let labels: Vec<&str> = {
        let mut v: Vec<&str> = cov.outcomes.keys().map(|(_, l)| *l).collect();
        v.sort();
        v.dedup();
        v
    };
    let by: BTreeMap<(OpKind, &str), u64> = cov.outcomes.clone();
    let guest_ops: Vec<OpKind> = ops.iter().copied().filter(|o| o.is_guest()).collect();
    let grows: Vec<String> = guest_ops.iter().map(|o| o.name().to_string()).collect();
    let gcols: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>privmem coverage: {title}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 10px;text-align:left}}</style></head><body>\n\
         <h1>privmem coverage: {title}</h1>\n<p>{cases} sequences on the model. S-EPT cells reached: {reached} of {}.</p>\n",
        rows.len() * cols.len()
    );
    s.push_str("<table><tr><th>counter</th><th>value</th></tr>\n");
    for (k, v) in [
        ("huge-leaf splits", cov.splits),
        ("split failures (ENOMEM, interrupted)", cov.split_failures),
        ("promote attempts", cov.promote_attempts),
        ("promote failures", cov.promote_failures),
        ("partial conversions (H2)", cov.partial_conversions),
    ] {
        let _ = writeln!(s, "<tr><td>{k}</td><td>{v}</td></tr>");
    }
    s.push_str("</table>\n");
    s.push_str(&levels_chart(cov));
    s.push_str(&heatmap("S-EPT state × level at the op's address, by op kind (TDX)", &rows, &cols, sept));
    s.push_str(&heatmap("Guest-op outcomes", &grows, &gcols, |r, c| {
        by.get(&(guest_ops[r], labels[c])).copied().unwrap_or(0)
    }));
    s.push_str("</body></html>\n");
    s
}
