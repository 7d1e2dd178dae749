//! One simulated Yjs client over a WebSocket: connects, completes the sync
//! handshake, then (while told to) appends small text updates at a set rate
//! and times every update it receives from the others. Shared by the
//! `fanout` and `connections` scenarios.
//!
//! The receive path allocates nothing per message: frames are parsed in the
//! connection's buffer, updates are scanned in place for latency markers,
//! and latencies go into a preallocated HdrHistogram.
//!
//! This file has the shared parts (phases, counters, markers, the fleet of
//! clients and their totals); `client.rs` is one client.

mod client;
mod mirror;
mod scribe;

pub(crate) use mirror::{FirstChar, Mirror};
pub(crate) use scribe::Workload;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};

use crate::report::{latency_histogram, merge_into};
use crate::target::Target;
use crate::yjs::Protocol;

/// What all clients of a run are told to do; changed by the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// Connected and synced; wait.
    Hold,
    /// Senders send at `rate` per second from `start` (once if `once`).
    Send {
        start: Instant,
        rate: f64,
        once: bool,
    },
    /// Stop sending, keep receiving.
    Drain,
    /// Close the connection and return the results.
    Stop,
}

/// Counters shared by all clients of a run (for progress and draining).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub synced: AtomicUsize,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicUsize,
}

