//! Server-wide counters and histograms, exposed in the Prometheus text format
//! at `GET /metrics`. Lock-free: every field is an atomic updated in place,
//! read only when `/metrics` is scraped. [`exposition`] names and describes
//! each one (the `prometheus-client` crate writes the text); [`process`]
//! adds the `process_*` metrics. This module does not know about HTTP; the
//! router calls [`Metrics::render`].

mod exposition;
mod process;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
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

    /// Records one observation of `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS_SECONDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

/// Error kinds counted separately (the `kind` label of `roost_errors_total`).
pub(crate) const ERROR_KINDS: [&str; 8] = [
    "alarm_failed",
    "commit_failed",
    "handler_error",
    "constructor_failed",
    "overloaded",
    "bad_request",
    "log_failed",
    "file_commit_failed",
];

/// The server's counters, gauges and histograms, shared by every object and
/// rendered at `GET /metrics`.
pub struct Metrics {
    /// Objects with state in memory (gauge `roost_live_objects`).
    pub live_objects: AtomicI64,
    /// Objects the server holds, counted against `--max-objects` (gauge
    /// `roost_objects`).
    pub objects: AtomicI64,
    /// Events handled by objects (`roost_events_total`).
    pub events: AtomicU64,
    /// Batches committed (`roost_commits_total`).
    pub commits: AtomicU64,
    /// Events in committed batches (`roost_committed_events_total`).
    pub committed_events: AtomicU64,
    /// Objects evicted from memory after idling (`roost_evictions_total`).
    pub evictions: AtomicU64,
    /// Idle objects' files whose WAL the tidier folded in (`storage::tidy`).
    pub tidied_files: AtomicU64,
    /// Objects never written whose file and catalog row were removed when
    /// they stopped (`roost_unwritten_objects_removed_total`).
    pub unwritten_removed: AtomicU64,
    /// Object constructor runs, creations and wake-ups alike
    /// (`roost_object_starts_total`).
    pub constructions: AtomicU64,
    /// Commit log group fsyncs (`roost_log_fsyncs_total`).
    pub log_groups: AtomicU64,
    /// Batches written to the commit log (`roost_log_records_total`).
    pub log_records: AtomicU64,
    /// Frames received on object sockets (`roost_socket_frames_in_total`).
    pub frames_in: AtomicU64,
    /// Frames answered by the socket layer without waking the object
    /// (`roost_socket_auto_responses_total`).
    pub auto_responses: AtomicU64,
    /// Sockets disconnected because their outbound queue overflowed
    /// (`roost_socket_slow_consumers_total`).
    pub slow_consumers: AtomicU64,
    /// Open WebSockets (gauge `roost_open_sockets`).
    pub open_sockets: AtomicI64,
    /// Due alarm index entries delivered to objects
    /// (`roost_alarms_dispatched_total`).
    pub alarms_dispatched: AtomicU64,
    /// Yjs awareness messages relayed by the socket layer without waking the
    /// document (`roost_awareness_relays_total`).
    pub awareness_relays: AtomicU64,
    /// Alarm handlers that completed successfully (`roost_alarms_fired_total`).
    pub alarms_fired: AtomicU64,
    /// Cluster mode: requests and sockets sent on to the owner node.
    pub cluster_forwarded: AtomicU64,
    /// Cluster mode: objects this node took over.
    pub cluster_takeovers: AtomicU64,
    /// Relayed object sockets resumed on this node after their owner died.
    pub cluster_sockets_resumed: AtomicU64,
    /// Cluster mode: appends refused because another node took the object.
    pub cluster_fenced: AtomicU64,
    /// Cluster mode: records the replicated log acknowledged.
    pub cluster_appended: AtomicU64,
    /// Cluster mode: objects handed over on shutdown.
    pub cluster_released: AtomicU64,
    /// Change feed: events the index took (`roost_feed_indexed_total`).
    pub feed_indexed: AtomicU64,
    /// Change feed: index writes that failed and wait for a retry.
    pub feed_index_failures: AtomicU64,
    /// Change feed: the newest indexed `seq`.
    pub feed_newest_seq: AtomicI64,
    /// Webhook: events the receiver acknowledged (2xx).
    pub webhook_delivered: AtomicU64,
    /// Webhook: attempts that failed (retried with backoff).
    pub webhook_failures: AtomicU64,
    /// Webhook: the `seq` delivered through (the newest while caught up).
    pub webhook_cursor: AtomicI64,
    /// Webhook: gaps retention made before delivery (events lost to it).
    pub webhook_gaps: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    /// Time from a batch's commit to its outputs' release, shared fsync
    /// included (`roost_commit_seconds`).
    pub commit_latency: Histogram,
    /// Commit log write and fdatasync time per group (`roost_log_fsync_seconds`).
    pub log_fsync_latency: Histogram,
    /// How long after its scheduled time each alarm handler started
    /// (`roost_alarm_lateness_seconds`).
    pub alarm_lateness: Histogram,
    /// Background WAL checkpoints, run while the object keeps going
    /// (`roost_wal_checkpoint_seconds`).
    pub wal_checkpoint: Histogram,
    /// WAL checkpoints on the object's own connection, which the object waits
    /// for (`roost_wal_checkpoint_stall_seconds`).
    pub wal_checkpoint_stall: Histogram,
    /// Cluster mode: from an append's publish to JetStream's acknowledgement
    /// (quorum, fsynced), retries included (`roost_cluster_append_seconds`).
    pub cluster_append_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            live_objects: AtomicI64::new(0),
            objects: AtomicI64::new(0),
            events: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            committed_events: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            tidied_files: AtomicU64::new(0),
            unwritten_removed: AtomicU64::new(0),
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
            cluster_forwarded: AtomicU64::new(0),
            cluster_takeovers: AtomicU64::new(0),
            cluster_sockets_resumed: AtomicU64::new(0),
            cluster_fenced: AtomicU64::new(0),
            cluster_appended: AtomicU64::new(0),
            cluster_released: AtomicU64::new(0),
            feed_indexed: AtomicU64::new(0),
            feed_index_failures: AtomicU64::new(0),
            feed_newest_seq: AtomicI64::new(0),
            webhook_delivered: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            webhook_cursor: AtomicI64::new(0),
            webhook_gaps: AtomicU64::new(0),
            cluster_append_latency: Histogram::new(),
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
    /// Counts one error of `kind` in `roost_errors_total{kind}`; a kind not in
    /// the fixed list is ignored.
    pub fn error(&self, kind: &str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Errors of `kind` counted so far (0 for a kind not in the fixed list).
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

    /// The Prometheus text exposition (format 0.0.4) of every metric:
    /// Roost's (read from the atomics at this moment), the process's and the
    /// build's.
    pub fn render(self: &Arc<Self>) -> String {
        exposition::render(self)
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Parses the text format: family name → (type, help), and every
    /// sample's `name{labels}` → value. Panics on a malformed line, a
    /// sample before its family's `# TYPE`, or a family described twice.
    #[allow(clippy::type_complexity)]
    fn parse(text: &str) -> (HashMap<String, (String, String)>, HashMap<String, f64>) {
        let (mut families, mut samples) = (HashMap::new(), HashMap::new());
        let mut help = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').expect("help text");
                help.insert(name.to_owned(), text.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                let described = (kind.to_owned(), help[name].clone());
                assert!(
                    families.insert(name.to_owned(), described).is_none(),
                    "{name} twice"
                );
            } else {
                let (series, value) = line.rsplit_once(' ').expect("sample");
                let name = series.split('{').next().expect("name");
                let family = [name, ""]
                    .iter()
                    .chain(&["_bucket", "_sum", "_count"])
                    .find_map(|suffix| {
                        let base = name.strip_suffix(suffix)?;
                        families.contains_key(base).then_some(base)
                    });
                assert!(family.is_some(), "{line}: no # TYPE before it");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
                samples.insert(series.to_owned(), value);
            }
        }
        (families, samples)
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Arc::new(Metrics::default());
        m.events.fetch_add(3, Relaxed);
        m.live_objects.fetch_add(2, Relaxed);
        m.error("overloaded");
        m.commit_latency.observe(Duration::from_micros(300));
        m.commit_latency.observe(Duration::from_secs(20));
        let text = m.render();
        assert!(text.contains("roost_events_total 3\n"));
        assert!(text.contains("roost_errors_total{kind=\"overloaded\"} 1\n"));
        assert!(text.contains("roost_commit_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("roost_commit_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("roost_commit_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("roost_commit_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("roost_commit_seconds_count 2\n"));
        let (families, samples) = parse(&text);
        let described = |name: &str| families.get(name).map(|(kind, _)| kind.as_str());
        assert_eq!(described("roost_live_objects"), Some("gauge"));
        assert_eq!(described("roost_events_total"), Some("counter"));
        assert_eq!(described("roost_errors_total"), Some("counter"));
        assert_eq!(described("roost_commit_seconds"), Some("histogram"));
        assert_eq!(described("roost_build_info"), Some("gauge"));
        assert_eq!(
            families["roost_events_total"].1,
            "Events handled by objects."
        );
        assert_eq!(samples["roost_live_objects"], 2.0);
        assert_eq!(samples["roost_commit_seconds_sum"], 20.0003);
        let version = format!(
            "roost_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(samples[&version], 1.0);
        assert_eq!(
            families.len(),
            exposition::FAMILY_COUNT + 1 + process_families(&families)
        );
    }

    /// The `process_*` families present (all of them on Linux).
    fn process_families(families: &HashMap<String, (String, String)>) -> usize {
        let process: Vec<_> = families
            .keys()
            .filter(|n| n.starts_with("process_"))
            .collect();
        if cfg!(target_os = "linux") {
            for (name, kind) in [
                ("process_cpu_seconds_total", "counter"),
                ("process_resident_memory_bytes", "gauge"),
                ("process_virtual_memory_bytes", "gauge"),
                ("process_open_fds", "gauge"),
                ("process_max_fds", "gauge"),
                ("process_start_time_seconds", "gauge"),
                ("process_threads", "gauge"),
            ] {
                assert_eq!(
                    families.get(name).map(|f| f.0.as_str()),
                    Some(kind),
                    "{name}"
                );
            }
            assert_eq!(process.len(), 7, "{process:?}");
        }
        process.len()
    }
}
