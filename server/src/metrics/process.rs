//! The `process_*` metrics Prometheus clients conventionally export (the
//! same names and help texts as the Go client's), read from `/proc` at
//! scrape time. Off Linux, or where `/proc` is not mounted, they are absent.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let e = &mut encoder;
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| Stat::parse(&text))
        {
            stat.encode(e)?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let n = fds.count() as u64;
            gauge(e, "process_open_fds", "Number of open file descriptors.", n)?;
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| max_open_files(&text))
        {
            let help = "Maximum number of open file descriptors.";
            gauge(e, "process_max_fds", help, max)?;
        }
        Ok(())
    }
}

/// The fields of `/proc/self/stat` (proc(5)) reported.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    utime: u64,
    stime: u64,
    threads: u64,
    /// Clock ticks from boot to the process's start.
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

impl Stat {
    fn parse(text: &str) -> Option<Stat> {
        // Field 2, the command name in parentheses, may hold spaces and
        // parentheses itself: count the fields after its last `)`.
        let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }

    fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let Some(ticks) = crate::sys::clock_ticks_per_second() else {
            return Ok(());
        };
        let ticks = ticks as f64;
        let cpu = ConstCounter::new((self.utime + self.stime) as f64 / ticks);
        let help = "Total user and system CPU time spent in seconds.";
        // The encoder appends `_total`: `process_cpu_seconds_total`.
        cpu.encode(e.encode_descriptor("process_cpu_seconds", help, None, MetricType::Counter)?)?;
        let help = "Virtual memory size in bytes.";
        gauge(e, "process_virtual_memory_bytes", help, self.vsize)?;
        if let Some(page) = crate::sys::page_size() {
            let help = "Resident memory size in bytes.";
            gauge(
                e,
                "process_resident_memory_bytes",
                help,
                self.rss_pages * page,
            )?;
        }
        if let Some(boot) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| boot_time(&text))
        {
            let start = boot as f64 + self.start_ticks as f64 / ticks;
            let help = "Start time of the process since unix epoch in seconds.";
            gauge(e, "process_start_time_seconds", help, start)?;
        }
        gauge(
            e,
            "process_threads",
            "Number of OS threads in the process.",
            self.threads,
        )
    }
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    let metric = e.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files from `/proc/self/limits` (`None` if unlimited).
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (roost (x) y) S 1 4242 4242 0 -1 4194560 1538 0 0 0 \
                    250 75 0 0 20 0 7 0 123456 987654321 2048 18446744073709551615 1 1 0 0";
        assert_eq!(
            Stat::parse(stat),
            Some(Stat {
                utime: 250,
                stime: 75,
                threads: 7,
                start_ticks: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1700000000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }
}
