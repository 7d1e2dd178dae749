//! Catching up an object's file that misses batches the log acknowledged
//! (a full disk; the size cap rolling back the open transaction) while the
//! server runs — the way out of `ObjectState::Missing` and of a lost
//! `Loaded` object.
//!
//! Once every in-flight batch is settled, the object is closed (SQLite drops
//! the refused transaction), its missing records are replayed from the log's
//! segments into the file (`recovery::replay_one`), and the next command
//! starts it from the file. Until that succeeds it is not started from the
//! file — which misses batches clients have seen — and every command gets
//! 507 `insufficient_storage`. Attempts are at most a second apart.

use std::time::{Duration, Instant};

use roost_protocol::{ErrorCode, ErrorDetail};

use super::actor::Actor;
use super::error;
use super::state::{Missing, ObjectState};
use crate::object::DurableObject;

/// Least time between two attempts to catch a file up.
const RETRY_AFTER: Duration = Duration::from_secs(1);

fn refused(why: &str, detail: &str) -> ErrorDetail {
    error(
        ErrorCode::InsufficientStorage,
        format!(
            "the object's file cannot take its acknowledged writes yet ({why}{detail}); \
             they are safe in the commit log, and the object serves again once the disk has room"
        ),
    )
}

impl<T: DurableObject> Actor<T> {
    /// Catches the object's file up from the log if it misses batches: Ok
    /// if it does not (any more), the 507 to answer with if it still does.
    pub(super) async fn catch_up(&mut self) -> Result<(), ErrorDetail> {
        let (why, tried) = match &self.object {
            ObjectState::Loaded(l) => match l.ctx.storage.lost() {
                Some(why) => (why.to_owned(), None),
                None => return Ok(()),
            },
            ObjectState::Missing(m) => (m.why.clone(), Some(m.tried)),
            ObjectState::Unloaded => return Ok(()),
        };
        if tried.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return Err(refused(&why, ""));
        }
        let now = Instant::now();
        self.pipeline.settle(&self.runtime, self.key.id).await;
        self.wal.join().await;
        let live = self.object.unload();
        self.object = ObjectState::Missing(Missing {
            why: why.clone(),
            tried: now,
        });
        if let Some(l) = live {
            crate::sys::blocking(|| drop(l));
        }
        let data_dir = self.runtime.config().data_dir.clone();
        let (class, id) = (self.key.class.clone(), self.key.id);
        match crate::sys::blocking(|| crate::commitlog::recovery::replay_one(&data_dir, &class, id))
        {
            Ok(applied) => {
                self.runtime.log().unflushed().remove(id);
                tracing::info!(
                    applied,
                    "caught the object's file up from the commit log; serving again"
                );
                self.object = ObjectState::Unloaded;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch the object's file up from the commit log yet");
                Err(refused(&why, &format!("; {e}")))
            }
        }
    }
}
