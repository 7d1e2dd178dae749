//! Server-wide counters and histograms, rendered in the Prometheus text format
//! at `GET /metrics`. Lock-free: every field is an atomic updated in place.
//! This module does not know about HTTP; the router calls [`Metrics::render`].

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A cumulative latency histogram with fixed buckets.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS_SECONDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Error kinds counted separately (the `kind` label of `roost_errors_total`).
pub const ERROR_KINDS: [&str; 8] = [
    "alarm_failed",
    "commit_failed",
    "handler_error",
    "constructor_failed",
    "overloaded",
    "bad_request",
    "log_failed",
    "file_commit_failed",
];

pub struct Metrics {
    pub live_objects: AtomicI64,
    pub events: AtomicU64,
    pub commits: AtomicU64,
    pub committed_events: AtomicU64,
    pub evictions: AtomicU64,
    /// Idle objects' files whose WAL the tidier folded in (`storage::tidy`).
    pub tidied_files: AtomicU64,
    pub constructions: AtomicU64,
    pub log_groups: AtomicU64,
    pub log_records: AtomicU64,
    pub frames_in: AtomicU64,
    pub auto_responses: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub open_sockets: AtomicI64,
    pub alarms_dispatched: AtomicU64,
    pub awareness_relays: AtomicU64,
    pub alarms_fired: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    pub commit_latency: Histogram,
    pub log_fsync_latency: Histogram,
    pub alarm_lateness: Histogram,
    pub wal_checkpoint: Histogram,
    pub wal_checkpoint_stall: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            live_objects: AtomicI64::new(0),
            events: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            committed_events: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            tidied_files: AtomicU64::new(0),
            constructions: AtomicU64::new(0),
            log_groups: AtomicU64::new(0),
            log_records: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            auto_responses: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            open_sockets: AtomicI64::new(0),
            alarms_dispatched: AtomicU64::new(0),
            awareness_relays: AtomicU64::new(0),
            alarms_fired: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            commit_latency: Histogram::new(),
            log_fsync_latency: Histogram::new(),
            alarm_lateness: Histogram::new(),
            wal_checkpoint: Histogram::new(),
            wal_checkpoint_stall: Histogram::new(),
        }
    }
}

impl Metrics {
    pub fn error(&self, kind: &str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    pub fn error_count(&self, kind: &str) -> u64 {
        ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.errors[i].load(Relaxed))
    }

    pub(crate) fn log_fsync(&self, d: Duration, records: usize) {
        self.log_fsync_latency.observe(d);
        self.log_groups.fetch_add(1, Relaxed);
        self.log_records.fetch_add(records as u64, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "roost_live_objects",
            "Objects with state in memory.",
            self.live_objects.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_events_total",
            "Events handled by objects.",
            self.events.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_commits_total",
            "Batches committed.",
            self.commits.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_committed_events_total",
            "Events in committed batches (divide by roost_commits_total for events per commit).",
            self.committed_events.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_evictions_total",
            "Objects evicted from memory after idling.",
            self.evictions.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_tidied_files_total",
            "Idle objects' files whose WAL was folded into the database and removed.",
            self.tidied_files.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_object_starts_total",
            "Object constructor runs (creations and wake-ups from hibernation or eviction).",
            self.constructions.load(Relaxed),
        );
        gauge(
            &mut out,
            "roost_open_sockets",
            "Open WebSockets.",
            self.open_sockets.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_awareness_relays_total",
            "Yjs awareness messages relayed by the socket layer (the document was not woken).",
            self.awareness_relays.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_alarms_dispatched_total",
            "Due alarm index entries delivered to objects.",
            self.alarms_dispatched.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_alarms_fired_total",
            "Alarm handlers that completed successfully.",
            self.alarms_fired.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_socket_frames_in_total",
            "Frames received on object sockets.",
            self.frames_in.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_socket_auto_responses_total",
            "Frames answered by the socket layer without waking the object.",
            self.auto_responses.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_socket_slow_consumers_total",
            "Sockets disconnected because their outbound queue overflowed.",
            self.slow_consumers.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_log_fsyncs_total",
            "Commit log group fsyncs.",
            self.log_groups.load(Relaxed),
        );
        counter(
            &mut out,
            "roost_log_records_total",
            "Batches written to the commit log.",
            self.log_records.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP roost_errors_total Errors by kind.\n# TYPE roost_errors_total counter"
        );
        for (i, kind) in ERROR_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "roost_errors_total{{kind=\"{kind}\"}} {}",
                self.errors[i].load(Relaxed)
            );
        }
        self.commit_latency.render(
            &mut out,
            "roost_commit_seconds",
            "Time from a batch's commit to its outputs' release (includes the shared fsync).",
        );
        self.log_fsync_latency.render(
            &mut out,
            "roost_log_fsync_seconds",
            "Commit log write+fdatasync time per group.",
        );
        self.alarm_lateness.render(
            &mut out,
            "roost_alarm_lateness_seconds",
            "How long after its scheduled time each alarm handler started.",
        );
        self.wal_checkpoint.render(
            &mut out,
            "roost_wal_checkpoint_seconds",
            "A background WAL checkpoint (copy into the database file and fsync, on a second connection); the object keeps running.",
        );
        self.wal_checkpoint_stall.render(
            &mut out,
            "roost_wal_checkpoint_stall_seconds",
            "A WAL checkpoint on the object's own connection (the remainder after a background one, or at the hard limit); the object waits meanwhile.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.events.fetch_add(3, Relaxed);
        m.error("overloaded");
        m.commit_latency.observe(Duration::from_micros(300));
        let text = m.render();
        assert!(text.contains("roost_events_total 3\n"));
        assert!(text.contains("roost_errors_total{kind=\"overloaded\"} 1\n"));
        assert!(text.contains("roost_commit_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("roost_commit_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("roost_commit_seconds_count 1\n"));
    }
}
