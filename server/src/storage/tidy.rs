//! Tidying the files of objects that went idle.
//!
//! An evicted object's connection closes without a checkpoint (an eviction
//! must not wait for fsyncs), so its WAL and WAL index stay beside the
//! database file: a counter that was used once costs ~55 KB on disk (a
//! 2 KiB database, a 14 KiB WAL, a 32 KiB index) instead of ~14 KB.
//!
//! The tidier folds those WALs into their databases in the background, one
//! file at a time, once an object has stayed evicted for a while: its own
//! connection checkpoints the WAL (`TRUNCATE`, fsyncing the WAL before and
//! the database after, `synchronous=NORMAL`) and then closes as the last
//! connection, which lets SQLite remove the WAL and its index.
//!
//! When the server stops cleanly, what is queued is tidied at once, within
//! a deadline (`Tidier::finish`): a stopped server's files keep no WAL.
//! Those left past that deadline, or by a kill -9, are queued at the next
//! start-up as if their objects had just been evicted (`leftovers.rs`):
//! otherwise they would wait for their objects' next eviction, for many
//! never.
//!
//! Architecture Invariant: tidying never changes what a file holds, only
//! where its pages live; every committed batch stays durable throughout
//! (the checkpoint's fsyncs come before the WAL is emptied). An object that
//! woke up meanwhile is left alone: the tidier skips it if it is live, and
//! SQLite itself neither checkpoints past a reader nor removes a WAL another
//! connection has open.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::StorageError;

/// Evicted objects waiting to be tidied; beyond this, evictions are not
/// queued (those objects keep their WAL until their next eviction). An
/// unbounded channel with this count, not a bounded one: a bounded std
/// channel allocates all its slots up front (~4 MiB of RSS for this many).
const QUEUE: usize = 100_000;

/// Whether the object at this path has a live actor now.
pub(crate) type IsLive = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// What the tidier thread is sent.
enum TidyMsg {
    /// An object's actor closed its database at this path, at this time.
    Evicted(PathBuf, Instant),
    /// The server stops: tidy everything queued now, until the deadline,
    /// then answer and end.
    Finish(Instant, tokio::sync::oneshot::Sender<()>),
}

/// Handle to the tidier thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct Tidier {
    tx: Option<mpsc::Sender<TidyMsg>>,
    /// Entries sent and not yet taken off the tidier's queue.
    queued: Arc<AtomicUsize>,
}