impl Shared {
    /// A counter for the progress bar mirroring `delivered`.
    pub(crate) fn clone_delivered(self: &Arc<Self>) -> Arc<AtomicU64> {
        let mirror = Arc::new(AtomicU64::new(0));
        let (me, m) = (Arc::downgrade(self), mirror.clone());
        tokio::spawn(async move {
            // Ends when the run's counters are dropped.
            while let Some(s) = me.upgrade() {
                m.store(s.delivered.load(Ordering::Relaxed), Ordering::Relaxed);
                drop(s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        mirror
    }
}

/// Fixed facts about one client.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Index among all clients of the run (goes into markers; < 2^24).
    pub index: usize,
    pub protocol: Protocol,
    pub doc: String,
    pub path: String,
    /// Whether this client sends when the phase says so.
    pub sender: bool,
    /// Extra text bytes per update.
    pub pad: usize,
    /// Where a sender's updates insert.
    pub workload: Workload,
    /// `prepend`: the document's first character, kept by its `Mirror`.
    pub first: Option<FirstChar>,
    pub client_id: u64,
    /// Token for Hocuspocus's auth message.
    pub token: String,
}

/// What one client measured.
pub(crate) struct Stats {
    /// Time from starting to connect until the server's step 2 arrived.
    pub connect: Option<Duration>,
    /// End-to-end latency of updates from other clients, in µs (allocated
    /// at the first delivery, so idle clients stay small).
    pub latency: Option<Histogram<u32>>,
    pub sent: u64,
    pub delivered: u64,
    /// Our own updates sent back to us.
    pub echoes: u64,
    /// Send slots skipped because this client fell too far behind.
    pub skipped: u64,
    /// Step 2 answers received after the initial sync.
    pub resyncs: u64,
    pub error: Option<String>,
}

/// Microseconds since the run's origin, with the sender in the top bits.
const SENDER_SHIFT: u32 = 40;
const MICROS_MASK: u64 = (1 << SENDER_SHIFT) - 1;

pub(crate) fn marker_value(sender: usize, micros: u64) -> u64 {
    ((sender as u64 & 0xff_ffff) << SENDER_SHIFT) | (micros & MICROS_MASK)
}

pub(crate) fn split_marker(v: u64) -> (usize, u64) {
    ((v >> SENDER_SHIFT) as usize, v & MICROS_MASK)
}

/// All clients of one run, driven together through [`Phase`]s.
pub(crate) struct Fleet {
    phase: watch::Sender<Phase>,
    pub shared: Arc<Shared>,
    /// Each client's task; it ends after `Phase::Stop` or a failure.
    tasks: Vec<(Spec, tokio::task::JoinHandle<Stats>)>,
}

impl Fleet {
    /// Spawns one task per spec; at most `concurrency` connect at once.
    pub(crate) fn spawn(
        specs: Vec<Spec>,
        target: &Target,
        origin: Instant,
        concurrency: usize,
    ) -> Fleet {
        let (phase, rx) = watch::channel(Phase::Hold);
        let shared = Arc::new(Shared::default());
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let tasks = specs
            .into_iter()
            .map(|spec| {
                let task = tokio::spawn(client::run(
                    spec.clone(),
                    target.clone(),
                    origin,
                    rx.clone(),
                    shared.clone(),
                    gate.clone(),
                ));
                (spec, task)
            })
            .collect();
        Fleet {
            phase,
            shared,
            tasks,
        }
    }

    /// Waits until every client has synced or failed, or `timeout` passes.
    /// Returns the number synced.
    pub(crate) async fn wait_synced(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let synced = self.shared.synced.load(Ordering::Relaxed);
            let failed = self.shared.failed.load(Ordering::Relaxed);
            if synced + failed >= self.tasks.len() || Instant::now() >= deadline {
                return synced;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn set(&self, phase: Phase) {
        // Receivers live in the tasks; if all have ended there is nobody to tell.
        let _ = self.phase.send(phase);
    }

    /// Waits until `delivered >= want()` or `timeout`; returns the time waited.
    pub(crate) async fn wait_delivered(
        &self,
        want: impl Fn(&Shared) -> u64,
        timeout: Duration,
    ) -> Duration {
        let t0 = Instant::now();
        while t0.elapsed() < timeout
            && self.shared.delivered.load(Ordering::Relaxed) < want(&self.shared)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t0.elapsed()
    }

    /// Tells every client to stop and collects their results.
    pub(crate) async fn finish(self) -> Vec<(Spec, Stats)> {
        self.set(Phase::Stop);
        let mut out = Vec::with_capacity(self.tasks.len());
        for (spec, task) in self.tasks {
            match task.await {
                Ok(stats) => out.push((spec, stats)),
                Err(e) => {
                    let mut stats = empty_stats();
                    stats.error = Some(format!("client task failed: {e}"));
                    out.push((spec, stats));
                }
            }
        }
        out
    }
}

fn empty_stats() -> Stats {
    Stats {
        connect: None,
        latency: None,
        sent: 0,
        delivered: 0,
        echoes: 0,
        skipped: 0,
        resyncs: 0,
        error: None,
    }
}

/// Totals over all clients.
pub(crate) struct Totals {
    pub connect: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub connected: usize,
    pub sent: u64,
    pub delivered: u64,
    pub echoes: u64,
    pub skipped: u64,
    pub resyncs: u64,
    /// Deliveries expected: each update to every other synced client of its document.
    pub expected: u64,
    pub errors: Vec<String>,
}

pub(crate) fn totals(results: &[(Spec, Stats)]) -> Totals {
    let mut t = Totals {
        connect: latency_histogram(),
        latency: latency_histogram(),
        connected: 0,
        sent: 0,
        delivered: 0,
        echoes: 0,
        skipped: 0,
        resyncs: 0,
        expected: 0,
        errors: Vec::new(),
    };
    let mut per_doc: std::collections::HashMap<&str, (u64, u64)> = std::collections::HashMap::new();
    for (spec, s) in results {
        if let Some(c) = s.connect {
            t.connected += 1;
            t.connect.saturating_record(c.as_micros() as u64);
            per_doc.entry(spec.doc.as_str()).or_default().0 += 1;
        }
        per_doc.entry(spec.doc.as_str()).or_default().1 += s.sent;
        if let Some(h) = &s.latency {
            merge_into(&mut t.latency, h);
        }
        t.sent += s.sent;
        t.delivered += s.delivered;
        t.echoes += s.echoes;
        t.skipped += s.skipped;
        t.resyncs += s.resyncs;
        if let Some(e) = &s.error {
            t.errors.push(e.clone());
        }
    }
    t.expected = per_doc
        .values()
        .map(|(conns, sent)| sent * conns.saturating_sub(1))
        .sum();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_values_carry_sender_and_time() {
        let v = marker_value(12345, 987_654_321);
        assert_eq!(split_marker(v), (12345, 987_654_321));
        let v = marker_value(usize::MAX, u64::MAX);
        let (s, t) = split_marker(v);
        assert_eq!(s, 0xff_ffff);
        assert_eq!(t, MICROS_MASK);
    }
}
