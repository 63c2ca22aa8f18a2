//! The campaign's randomness and its structural mutator: one place, used by the in-process
//! campaigns and by the fuzz engines' custom mutator (`fuzzing.rs`).

use crate::seq::{Op, Sequence, Variant};

/// SplitMix64: small, fast, and the same stream on every machine for a given seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// One structural edit of a sequence.
pub fn mutate_sequence(s: &mut Sequence, rng: &mut Rng) {
    let n = s.steps.len();
    let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    match rng.next_u64() % 7 {
        6 if n > 1 => {
            // Run a step together with the one before it, or apart.
            let i = 1 + pick(rng, n - 1);
            s.steps[i].together ^= true;
            crate::seq::legal::normalize_groups(s);
        }
        0 if n > 0 => {
            s.steps.remove(pick(rng, n));
        }
        1 if n > 0 => {
            let i = pick(rng, n);
            let st = s.steps[i].clone();
            s.steps.insert(pick(rng, n + 1), st);
        }
        2 if n > 1 => {
            let (i, j) = (pick(rng, n), pick(rng, n));
            s.steps.swap(i, j);
        }
        3 if n > 0 => {
            let i = pick(rng, n);
            let delta = match rng.next_u64() % 4 {
                0 => 4096i64,
                1 => -4096,
                2 => 2 << 20,
                _ => -(2 << 20),
            };
            nudge(&mut s.steps[i].op, delta);
        }
        4 if n > 0 => {
            let i = pick(rng, n);
            if let Op::Accept { level, .. } = &mut s.steps[i].op {
                *level = crate::seq::Level::ALL[(rng.next_u64() % 2) as usize];
            }
        }
        _ => {
            s.header.variant = Some(Variant::ALL[(rng.next_u64() % Variant::ALL.len() as u64) as usize]);
        }
    }
}

fn nudge(op: &mut Op, delta: i64) {
    if let Some(a) = op.addr_mut() {
        *a = a.wrapping_add_signed(delta);
    }
}
