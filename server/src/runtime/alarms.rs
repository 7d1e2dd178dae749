//! Alarms: the server-wide schedule of every object's next alarm, and the
//! task that wakes objects when theirs are due.
//!
//! The object's own database (`_roost_alarm`) is the truth. The *alarm index*
//! (table `alarms` of the catalog, loaded into memory at start-up, so no
//! object file is opened to find due alarms) says when to look.
//!
//! Architecture Invariant: the index may hold an entry the object no longer
//! has, or an earlier time than the object's, never a later one and never
//! miss one. A batch that sets an alarm earlier than the object's indexed
//! time makes the index entry durable *before* the batch commits
//! (`ensure_indexed`); a spurious or early entry is checked against the
//! object's database when it fires and corrected then.
//!
//! Delivery is at least once: the alarm row is deleted only in the batch in
//! which the handler returned Ok, so a crash before that batch is durable
//! fires the alarm again. A failed handler is retried with exponential
//! backoff (`AlarmConfig`); after the last retry the alarm is dropped.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Command, Runtime};
use crate::id::{ObjectId, ObjectKey};

/// What the `alarm` handler is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmInfo {
    /// How many times this alarm's handler failed before this attempt.
    pub retry_count: u32,
    /// Whether an earlier attempt failed (`retry_count > 0`).
    pub is_retry: bool,
    /// When the alarm was set to fire (ms since the epoch).
    pub scheduled_ms: i64,
}

/// Retry policy.
#[derive(Debug, Clone)]
pub struct AlarmConfig {
    /// Delay before the first retry; each further retry doubles it.
    pub first_retry: Duration,
    /// Retries after the first attempt before the alarm is dropped.
    pub max_retries: u32,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        AlarmConfig {
            first_retry: Duration::from_secs(2),
            max_retries: 6,
        }
    }
}

impl AlarmConfig {
    /// The delay before retry number `retry` (1-based): `first_retry`,
    /// doubled for each retry after the first.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.first_retry
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
    }
}

