//! Where `roost serve`'s log lines go: stderr, in batches.
//!
//! A line is formatted on the thread that logs it and appended to a shared
//! buffer; a thread of its own writes the buffer out `FLUSH_EVERY` after the
//! first line of a batch arrived, with one `write`. Written one `write` per
//! line, the access log cost about a quarter of durable-RPC throughput
//! (docs/BENCHMARKS.md); `tracing-appender`'s writer thread woke for every
//! line and spun in its channel for as much again.
//!
//! Invariants: lines reach stderr in the order they were appended (whoever
//! writes holds `out` from taking the buffer to the end of the `write`); a
//! buffer past `MAX_PENDING` is written by the thread that filled it, so a
//! flood of lines slows the loggers instead of growing memory or dropping
//! lines; dropping the `LogGuard` writes out what is pending. A kill -9
//! loses at most the last `FLUSH_EVERY` of lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a batch may wait before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Pending bytes past which the logging thread writes them itself.
const MAX_PENDING: usize = 1 << 20;

/// Lines not yet written.
#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// Set when the guard is dropped (or no writer thread started): from
    /// then on each logger writes its own line at once.
    stopped: bool,
}

/// Where batches go (stderr), and the buffer the last one was written from,
/// kept for its capacity: the loggers' buffer and this one swap, so a
/// steady flow of lines allocates nothing.
struct Out {
    sink: Box<dyn Write + Send>,
    spare: Vec<u8>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when a batch starts (the buffer was empty) and at stop.
    started: Condvar,
    /// Held from taking the buffer to the end of its `write`: keeps
    /// batches in order.
    out: Mutex<Out>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves the data usable (bytes).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Writes out whatever is pending, after those taken before it.
    fn flush(&self) {
        write_pending(&mut lock(&self.out), lock(&self.pending));
    }
}

/// Takes the pending lines (releasing their lock) and writes them to `out`,
/// whose lock the caller holds.
fn write_pending(out: &mut Out, mut pending: MutexGuard<'_, Pending>) {
    std::mem::swap(&mut pending.lines, &mut out.spare);
    drop(pending);
    if !out.spare.is_empty() {
        // Nowhere to report a failed write to stderr; the lines are lost.
        let _ = out
            .sink
            .write_all(&out.spare)
            .and_then(|()| out.sink.flush());
    }
    out.spare.clear();
    // A flood's buffer is not kept.
    out.spare.shrink_to(MAX_PENDING);
}

/// The `MakeWriter` for the fmt layer.
#[derive(Clone)]
pub(crate) struct BatchedStderr(Arc<Shared>);

/// Writes out pending lines and stops the writer thread when dropped.
pub(crate) struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The writer and its guard; starts the writer thread.
pub(crate) fn batched_stderr() -> (BatchedStderr, LogGuard) {
    batched(Box::new(std::io::stderr()))
}

fn batched(sink: Box<dyn Write + Send>) -> (BatchedStderr, LogGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        started: Condvar::new(),
        out: Mutex::new(Out {
            sink,
            spare: Vec::new(),
        }),
    });
    let writer = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("roost-log".into())
        .spawn(move || write_batches(&writer))
        .ok();
    if thread.is_none() {
        // No writer thread: every line is written by its logger at once.
        lock(&shared.pending).stopped = true;
    }
    let guard = LogGuard {
        shared: Arc::clone(&shared),
        thread,
    };
    (BatchedStderr(shared), guard)
}

/// The writer thread: waits for a batch to start, lets it gather for
/// `FLUSH_EVERY`, writes it.
fn write_batches(shared: &Shared) {
    loop {
        {
            let mut pending = lock(&shared.pending);
            while pending.lines.is_empty() && !pending.stopped {
                pending = shared
                    .started
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if pending.stopped {
                return;
            }
        }
        std::thread::sleep(FLUSH_EVERY);
        shared.flush();
    }
}

impl LogGuard {
    /// Makes a panic write out the pending lines before its message, so the
    /// log keeps its order. Skipped if the panicking thread holds the
    /// buffer's locks (it would wait on itself).
    pub(crate) fn flush_before_panics(&self) {
        let shared = Arc::clone(&self.shared);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let (Ok(mut out), Ok(pending)) = (shared.out.try_lock(), shared.pending.try_lock()) {
                write_pending(&mut out, pending);
            }
            previous(info);
        }));
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        lock(&self.shared.pending).stopped = true;
        self.shared.started.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.flush();
    }
}

/// One event's line(s), appended to the pending buffer.
pub(crate) struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = lock(&self.0.pending);
            if pending.lines.is_empty() {
                self.0.started.notify_one();
            }
            pending.lines.extend_from_slice(buf);
            pending.lines.len() > MAX_PENDING || pending.stopped
        };
        if full {
            self.0.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that keeps what was written and counts the writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut sink = lock(&self.0);
            sink.0.extend_from_slice(buf);
            sink.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_in_fewer_writes_than_lines_and_at_once_after_the_stop() {
        let sink = Sink::default();
        let (writer, guard) = batched(Box::new(sink.clone()));
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = &writer;
                s.spawn(move || {
                    for i in 0..1000 {
                        // One `write` per line, as the fmt layer makes.
                        let line = format!("{t} {i}\n");
                        writer
                            .make_writer()
                            .write_all(line.as_bytes())
                            .expect("append");
                    }
                });
            }
        });
        drop(guard);
        let (bytes, writes) = lock(&sink.0).clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        let mut next = [0; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').expect("two numbers");
            let t: usize = t.parse().expect("thread");
            assert_eq!(i.parse::<usize>().expect("line"), next[t], "out of order");
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4], "every line is written");
        assert!(writes <= 2000, "{writes} writes for 4000 lines");
        // Once stopped, a logger writes its own line at once.
        writeln!(writer.make_writer(), "late").expect("append");
        assert!(lock(&sink.0).0.ends_with(b"late\n"));
    }

    #[test]
    fn a_panic_writes_out_the_pending_lines_first() {
        let sink = Sink::default();
        let (writer, guard) = batched(Box::new(sink.clone()));
        guard.flush_before_panics();
        writeln!(writer.make_writer(), "before the panic").expect("append");
        assert!(std::panic::catch_unwind(|| panic!("a test panic")).is_err());
        assert_eq!(lock(&sink.0).0, b"before the panic\n");
    }

    #[test]
    fn a_buffer_past_the_limit_is_written_by_the_logging_thread_at_once() {
        let sink = Sink::default();
        let (writer, _guard) = batched(Box::new(sink.clone()));
        writer
            .make_writer()
            .write_all(&vec![b'.'; MAX_PENDING + 1])
            .expect("append");
        assert_eq!(lock(&sink.0).0.len(), MAX_PENDING + 1);
    }
}
