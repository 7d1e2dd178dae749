//! Reading counters out of a Prometheus text exposition (`GET /metrics`).
//! Only unlabelled samples are looked up; this is no general parser.

/// The value of the unlabelled sample `name`, if present.
pub(crate) fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, rest) = l.split_once(char::is_whitespace)?;
        if n != name {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Counters of Roost's group commit, read from two scrapes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CommitCounters {
    pub commits: f64,
    pub committed_events: f64,
}

impl CommitCounters {
    pub(crate) fn from_text(text: &str) -> Option<CommitCounters> {
        Some(CommitCounters {
            commits: sample(text, "roost_commits_total")?,
            committed_events: sample(text, "roost_committed_events_total")?,
        })
    }

    /// Events per commit between `self` (before) and `after`.
    pub(crate) fn events_per_commit(&self, after: &CommitCounters) -> Option<f64> {
        let commits = after.commits - self.commits;
        (commits > 0.0).then(|| (after.committed_events - self.committed_events) / commits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP roost_commits_total Batches committed.\n# TYPE roost_commits_total counter\nroost_commits_total 10\nroost_committed_events_total 45\nroost_errors_total{kind=\"overloaded\"} 3\nroost_commits_total_extra 99\n";

    #[test]
    fn finds_unlabelled_samples() {
        assert_eq!(sample(TEXT, "roost_commits_total"), Some(10.0));
        assert_eq!(sample(TEXT, "roost_errors_total"), None);
        assert_eq!(sample(TEXT, "missing"), None);
    }

    #[test]
    fn events_per_commit_from_deltas() {
        let before = CommitCounters::from_text(TEXT).expect("present");
        let after = CommitCounters {
            commits: 20.0,
            committed_events: 145.0,
        };
        assert_eq!(before.events_per_commit(&after), Some(10.0));
        assert_eq!(before.events_per_commit(&before), None);
    }
}