/// Milliseconds since the epoch, advancing with tokio's clock (so paused-time
/// tests see alarms fire on virtual time).
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    base_ms: i64,
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            base_ms: crate::catalog::now_ms(),
            base: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }

    /// When `at_ms` falls on tokio's clock. Any `i64` is taken: a time at or
    /// before the clock's start is its start (due at once), and one too far
    /// ahead for an `Instant` is the farthest one (about 30 years; the
    /// object's own time stays as set, and a restart computes it again).
    /// Saturating, never wrapping: a wrapped time just above `i64::MIN`
    /// would sort first in the schedule yet sleep centuries, and hold back
    /// every other object's alarm.
    fn instant_at(&self, at_ms: i64) -> Instant {
        let offset = at_ms.saturating_sub(self.base_ms);
        if offset <= 0 {
            return self.base;
        }
        let far = Duration::from_secs(30 * 365 * 24 * 3600);
        let offset = Duration::from_millis(offset.unsigned_abs()).min(far);
        self.base.checked_add(offset).unwrap_or(self.base + far)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

pub(crate) enum AlarmMsg {
    /// Fire `key`'s alarm at `at_ms` (replacing any schedule it had).
    Schedule {
        key: ObjectKey,
        at_ms: i64,
        retry: u32,
    },
    /// Forget `id`'s schedule.
    Unschedule(ObjectId),
}

/// Handle to the scheduler task.
pub(crate) struct Alarms {
    tx: mpsc::UnboundedSender<AlarmMsg>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<AlarmMsg>>>,
    /// What the durable index holds for each object (ms).
    indexed: DashMap<ObjectId, i64>,
    pub(crate) config: AlarmConfig,
}

impl Alarms {
    pub(crate) fn new(config: AlarmConfig) -> Alarms {
        let (tx, rx) = mpsc::unbounded_channel();
        Alarms {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            indexed: DashMap::new(),
            config,
        }
    }

    pub(crate) fn schedule(&self, key: &ObjectKey, at_ms: i64, retry: u32) {
        let _ = self.tx.send(AlarmMsg::Schedule {
            key: key.clone(),
            at_ms,
            retry,
        });
    }

    pub(crate) fn unschedule(&self, id: ObjectId) {
        let _ = self.tx.send(AlarmMsg::Unschedule(id));
    }

    /// Makes sure the durable index holds a time no later than `at_ms` for
    /// the object, writing (and fsyncing) it if needed. Called before the
    /// batch that sets the alarm commits.
    pub(crate) async fn ensure_indexed(
        &self,
        runtime: &Runtime,
        key: &ObjectKey,
        at_ms: i64,
    ) -> Result<(), String> {
        if self.indexed.get(&key.id).is_some_and(|t| *t <= at_ms) {
            return Ok(());
        }
        runtime.catalog().set_alarm(key, at_ms).await?;
        if let Some(cluster) = runtime.cluster() {
            cluster.index_alarm(key, Some(at_ms)).await?;
        }
        self.indexed.insert(key.id, at_ms);
        Ok(())
    }

    pub(crate) fn indexed_time(&self, id: &ObjectId) -> Option<i64> {
        self.indexed.get(id).map(|t| *t)
    }

    /// Records a new index time that need not be durable (raising it, or
    /// forgetting the entry with `None`).
    pub(crate) fn reindex_lazily(&self, runtime: &Runtime, key: &ObjectKey, at_ms: Option<i64>) {
        if let Some(cluster) = runtime.cluster().cloned() {
            let key = key.clone();
            tokio::spawn(async move {
                if let Err(e) = cluster.index_alarm(&key, at_ms).await {
                    tracing::warn!(error = %e, "cluster: alarm index not updated");
                }
            });
        }
        match at_ms {
            Some(at) => {
                self.indexed.insert(key.id, at);
                runtime.catalog().set_alarm_lazily(key, Some(at));
            }
            None => {
                self.indexed.remove(&key.id);
                runtime.catalog().set_alarm_lazily(key, None);
            }
        }
    }

    /// Loads the index and starts the scheduler task.
    pub(crate) async fn start(runtime: &Runtime) {
        let Some(rx) = runtime.alarms().rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let entries = runtime.catalog().alarms().await;
        let count = entries.len();
        for (key, at_ms) in entries {
            runtime.alarms().indexed.insert(key.id, at_ms);
            runtime.alarms().schedule(&key, at_ms, 0);
        }
        if count > 0 {
            tracing::info!(alarms = count, "loaded the alarm index");
        }
        tokio::spawn(run(runtime.clone(), rx));
    }
}

struct Entry {
    key: ObjectKey,
    at_ms: i64,
    retry: u32,
}

async fn run(runtime: Runtime, mut rx: mpsc::UnboundedReceiver<AlarmMsg>) {
    let clock = runtime.clock();
    let mut by_time: BTreeSet<(i64, ObjectId)> = BTreeSet::new();
    let mut entries: HashMap<ObjectId, Entry> = HashMap::new();
    let weak = runtime.downgrade();
    drop(runtime);
    loop {
        let next = by_time.first().copied();
        let msg = match next {
            Some((at, _)) => {
                tokio::select! {
                    msg = rx.recv() => msg,
                    () = tokio::time::sleep_until(clock.instant_at(at)) => {
                        let Some(runtime) = weak.upgrade() else { return };
                        let now = clock.now_ms();
                        while let Some(&(at, id)) = by_time.first() {
                            if at > now {
                                break;
                            }
                            by_time.remove(&(at, id));
                            if let Some(e) = entries.remove(&id) {
                                dispatch(&runtime, e);
                            }
                        }
                        continue;
                    }
                }
            }
            None => rx.recv().await,
        };
        let Some(msg) = msg else { return };
        match msg {
            AlarmMsg::Schedule { key, at_ms, retry } => {
                if let Some(old) = entries.remove(&key.id) {
                    by_time.remove(&(old.at_ms, key.id));
                }
                by_time.insert((at_ms, key.id));
                entries.insert(key.id, Entry { key, at_ms, retry });
            }
            AlarmMsg::Unschedule(id) => {
                if let Some(old) = entries.remove(&id) {
                    by_time.remove(&(old.at_ms, id));
                }
            }
        }
    }
}

/// Delivers a due alarm through the object's mailbox (starting it if it was
/// evicted). A full mailbox or a shutdown reschedules it a second later.
fn dispatch(runtime: &Runtime, e: Entry) {
    let runtime = runtime.clone();
    tokio::spawn(async move {
        runtime
            .metrics()
            .alarms_dispatched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // In a cluster the owner fires it; this node only if it owns it.
        if let Some(cluster) = runtime.cluster() {
            match cluster.route(&e.key, &runtime).await {
                Ok(crate::cluster::Route::Local) => {}
                Ok(crate::cluster::Route::Remote(_)) => return,
                Err(_) => {
                    let at = runtime.clock().now_ms() + 1000;
                    runtime.alarms().schedule(&e.key, at, e.retry);
                    return;
                }
            }
        }
        let cmd = Command::Alarm { retry: e.retry };
        if let Err(err) = runtime.send(&e.key, cmd).await {
            tracing::warn!(object = %e.key.id, error = %err.message, "cannot deliver alarm; retrying in 1 s");
            let at = runtime.clock().now_ms() + 1000;
            runtime.alarms().schedule(&e.key, at, e.retry);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `i64` an object may set maps to an instant without panicking:
    /// the past (down to `i64::MIN`) is due at once, the far future (year
    /// 9999, `i64::MAX`) is later than anything near.
    #[test]
    fn any_alarm_time_maps_to_an_instant() {
        let clock = Clock::new();
        let now = clock.now_ms();
        assert_eq!(clock.instant_at(i64::MIN), clock.base);
        assert_eq!(clock.instant_at(i64::MIN + 1), clock.base);
        assert_eq!(clock.instant_at(-1), clock.base);
        let soon = clock.instant_at(now + 1000);
        let year_9999 = clock.instant_at(253_402_300_799_000);
        let max = clock.instant_at(i64::MAX);
        assert!(soon > clock.base);
        assert!(year_9999 > soon && max >= year_9999);
    }

    #[test]
    fn backoff_doubles_from_the_first_retry() {
        let c = AlarmConfig::default();
        assert_eq!(c.backoff(1), Duration::from_secs(2));
        assert_eq!(c.backoff(2), Duration::from_secs(4));
        assert_eq!(c.backoff(6), Duration::from_secs(64));
    }
}
