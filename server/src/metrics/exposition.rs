//! What `/metrics` shows: each of [`Metrics`]' atomics under its Prometheus
//! name, type and help text ([`FAMILIES`], in the order they are written),
//! plus the process's metrics and `roost_build_info`. The atomics stay the
//! only state: a collector reads them at scrape time, so counting costs a
//! `fetch_add` and nothing else. `prometheus-client` writes the text
//! (format 0.0.4).
//!
//! A new metric: a field in [`Metrics`], bumped where it happens, and a row
//! here.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Histogram, Metrics, BUCKETS_SECONDS, ERROR_KINDS};

/// Where a family's value comes from.
enum Source {
    Counter(fn(&Metrics) -> &AtomicU64),
    Gauge(fn(&Metrics) -> &AtomicI64),
    /// `roost_errors_total{kind}`: one sample per [`ERROR_KINDS`] entry.
    Errors,
    Histogram(fn(&Metrics) -> &Histogram),
}

/// One metric as scraped: its full name (counters with `_total`), help text
/// and source.
struct Family {
    name: &'static str,
    help: &'static str,
    source: Source,
}

const fn counter(
    name: &'static str,
    help: &'static str,
    get: fn(&Metrics) -> &AtomicU64,
) -> Family {
    Family {
        name,
        help,
        source: Source::Counter(get),
    }
}

const fn gauge(name: &'static str, help: &'static str, get: fn(&Metrics) -> &AtomicI64) -> Family {
    Family {
        name,
        help,
        source: Source::Gauge(get),
    }
}

const fn histogram(
    name: &'static str,
    help: &'static str,
    get: fn(&Metrics) -> &Histogram,
) -> Family {
    Family {
        name,
        help,
        source: Source::Histogram(get),
    }
}

/// How many families `FAMILIES` describes (the test of the rendering counts them).
#[cfg(test)]
pub(super) const FAMILY_COUNT: usize = FAMILIES.len();

const FAMILIES: [Family; 38] = [
    counter(
        "roost_cluster_forwarded_total",
        "Cluster mode: requests and sockets sent on to the object's owner node.",
        |m| &m.cluster_forwarded,
    ),
    counter(
        "roost_cluster_takeovers_total",
        "Cluster mode: objects this node took over (fenced ownership appends that succeeded).",
        |m| &m.cluster_takeovers,
    ),
    counter(
        "roost_cluster_sockets_resumed_total",
        "Cluster mode: relayed object sockets this node resumed after their owner died.",
        |m| &m.cluster_sockets_resumed,
    ),
    counter(
        "roost_cluster_fenced_total",
        "Cluster mode: appends refused because another node had taken the object.",
        |m| &m.cluster_fenced,
    ),
    counter(
        "roost_cluster_appended_total",
        "Cluster mode: records acknowledged by the replicated log.",
        |m| &m.cluster_appended,
    ),
    counter(
        "roost_cluster_released_total",
        "Cluster mode: objects handed over at shutdown.",
        |m| &m.cluster_released,
    ),
    histogram(
        "roost_cluster_append_seconds",
        "Cluster mode: publish to JetStream acknowledgement (quorum, fsynced) per append.",
        |m| &m.cluster_append_latency,
    ),
    gauge("roost_live_objects", "Objects with state in memory.", |m| &m.live_objects),
    gauge(
        "roost_objects",
        "Objects the server holds, counted against --max-objects: those written at least once, and those running now.",
        |m| &m.objects,
    ),
    counter("roost_events_total", "Events handled by objects.", |m| &m.events),
    counter("roost_commits_total", "Batches committed.", |m| &m.commits),
    counter(
        "roost_committed_events_total",
        "Events in committed batches (divide by roost_commits_total for events per commit).",
        |m| &m.committed_events,
    ),
    counter(
        "roost_evictions_total",
        "Objects evicted from memory after idling.",
        |m| &m.evictions,
    ),
    counter(
        "roost_unwritten_objects_removed_total",
        "Objects never written (only read) whose file and catalog row were removed when they stopped.",
        |m| &m.unwritten_removed,
    ),
    counter(
        "roost_tidied_files_total",
        "Idle objects' files whose WAL was folded into the database and removed.",
        |m| &m.tidied_files,
    ),
    counter(
        "roost_object_starts_total",
        "Object constructor runs (creations and wake-ups from hibernation or eviction).",
        |m| &m.constructions,
    ),
    gauge("roost_open_sockets", "Open WebSockets.", |m| &m.open_sockets),
    counter(
        "roost_awareness_relays_total",
        "Yjs awareness messages relayed by the socket layer (the document was not woken).",
        |m| &m.awareness_relays,
    ),
    counter(
        "roost_alarms_dispatched_total",
        "Due alarm index entries delivered to objects.",
        |m| &m.alarms_dispatched,
    ),
    counter(
        "roost_alarms_fired_total",
        "Alarm handlers that completed successfully.",
        |m| &m.alarms_fired,
    ),
    counter(
        "roost_socket_frames_in_total",
        "Frames received on object sockets.",
        |m| &m.frames_in,
    ),
    counter(
        "roost_socket_auto_responses_total",
        "Frames answered by the socket layer without waking the object.",
        |m| &m.auto_responses,
    ),
    counter(
        "roost_socket_slow_consumers_total",
        "Sockets disconnected because their outbound queue overflowed.",
        |m| &m.slow_consumers,
    ),
    counter("roost_log_fsyncs_total", "Commit log group fsyncs.", |m| &m.log_groups),
    counter(
        "roost_feed_indexed_total",
        "Change feed events the index took.",
        |m| &m.feed_indexed,
    ),
    counter(
        "roost_feed_index_failures_total",
        "Change feed index writes that failed (their events are retried).",
        |m| &m.feed_index_failures,
    ),
    gauge(
        "roost_feed_newest_seq",
        "The newest change feed seq indexed.",
        |m| &m.feed_newest_seq,
    ),
    counter(
        "roost_webhook_delivered_total",
        "Change feed events the webhook receiver acknowledged.",
        |m| &m.webhook_delivered,
    ),
    counter(
        "roost_webhook_failures_total",
        "Webhook deliveries that failed and are retried.",
        |m| &m.webhook_failures,
    ),
    gauge(
        "roost_webhook_cursor_seq",
        "The change feed seq the webhook delivered through (roost_feed_newest_seq minus this: how far behind it is).",
        |m| &m.webhook_cursor,
    ),
    counter(
        "roost_webhook_gaps_total",
        "Times --feed-retention dropped events before the webhook delivered them.",
        |m| &m.webhook_gaps,
    ),
    counter(
        "roost_log_records_total",
        "Batches written to the commit log.",
        |m| &m.log_records,
    ),
    Family {
        name: "roost_errors_total",
        help: "Errors by kind.",
        source: Source::Errors,
    },
    histogram(
        "roost_commit_seconds",
        "Time from a batch's commit to its outputs' release (includes the shared fsync).",
        |m| &m.commit_latency,
    ),
    histogram(
        "roost_log_fsync_seconds",
        "Commit log write+fdatasync time per group.",
        |m| &m.log_fsync_latency,
    ),
    histogram(
        "roost_alarm_lateness_seconds",
        "How long after its scheduled time each alarm handler started.",
        |m| &m.alarm_lateness,
    ),
    histogram(
        "roost_wal_checkpoint_seconds",
        "A background WAL checkpoint (copy into the database file and fsync, on a second connection); the object keeps running.",
        |m| &m.wal_checkpoint,
    ),
    histogram(
        "roost_wal_checkpoint_stall_seconds",
        "A WAL checkpoint on the object's own connection (the remainder after a background one, or at the hard limit); the object waits meanwhile.",
        |m| &m.wal_checkpoint_stall,
    ),
];

