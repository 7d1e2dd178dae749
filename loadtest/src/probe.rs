//! Readings taken around a measured interval: the generator's own CPU (always,
//! so a saturated client is visible), the server's CPU and RSS (given its PID)
//! and Roost's group-commit counters from `/metrics` (when it has them).

use crate::args::Common;
use crate::procstat::{rss_bytes, CpuMeter, Proc};
use crate::promtext::CommitCounters;
use crate::report::{Report, Unit};
use crate::target::Target;

pub(crate) struct Probes {
    client: CpuMeter,
    server: Option<(u32, CpuMeter)>,
    metrics: Option<(Target, CommitCounters)>,
}

impl Probes {
    /// Starts the meters. `metrics` is the server to scrape for
    /// `roost_commits_total`; a server without it is simply not scraped.
    pub(crate) async fn start(common: &Common, metrics: Option<&Target>) -> anyhow::Result<Probes> {
        let server = match common.server_pid {
            Some(pid) => Some((pid, CpuMeter::start(Proc::Pid(pid))?)),
            None => None,
        };
        let metrics = match metrics {
            Some(t) => scrape(t).await.map(|c| (t.clone(), c)),
            None => None,
        };
        Ok(Probes {
            client: CpuMeter::start(Proc::This)?,
            server,
            metrics,
        })
    }

    /// Adds the readings to `report`.
    pub(crate) async fn finish(self, report: &mut Report) {
        if let Ok((secs, pct)) = self.client.read() {
            report.add("client_cpu_s", secs, Unit::Seconds);
            report.add("client_cpu_pct", pct, Unit::Percent);
            if pct > 90.0 {
                report.note("the load generator used over 90% of a core: it may be what limits this run (try --threads 2)");
            }
        }
        if let Some((pid, meter)) = self.server {
            match meter.read() {
                Ok((_, pct)) => {
                    report.add("server_cpu_pct", pct, Unit::Percent);
                }
                Err(e) => {
                    report.note(format!("server CPU not read: {e:#}"));
                }
            }
            match rss_bytes(Proc::Pid(pid)) {
                Ok(rss) => {
                    report.add("server_rss_bytes", rss as f64, Unit::Bytes);
                }
                Err(e) => {
                    report.note(format!("server RSS not read: {e:#}"));
                }
            }
        }
        if let Some((target, before)) = self.metrics {
            if let Some(after) = scrape(&target).await {
                if let Some(epc) = before.events_per_commit(&after) {
                    report.add("server_events_per_commit", epc, Unit::Ratio);
                }
                report.add(
                    "server_commits",
                    after.commits - before.commits,
                    Unit::Count,
                );
            }
        }
    }
}

/// Roost's commit counters, or `None` if `/metrics` is missing or lacks them.
pub(crate) async fn scrape(target: &Target) -> Option<CommitCounters> {
    let text = crate::http1::get_text(target, &target.path("/metrics"))
        .await
        .ok()?;
    CommitCounters::from_text(&text)
}
