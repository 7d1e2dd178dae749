//! CPU time and resident memory of a process, read from Linux's `/proc`.
//! Used to show the load generator's own CPU use next to every result (so a
//! saturated client is visible) and the server's CPU and RSS when its PID is
//! given. It does not sample continuously: callers take two readings.

use std::time::Instant;

use anyhow::{bail, Context as _};

/// Clock ticks per second of `/proc/*/stat` times. `USER_HZ` is part of
/// Linux's user-space ABI and is 100 on every architecture Rust supports.
const TICKS_PER_SEC: f64 = 100.0;

/// Which process (or thread) to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proc {
    /// This process, all threads.
    This,
    /// The calling thread only.
    ThisThread,
    /// Another process.
    Pid(u32),
}

impl Proc {
    fn stat_path(self) -> String {
        match self {
            Proc::This => "/proc/self/stat".to_string(),
            Proc::ThisThread => "/proc/thread-self/stat".to_string(),
            Proc::Pid(pid) => format!("/proc/{pid}/stat"),
        }
    }

    fn status_path(self) -> String {
        match self {
            Proc::This | Proc::ThisThread => "/proc/self/status".to_string(),
            Proc::Pid(pid) => format!("/proc/{pid}/status"),
        }
    }
}

/// user + system CPU seconds from the text of a `/proc/*/stat` file.
pub(crate) fn parse_cpu_seconds(stat: &str) -> anyhow::Result<f64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields we want follow the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is field 3 (state); utime is 14, stime 15.
    if fields.len() < 13 {
        bail!("stat has {} fields after the name", fields.len());
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok((utime + stime) as f64 / TICKS_PER_SEC)
}

/// Resident set size in bytes from the text of a `/proc/*/status` file.
pub(crate) fn parse_rss_bytes(status: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("VmRSS value")?;
    Ok(kb * 1024)
}

pub(crate) fn cpu_seconds(p: Proc) -> anyhow::Result<f64> {
    let path = p.stat_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_seconds(&text)
}

pub(crate) fn rss_bytes(p: Proc) -> anyhow::Result<u64> {
    let path = p.status_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_rss_bytes(&text)
}

/// CPU use between two moments, as a percentage of one core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMeter {
    proc_: Proc,
    start_cpu: f64,
    start: Instant,
}

impl CpuMeter {
    pub(crate) fn start(p: Proc) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            proc_: p,
            start_cpu: cpu_seconds(p)?,
            start: Instant::now(),
        })
    }

    /// (CPU seconds used, percent of one core) since `start`.
    pub(crate) fn read(&self) -> anyhow::Result<(f64, f64)> {
        let used = cpu_seconds(self.proc_)? - self.start_cpu;
        let wall = self.start.elapsed().as_secs_f64();
        let pct = if wall > 0.0 { used / wall * 100.0 } else { 0.0 };
        Ok((used, pct))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200 18446744073709551615";
        assert!((parse_cpu_seconds(stat).expect("valid") - 3.0).abs() < 1e-9);
    }

    #[test]
    fn rejects_truncated_stat() {
        assert!(parse_cpu_seconds("1 (x) S 1 2").is_err());
        assert!(parse_cpu_seconds("garbage").is_err());
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\troost\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_bytes(status).expect("valid"), 2048 * 1024);
        assert!(parse_rss_bytes("Name: x\n").is_err());
    }

    #[test]
    fn reads_own_process() {
        let meter = CpuMeter::start(Proc::This).expect("own stat");
        let (used, pct) = meter.read().expect("own stat");
        assert!(used >= 0.0 && pct >= 0.0);
        assert!(rss_bytes(Proc::This).expect("own status") > 0);
        assert!(cpu_seconds(Proc::ThisThread).is_ok());
    }
}
