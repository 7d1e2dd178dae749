//! The `Alarm` event: delivering a due alarm inside a batch.
//!
//! The object's own alarm row (`_roost_alarm`) is the truth; the index that
//! woke the object may be early or stale, so the row is read first: no row,
//! or a later time, only corrects the schedule (and, lazily, the index).
//!
//! Architecture Invariant (at least once): the alarm row is deleted only in
//! the event in which the handler returned Ok, and only if the handler did
//! not set (or delete) the alarm itself; setting it to the time it fired
//! for makes it fire again. A failed handler is retried after the backoff with
//! the retry count raised; after the last retry the row is deleted in a
//! savepoint of its own and the alarm dropped. If the batch of an attempt
//! fails, its `AlarmUpdate` (with `attempt`) reschedules it (`output::fail`).

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use super::alarms::AlarmInfo;
use super::events::{Event, EventFailure};
use super::output::{AlarmUpdate, Output};
use crate::object::DurableObject;
use crate::storage::StorageError;

fn storage_err(e: StorageError) -> EventFailure {
    EventFailure::Broken(e.to_string(), Vec::new())
}

impl<T: DurableObject> Event<'_, T> {
    /// Delivers a due alarm: checks the object's own alarm row, runs the
    /// handler in the event's savepoint, and consumes the alarm only on
    /// success.
    pub(super) async fn alarm(mut self, retry: u32) -> Result<(), EventFailure> {
        let now = self.runtime.clock().now_ms();
        let Some(at) = self.due(now)? else {
            return Ok(());
        };
        self.l.ctx.storage.begin_event().map_err(storage_err)?;
        self.l.ctx.outputs.clear();
        if retry == 0 {
            let late = now.saturating_sub(at).max(0) as u64;
            self.runtime
                .metrics()
                .alarm_lateness
                .observe(std::time::Duration::from_millis(late));
        }
        let info = AlarmInfo {
            retry_count: retry,
            is_retry: retry > 0,
            scheduled_ms: at,
        };
        // Whether this handler set or deleted the alarm (even to `at`
        // itself), apart from what earlier events of the batch did.
        let earlier = std::mem::take(&mut self.l.ctx.alarm_touched);
        let outcome = AssertUnwindSafe(self.l.object.alarm(&mut self.l.ctx, info))
            .catch_unwind()
            .await;
        let touched = self.l.ctx.alarm_touched;
        self.l.ctx.alarm_touched |= earlier;
        let produced = std::mem::take(&mut self.l.ctx.outputs);
        match outcome {
            Ok(Ok(())) => self.consume(at, retry, produced, touched),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry, "alarm handler failed");
                self.retry_later(now, retry, false)
            }
            Err(_) => {
                tracing::error!(retry, "alarm handler panicked");
                self.retry_later(now, retry, true)
            }
        }
    }

    /// An update for the scheduler, released with the batch.
    fn update(&self, next: Option<i64>, retry: u32, reindex: bool, attempt: Option<u32>) -> Output {
        Output::Alarm(AlarmUpdate {
            key: self.l.ctx.key.clone(),
            next,
            retry,
            reindex,
            attempt,
        })
    }

    /// The stored alarm time if it is due; otherwise pushes the correction
    /// of the schedule (no alarm, or a later one) and returns `None`.
    fn due(&mut self, now: i64) -> Result<Option<i64>, EventFailure> {
        let correction = match self.l.ctx.storage.alarm().map_err(storage_err)? {
            None => self.update(None, 0, true, None),
            Some(at) if at > now => self.update(Some(at), 0, true, None),
            Some(at) => return Ok(Some(at)),
        };
        self.outputs.push(correction);
        Ok(None)
    }

    /// The handler succeeded: deletes the alarm row unless the handler set
    /// or deleted it (`touched`; a time equal to `at` fires again), keeps
    /// the event, and schedules whatever alarm is next.
    fn consume(
        self,
        at: i64,
        retry: u32,
        produced: Vec<Output>,
        touched: bool,
    ) -> Result<(), EventFailure> {
        let storage = &mut self.l.ctx.storage;
        let consumed = (|| {
            if !touched && storage.alarm()? == Some(at) {
                storage.delete_alarm()?;
            }
            storage.alarm()
        })();
        let next = match consumed {
            Ok(next) => next,
            Err(e) => {
                let _ = storage.end_event(false);
                return Err(storage_err(e));
            }
        };
        storage.end_event(true).map_err(storage_err)?;
        self.runtime
            .metrics()
            .alarms_fired
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.outputs.extend(produced);
        let update = self.update(next, 0, true, Some(retry));
        self.outputs.push(update);
        Ok(())
    }

    /// The handler failed (or panicked): undoes the event, then retries the
    /// alarm after the backoff, or drops it after its last retry.
    fn retry_later(self, now: i64, retry: u32, panicked: bool) -> Result<(), EventFailure> {
        self.runtime.metrics().error("alarm_failed");
        let storage = &mut self.l.ctx.storage;
        storage.end_event(false).map_err(storage_err)?;
        let config = &self.runtime.alarms().config;
        let update = if retry >= config.max_retries {
            tracing::error!(retries = retry, "alarm dropped after its last retry");
            storage.begin_event().map_err(storage_err)?;
            let deleted = storage.delete_alarm();
            storage.end_event(deleted.is_ok()).map_err(storage_err)?;
            deleted.map_err(storage_err)?;
            self.update(None, 0, true, None)
        } else {
            let next = now + config.backoff(retry + 1).as_millis() as i64;
            self.update(Some(next), retry + 1, false, Some(retry))
        };
        self.outputs.push(update);
        if panicked {
            return Err(EventFailure::Panicked);
        }
        Ok(())
    }
}
