//! A progress bar on the terminal while a scenario runs (stderr, and only
//! when stderr is a TTY, so logs and `--json` output stay clean).

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A bar that fills over `duration` and shows a live counter. Dropping it
/// (or calling `finish`) stops its ticker task.
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `counter` is read every 200 ms and shown as `{counter} {what}`.
    pub(crate) fn timed(
        title: &str,
        duration: Duration,
        counter: Arc<AtomicU64>,
        what: &'static str,
    ) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        let total_ms = duration.as_millis().max(1) as u64;
        let bar = ProgressBar::new(total_ms);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(title.to_string());
        let b = bar.clone();
        let start = Instant::now();
        let ticker = tokio::spawn(async move {
            let mut last = 0u64;
            let mut last_t = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = counter.load(Ordering::Relaxed);
                let dt = last_t.elapsed().as_secs_f64().max(1e-6);
                let rate = (now - last.min(now)) as f64 / dt;
                last = now;
                last_t = Instant::now();
                b.set_position((start.elapsed().as_millis() as u64).min(total_ms));
                b.set_message(format!("{now} {what} ({rate:.0}/s)"));
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    /// A spinner with a message (for phases without a known length).
    pub(crate) fn phase(msg: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_message(msg.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar, ticker: None }
    }

    pub(crate) fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