impl Family {
    fn encode(&self, m: &Metrics, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let (name, metric_type) = match self.source {
            // The encoder appends `_total` to a counter's name.
            Source::Counter(_) | Source::Errors => (
                self.name.strip_suffix("_total").unwrap_or(self.name),
                MetricType::Counter,
            ),
            Source::Gauge(_) => (self.name, MetricType::Gauge),
            Source::Histogram(_) => (self.name, MetricType::Histogram),
        };
        let mut metric = encoder.encode_descriptor(name, self.help, None, metric_type)?;
        match self.source {
            Source::Counter(get) => ConstCounter::new(get(m).load(Relaxed)).encode(metric),
            Source::Gauge(get) => ConstGauge::new(get(m).load(Relaxed)).encode(metric),
            Source::Histogram(get) => get(m).encode(metric),
            Source::Errors => {
                for (kind, count) in ERROR_KINDS.iter().zip(&m.errors) {
                    let labels = [("kind", *kind)];
                    ConstCounter::new(count.load(Relaxed))
                        .encode(metric.encode_family(&labels)?)?;
                }
                Ok(())
            }
        }
    }
}

impl Histogram {
    /// Its buckets (each bucket's own count: the encoder accumulates), sum
    /// and count; observations past the last bucket count in `+Inf` only.
    fn encode(&self, mut metric: MetricEncoder<'_>) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = BUCKETS_SECONDS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| (*bound, n.load(Relaxed)))
            .collect();
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        metric.encode_histogram::<NoLabelSet>(sum, self.count.load(Relaxed), &buckets, None)
    }
}

/// Reads [`Metrics`] on each scrape.
struct RoostCollector(Arc<Metrics>);

impl fmt::Debug for RoostCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoostCollector")
    }
}

impl Collector for RoostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        FAMILIES
            .iter()
            .try_for_each(|family| family.encode(&self.0, &mut encoder))
    }
}

/// The registry one scrape writes: Roost's metrics, `roost_build_info`
/// and the process's.
fn registry(metrics: &Arc<Metrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RoostCollector(metrics.clone())));
    registry.register(
        "roost_build",
        // The registry ends help texts with a period.
        "The running Roost's version (always 1)",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(super::process::ProcessCollector));
    registry
}

pub(super) fn render(metrics: &Arc<Metrics>) -> String {
    let mut out = String::with_capacity(8192);
    // Writing to a `String` cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry(metrics));
    out
}
