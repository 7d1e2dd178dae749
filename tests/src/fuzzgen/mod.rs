//! Structured generators for fuzzing the decoders of client bytes on stable
//! Rust (proptest): Yjs v1 updates built struct by struct (deep `Any`
//! and JSON nesting, edge-case clocks, every content kind, ids that point
//! anywhere), honest updates from real yrs documents, y-websocket frames,
//! awareness updates, JSON envelopes and commit-log segments — plus a
//! byte-level mutator that turns each into many near misses.
//!
//! Deep values are encoded here with loops: the generator must not be the
//! thing that overflows its stack.
//!
//! Case counts: `FUZZ_CASES` (proptest cases per target) and
//! `FUZZ_MUTATIONS` (mutants per case) raise the in-suite defaults.
//!
//! The parts: `values` (`Any` values, deep nesting, JSON text, clocks and
//! client ids), `update` (raw Yjs v1 updates struct by struct),
//! `honest` (real yrs edits), `frame` (y-websocket frames, awareness,
//! envelopes); this file holds the case counts, the tally and the mutator.
//!
//! Determinism: every strategy draws its random values in a fixed order, so
//! a proptest seed always yields the same inputs; keep that order when
//! editing (a regression seed printed by a failure must still reproduce).

mod frame;
mod honest;
mod update;
mod values;

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::test_runner::Config;
use yrs::encoding::write::Write;

pub use frame::*;
pub use honest::*;
pub use update::*;
pub use values::*;

/// A proptest configuration with `FUZZ_CASES` cases (or `default`), no
/// regression files (failures print their input) and a short shrink.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    }
}

/// Mutants derived from each generated input (`FUZZ_MUTATIONS`, or `default`).
pub fn mutations(default: usize) -> usize {
    std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts inputs fed to a target; prints the count when dropped.
pub struct Tally {
    pub name: &'static str,
    pub inputs: AtomicU64,
}

impl Tally {
    pub const fn new(name: &'static str) -> Tally {
        Tally {
            name,
            inputs: AtomicU64::new(0),
        }
    }

    pub fn add(&self, n: u64) {
        self.inputs.fetch_add(n, Ordering::Relaxed);
    }

    pub fn report(&self) -> u64 {
        let n = self.inputs.load(Ordering::Relaxed);
        eprintln!("fuzz target {}: {n} inputs, 0 crashes", self.name);
        n
    }
}

/// xorshift64*, for mutations (seeded by the generated case).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One byte-level near miss of `bytes`: truncated, a byte flipped or
/// replaced by an edge value, bytes inserted, removed or duplicated, or a
/// huge varint spliced in.
pub fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 => out.truncate(at),
            1 if at < out.len() => out[at] ^= 1 << rng.below(8),
            2 if at < out.len() => out[at] = [0x00, 0x7f, 0x80, 0xff, 0x75, 0x76][rng.below(6)],
            3 => out.insert(at, rng.next_u64() as u8),
            4 if at < out.len() => {
                out.remove(at);
            }
            5 => {
                let len = rng.below(16).min(out.len() - at.min(out.len()));
                let piece = out[at..at + len].to_vec();
                let repeat = 1 + rng.below(8);
                for _ in 0..repeat {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            6 => {
                let huge: &[u8] = match rng.below(3) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    1 => &[0x80, 0x80, 0x80, 0x80, 0x08],
                    _ => &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                };
                out.splice(at..at, huge.iter().copied());
            }
            _ => {
                // Nest: splice `0x75 0x01` (a one-element Any array) many times.
                let n = 1 + rng.below(200);
                for _ in 0..n {
                    out.splice(at..at, [0x75, 0x01]);
                }
            }
        }
    }
    out
}

fn var(out: &mut Vec<u8>, v: u64) {
    out.write_var(v);
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.write_string(s);
}
