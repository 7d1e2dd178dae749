//! Flags shared by every scenario and small flag parsers.

use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Common {
    /// Print one JSON object instead of the human table.
    #[arg(long, global = true)]
    pub json: bool,
    /// A label copied into the report (e.g. the server's name), used by `summarize`.
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// PID of the server process: report its CPU use and resident memory.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Tokio worker threads of the load generator (1 = everything on one core).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Allow a target that is not a loopback address.
    #[arg(long, global = true)]
    pub allow_remote: bool,
}

/// Parses a duration flag (`250ms`, `10s`, `2m`, `1h`, or seconds): the
/// server's own parser (`roost_protocol::duration`).
pub(crate) fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    roost_protocol::duration::parse(s).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").expect("ok"), Duration::from_secs(10));
        assert_eq!(
            parse_duration("250ms").expect("ok"),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("2m").expect("ok"), Duration::from_secs(120));
        assert_eq!(
            parse_duration("1.5").expect("ok"),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("1e30s").is_err());
    }
}
