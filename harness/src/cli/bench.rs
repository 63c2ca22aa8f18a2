//! `privmem bench`: model speed on realistic mixes, and what a huge range op costs next to a
//! small one. Ratios are measured in the same run.

use super::Args;
use crate::campaign::{Campaign, CampaignConfig};
use crate::oracle::run_model;
use crate::seq::gen::GenConfig;
use crate::seq::text::parse;
use crate::seq::{Sequence, VmType};
use std::time::Instant;

/// Ops per second over `cases`, run repeatedly for at least `secs`.
fn ops_per_sec(cases: &[Sequence], secs: f64) -> f64 {
    let (mut ops, start) = (0u64, Instant::now());
    while start.elapsed().as_secs_f64() < secs {
        for s in cases {
            let t = run_model(s);
            ops += t.outcomes.len() as u64;
        }
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn mix(vm: Option<VmType>, seed: u64, n: usize) -> Vec<Sequence> {
    let mut c = Campaign::new(CampaignConfig {
        gen: GenConfig {
            vm,
            variant: None,
            max_ops: 48,
        },
        against: None,
        seed,
    });
    (0..n).map(|_| c.next_case()).collect()
}

/// A sequence that converts a `size` range back and forth on a slot with some pages mapped.
fn range_case(size: &str) -> Sequence {
    let src = format!(
        "vm sw-protected\ngmem g size=64G\nslot 0 gpa=0x100000000 size=64G gmem=g offset=0\n\
         private 0x100000000 64G\nvcpu0 touch 0x100000000\nvcpu0 touch 0x900000000\nvcpu0 touch 0x1000000000\n{}",
        (0..32).map(|i| format!("{} 0x100000000 {size}\n", if i % 2 == 0 { "shared" } else { "private" })).collect::<String>()
    );
    parse("bench", &src).expect("bench sequence parses")
}

/// Seconds per run of the 32 range ops (less the same run without them).
fn range_cost(size: &str) -> f64 {
    let s = range_case(size);
    let mut base = s.clone();
    base.steps.truncate(4);
    let time = |s: &Sequence| {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed().as_secs_f64() < 0.3 {
            run_model(s);
            n += 1;
        }
        start.elapsed().as_secs_f64() / n as f64
    };
    ((time(&s) - time(&base)) / 32.0).max(1e-9)
}

pub fn run(argv: &[String]) -> Result<i32, String> {
    let a = Args::parse(argv, &["backend"], &["json"])?;
    if a.get("backend").is_some_and(|b| b != "model") {
        return Err("bench --backend: only the model backend is built so far".into());
    }
    let realistic = mix(None, 1, 400);
    let tdx = mix(Some(VmType::Tdx), 2, 400);
    let model = ops_per_sec(&realistic, 1.0);
    let model_tdx = ops_per_sec(&tdx, 1.0);
    let big = range_cost("64G");
    let small = range_cost("2M");
    let ratio = big / small;
    if a.flag("json") {
        println!(
            "{}",
            serde_json::json!({
                "model_ops_per_sec": model,
                "model_tdx_ops_per_sec": model_tdx,
                "range_cost_ratio": ratio,
                "range_op_64g_ns": big * 1e9,
                "range_op_2m_ns": small * 1e9,
            })
        );
    } else {
        println!("model, realistic mix (default/sw-protected/tdx): {model:>12.0} ops/s");
        println!("model, TDX mix:                                   {model_tdx:>12.0} ops/s");
        println!(
            "range op 64 GiB: {:.0} ns, 2 MiB: {:.0} ns, ratio {ratio:.2}",
            big * 1e9,
            small * 1e9
        );
    }
    Ok(0)
}
