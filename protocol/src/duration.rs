//! Durations as people type them in flags and environment variables, for the
//! server and the load tester alike: `250ms`, `10s`, `5m`, `1h`, `2d`,
//! `1h 30m` (humantime's format), or a plain number of seconds (`10`,
//! `0.5`).

use std::time::Duration;

/// Parses a duration; the error says what is accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a valid number of seconds"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 250ms, 10s, 5m, 1h or 2d ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse(" 10 "), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["x", "5q", "-1", "NaN", "", "1e400"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