impl Tidier {
    /// Starts the thread; `after` zero disables tidying.
    pub(crate) fn start(
        after: Duration,
        is_live: IsLive,
        done: Arc<dyn Fn() + Send + Sync>,
    ) -> Tidier {
        let queued = Arc::new(AtomicUsize::new(0));
        if after.is_zero() {
            return Tidier { tx: None, queued };
        }
        let (tx, rx) = mpsc::channel();
        let taken = queued.clone();
        let spawned = std::thread::Builder::new()
            .name("roost-tidy".into())
            .spawn(move || run(rx, after, is_live, done, &taken));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the file tidier; idle objects keep their WAL");
            return Tidier { tx: None, queued };
        }
        Tidier {
            tx: Some(tx),
            queued,
        }
    }

    /// An object's actor has closed its database at `path`.
    pub(crate) fn evicted(&self, path: PathBuf) {
        let Some(tx) = &self.tx else { return };
        if self.queued.fetch_add(1, Ordering::AcqRel) >= QUEUE
            || tx.send(TidyMsg::Evicted(path, Instant::now())).is_err()
        {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The server stops (every object closed, the commit log checkpointed):
    /// tidies every queued file now, until `deadline` (those left keep
    /// their WAL), and stops the thread.
    pub(crate) async fn finish(&self, deadline: Instant) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = tokio::sync::oneshot::channel();
        if tx.send(TidyMsg::Finish(deadline, done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The files waiting to be tidied, each once however often its object
/// was evicted meanwhile (a document that wakes up for each of its
/// sockets is evicted many times), in the order of the eviction each was
/// queued with.
#[derive(Default)]
struct Waiting {
    order: VecDeque<(Arc<Path>, Instant)>,
    /// Each waiting file's latest eviction.
    latest: HashMap<Arc<Path>, Instant>,
}

impl Waiting {
    /// Queues `path`; returns false if it was already waiting (then its
    /// latest eviction is `at`).
    fn push(&mut self, path: PathBuf, at: Instant) -> bool {
        let path: Arc<Path> = path.into();
        if let Some(latest) = self.latest.get_mut(&path) {
            *latest = at;
            return false;
        }
        self.order.push_back((path.clone(), at));
        self.latest.insert(path, at);
        true
    }

    /// The first file in line and the eviction it was queued with.
    fn front(&self) -> Option<(&Arc<Path>, Instant)> {
        self.order.front().map(|(path, at)| (path, *at))
    }

    /// Takes the first file out of line. If it was evicted again since it
    /// was queued (and `requeue`), it goes back in line with that eviction
    /// instead, and this returns false.
    fn pop_front(&mut self, requeue: bool) -> bool {
        let Some((path, at)) = self.order.pop_front() else {
            return true;
        };
        let latest = self.latest.get(&path).copied().unwrap_or(at);
        if requeue && latest > at {
            self.order.push_back((path, latest));
            return false;
        }
        self.latest.remove(&path);
        if self.order.is_empty() {
            // A burst of evictions leaves its capacity behind.
            self.order.shrink_to(64);
            self.latest.shrink_to(64);
        }
        true
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

fn run(
    rx: mpsc::Receiver<TidyMsg>,
    after: Duration,
    is_live: IsLive,
    done: Arc<dyn Fn() + Send + Sync>,
    queued: &AtomicUsize,
) {
    let mut waiting = Waiting::default();
    let push = |waiting: &mut Waiting, path, at| {
        if !waiting.push(path, at) {
            queued.fetch_sub(1, Ordering::AcqRel);
        }
    };
    // Set once the server stops: tidy everything queued, until then.
    let mut finish: Option<Instant> = None;
    loop {
        let wait = waiting
            .front()
            .map_or(Duration::from_secs(3600), |(_, at)| {
                (at + after).saturating_duration_since(Instant::now())
            });
        let mut reply = None;
        match rx.recv_timeout(wait) {
            Ok(TidyMsg::Evicted(path, at)) => {
                push(&mut waiting, path, at);
                continue;
            }
            Ok(TidyMsg::Finish(deadline, answer)) => {
                while let Ok(TidyMsg::Evicted(path, at)) = rx.try_recv() {
                    push(&mut waiting, path, at);
                }
                finish = Some(deadline);
                reply = Some(answer);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if waiting.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
        tidy_due(&mut waiting, after, finish, &is_live, &*done, queued);
        if let Some(answer) = reply {
            let _ = answer.send(());
            return;
        }
    }
}

/// Tidies the files whose wait is over (all of them, until `finish`);
/// one evicted again meanwhile waits once more, from that eviction.
fn tidy_due(
    waiting: &mut Waiting,
    after: Duration,
    finish: Option<Instant>,
    is_live: &IsLive,
    done: &(dyn Fn() + Send + Sync),
    queued: &AtomicUsize,
) {
    // Each file goes back in line at most once here: bounded.
    for _ in 0..waiting.len() * 2 {
        let Some((path, at)) = waiting.front() else {
            break;
        };
        let due = finish.map_or(at.elapsed() >= after, |d| Instant::now() < d);
        if !due {
            break;
        }
        let path = path.clone();
        if !waiting.pop_front(finish.is_none()) {
            continue;
        }
        if !is_live(&path) {
            match tidy(&path) {
                Ok(true) => done(),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, path = %path.display(), "not tidied"),
            }
        }
        queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Folds the WAL of the database at `path` into it and removes the WAL and
/// its index, unless another connection uses the file. Returns whether it
/// did.
pub(crate) fn tidy(path: &Path) -> Result<bool, StorageError> {
    if !super::files::wal_path(path).exists() {
        return Ok(false);
    }
    let _turn = super::wal::one_at_a_time();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    // (busy, frames in the WAL, frames checkpointed); busy: a reader or
    // writer is back, leave the file alone.
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Ok(false);
    }
    // The last connection to close removes the (now empty) WAL and index.
    conn.close().map_err(|(_, e)| e)?;
    Ok(!super::files::wal_path(path).exists())
}

#[cfg(test)]
mod tests {
    use super::super::{Storage, StorageLimits};
    use super::*;

    fn disk_bytes(path: &Path) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                std::fs::metadata(&p).map_or(0, |m| m.len())
            })
            .sum()
    }

    /// A file evicted many times waits in line once, from its latest
    /// eviction; the others keep their turn.
    #[test]
    fn a_file_evicted_again_waits_once_from_its_latest_eviction() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Waiting::default();
        assert!(w.push("a".into(), at(0)));
        assert!(w.push("b".into(), at(1)));
        assert!(!w.push("a".into(), at(5)));
        assert_eq!(w.len(), 2);
        assert_eq!(
            w.front().map(|(p, t)| (p.to_path_buf(), t)),
            Some(("a".into(), at(0)))
        );
        // `a` was evicted again: back in line with that eviction.
        assert!(!w.pop_front(true));
        assert_eq!(w.front().map(|(p, _)| p.to_path_buf()), Some("b".into()));
        assert!(w.pop_front(true));
        assert_eq!(
            w.front().map(|(p, t)| (p.to_path_buf(), t)),
            Some(("a".into(), at(5)))
        );
        assert!(w.pop_front(true));
        assert!(w.is_empty() && w.latest.is_empty());
        // Queued again after it was tidied.
        assert!(w.push("a".into(), at(9)));
    }

    #[test]
    fn tidying_an_idle_file_keeps_its_rows_and_drops_its_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.sqlite");
        {
            let mut s = Storage::open(&path, StorageLimits::default()).expect("open");
            s.begin_batch().expect("begin");
            s.put("n", &41).expect("put");
            s.finish_batch().expect("finish");
            s.commit(true).expect("commit");
            s.sync_files().expect("sync");
        }
        let before = disk_bytes(&path);
        assert!(super::super::files::wal_path(&path).exists());
        assert!(tidy(&path).expect("tidy"));
        let after = disk_bytes(&path);
        assert!(!super::super::files::wal_path(&path).exists());
        assert!(after < before / 2, "{before} → {after} bytes");
        let mut s = Storage::open(&path, StorageLimits::default()).expect("reopen");
        assert_eq!(s.get::<i64>("n").expect("get"), Some(41));
        // While the file is open elsewhere, it is left alone.
        s.begin_batch().expect("begin");
        s.put("n", &42).expect("put");
        s.finish_batch().expect("finish");
        s.commit(true).expect("commit");
        assert!(!tidy(&path).expect("tidy while open"));
        assert!(super::super::files::wal_path(&path).exists());
        drop(s);
        let s = Storage::open(&path, StorageLimits::default()).expect("reopen");
        assert_eq!(s.get::<i64>("n").expect("get"), Some(42));
    }
}
