//! What a crash run reports: the ledger's totals per kind of write
//! (acknowledged, attempted, lost), restart times, the server's own
//! counters summed over every process, and how far the Yjs documents'
//! logs were compacted. Also the last guard of the run: a kind of write
//! that was never acknowledged would make its check vacuous, so it fails
//! the run.

use std::time::Duration;

use super::suite::Suite;
use super::{ledger, Outcome, ADMIN_TOKEN};
use crate::args::Common;
use crate::http1::{get_text, HttpConn};
use crate::promtext::sample;
use crate::report::{Report, Unit};
use crate::target::Target;

/// Server counters summed over every server process (read just before each kill).
#[derive(Debug, Default)]
pub(super) struct ServerStats {
    evictions: f64,
    object_starts: f64,
    alarms_fired: f64,
    log_fsyncs: f64,
}

impl ServerStats {
    /// Adds the running server's counters (nothing if `/metrics` does not
    /// answer within 300 ms).
    pub(super) async fn add_scrape(&mut self, target: &Target) {
        let text = tokio::time::timeout(Duration::from_millis(300), get_text(target, "/metrics"));
        if let Ok(Ok(text)) = text.await {
            let get = |n: &str| sample(&text, n).unwrap_or(0.0);
            self.evictions += get("roost_evictions_total");
            self.object_starts += get("roost_object_starts_total");
            self.alarms_fired += get("roost_alarms_fired_total");
            self.log_fsyncs += get("roost_log_fsyncs_total");
        }
    }
}

/// The report of a finished run (`elapsed`: its wall time; `ydoc_figures`:
/// from [`ydoc_history`]).
pub(super) fn report(
    suite: &Suite,
    common: &Common,
    elapsed: Duration,
    ydoc_figures: Vec<(String, f64)>,
) -> Report {
    let args = &suite.args;
    let mut report = Report::new("crash");
    report.label = common.label.clone();
    report
        .param("seed", suite.seed)
        .param("bin", args.bin.display().to_string())
        .param("run_s", format!("{:?}..{:?}", args.min_run, args.max_run))
        .param("idle_timeout", args.idle_timeout.clone())
        .param("ydoc_compact_after", args.ydoc_compact_after.clone())
        .param("history_retention", args.history_retention.clone());
    report.add("cycles", suite.cycles_done as f64, Unit::Count);
    let mut lost_total = 0;
    for (kind, t) in suite.ledger.totals() {
        report.add(&format!("{kind}_acked"), t.acked as f64, Unit::Count);
        if let Some(a) = t.attempted {
            report.add(&format!("{kind}_attempted"), a as f64, Unit::Count);
        }
        report.add(&format!("{kind}_lost"), t.lost as f64, Unit::Count);
        lost_total += t.lost;
    }
    let stats = &suite.stats;
    report
        .add("lost", lost_total as f64, Unit::Count)
        .add("elapsed_s", elapsed.as_secs_f64(), Unit::Seconds)
        .add(
            "restart_mean_s",
            suite.restart_total.as_secs_f64() / suite.cycles_done.max(1) as f64,
            Unit::Seconds,
        )
        .add(
            "restart_max_s",
            suite.restart_max.as_secs_f64(),
            Unit::Seconds,
        )
        .add("server_evictions", stats.evictions, Unit::Count)
        .add("server_object_starts", stats.object_starts, Unit::Count)
        .add("server_alarms_fired", stats.alarms_fired, Unit::Count)
        .add("server_log_fsyncs", stats.log_fsyncs, Unit::Count);
    for (k, v) in ydoc_figures {
        report.add(&k, v, Unit::Count);
    }
    report
        .note("server_* counters are summed over every server process, read just before each kill");
    report
}

/// The run's outcome. Without losses: fails if some kind of write was
/// never acknowledged (unless turned off), else removes the temporary data
/// directory. With losses: a note on `report` says where the data is kept
/// and which seed replays the run.
pub(super) fn outcome(suite: &Suite, mut report: Report) -> anyhow::Result<Outcome> {
    let args = &suite.args;
    let problems = suite.ledger.problems.clone();
    if problems.is_empty() {
        let nothing: Vec<&str> = suite
            .ledger
            .totals()
            .iter()
            .filter(|(k, t)| {
                t.acked == 0
                    && !(args.no_yjs && *k == "yjs")
                    && !(args.no_followup && *k == "followup")
            })
            .map(|(k, _)| *k)
            .collect();
        if !nothing.is_empty() {
            anyhow::bail!(
                "no acknowledged {} writes: the suite checked nothing of that kind (logs in {})",
                nothing.join(", "),
                suite.dir.display()
            );
        }
        if !args.keep && args.dir.is_none() {
            let _ = std::fs::remove_dir_all(&suite.dir);
        }
    } else {
        report.note(format!(
            "LOST WRITES; data and logs kept in {}; rerun with --seed {}",
            suite.dir.display(),
            suite.seed
        ));
    }
    Ok(Outcome { report, problems })
}

/// How far the Yjs documents' logs have been compacted: update rows appended
/// (ids never go back) and still kept, and snapshots kept.
pub(super) async fn ydoc_history(target: &Target, docs: &[String]) -> Vec<(String, f64)> {
    let mut appended = 0;
    let mut kept = 0;
    let mut snapshots = 0;
    let Ok(mut conn) = HttpConn::connect(target).await else {
        return Vec::new();
    };
    conn.set_bearer(ADMIN_TOKEN);
    for doc in docs {
        let sql = "SELECT max(coalesce((SELECT max(id) FROM updates), 0), \
                   coalesce((SELECT max(upto) FROM snapshots), 0))";
        appended += ledger::sql_int(&mut conn, "ydoc", doc, sql)
            .await
            .unwrap_or(0);
        let sql = "SELECT count(*) FROM updates";
        kept += ledger::sql_int(&mut conn, "ydoc", doc, sql)
            .await
            .unwrap_or(0);
        let sql = "SELECT count(*) FROM snapshots";
        snapshots += ledger::sql_int(&mut conn, "ydoc", doc, sql)
            .await
            .unwrap_or(0);
    }
    vec![
        ("ydoc_update_rows_appended".into(), appended as f64),
        ("ydoc_update_rows_kept".into(), kept as f64),
        ("ydoc_snapshots_kept".into(), snapshots as f64),
    ]
}
