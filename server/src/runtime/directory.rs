//! The directory: object id → the mailbox of its live actor, or the
//! tombstone of one that is stopping. Sending a command finds the live
//! mailbox or starts an actor.
//!
//! Architecture Invariant: at most one actor per id. An actor that stops
//! (idle, or its object failed to start) first replaces its `Live` slot with
//! a `Stopping` tombstone ([`Runtime::mark_stopping`]), then closes its
//! mailbox, runs what was already queued, closes its database and removes
//! the tombstone ([`Runtime::remove_stopped`]). A sender that finds a
//! tombstone, or a closed mailbox not yet replaced by one, waits for it
//! before starting a new actor. Slots carry the actor's generation, so a
//! stopping actor never removes its successor's slot.

use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use roost_protocol::{ErrorCode, ErrorDetail};
use tokio::sync::{mpsc, watch};

use super::{actor, error, Command, Runtime};
use crate::id::{ObjectId, ObjectKey};

/// One id's entry in the directory.
pub(super) enum Slot {
    Live {
        generation: u64,
        tx: mpsc::Sender<Command>,
    },
    /// The actor of `generation` is finishing; wait until `done` closes.
    Stopping {
        generation: u64,
        done: watch::Receiver<()>,
    },
}

impl Slot {
    fn generation(&self) -> u64 {
        match self {
            Slot::Live { generation, .. } | Slot::Stopping { generation, .. } => *generation,
        }
    }
}

impl Runtime {
    /// Delivers a command to the object's mailbox, starting its actor if needed.
    /// Fails at once with `overloaded` when the mailbox is full.
    pub(crate) async fn send(&self, key: &ObjectKey, mut cmd: Command) -> Result<(), ErrorDetail> {
        // `mailbox` refuses unknown classes.
        loop {
            let tx = self.mailbox(key).await?;
            match tx.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics().error("overloaded");
                    return Err(error(
                        ErrorCode::Overloaded,
                        format!(
                            "object mailbox is full ({} queued events); retry later",
                            self.config().mailbox_depth
                        ),
                    ));
                }
                // The actor closed its mailbox on its way out; it has left a
                // tombstone, so the next lookup waits for it to finish.
                Err(mpsc::error::TrySendError::Closed(back)) => cmd = back,
            }
        }
    }

    /// Like `send`, but waits (up to 5 s) for room in a full mailbox: a socket
    /// that sends faster than its object keeps up is slowed down, not dropped.
    pub(crate) async fn send_wait(
        &self,
        key: &ObjectKey,
        mut cmd: Command,
    ) -> Result<(), ErrorDetail> {
        // `mailbox` refuses unknown classes.
        loop {
            let tx = self.mailbox(key).await?;
            match tokio::time::timeout(Duration::from_secs(5), tx.send(cmd)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(mpsc::error::SendError(back))) => cmd = back,
                Err(_) => {
                    self.metrics().error("overloaded");
                    return Err(error(
                        ErrorCode::Overloaded,
                        "object mailbox stayed full for 5 s; retry later",
                    ));
                }
            }
        }
    }

    /// The mailbox of the object's live actor, starting one if there is none.
    async fn mailbox(&self, key: &ObjectKey) -> Result<mpsc::Sender<Command>, ErrorDetail> {
        loop {
            let waiting = match self.0.directory.get(&key.id).as_deref() {
                Some(Slot::Live { tx, .. }) if !tx.is_closed() => return Ok(tx.clone()),
                Some(Slot::Stopping { done, .. }) => Some(done.clone()),
                Some(Slot::Live { .. }) => {
                    // Closed but not yet replaced: the actor is about to leave a tombstone.
                    tokio::task::yield_now().await;
                    continue;
                }
                None => None,
            };
            if let Some(mut done) = waiting {
                let _ = done.changed().await;
                continue;
            }
            if let Some(tx) = self.start_actor(key)? {
                return Ok(tx);
            }
        }
    }

    /// Starts an actor for an id with no slot and returns its mailbox;
    /// `None` if another sender filled the slot first (look again).
    fn start_actor(&self, key: &ObjectKey) -> Result<Option<mpsc::Sender<Command>>, ErrorDetail> {
        if self.0.shutting_down.load(Ordering::Acquire) {
            return Err(error(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        let Some(factory) = self.registry().get(&key.class) else {
            return Err(error(
                ErrorCode::UnknownClass,
                format!("no class named `{}`", key.class),
            ));
        };
        let alive = self
            .0
            .alive_tx
            .lock()
            .map_err(|_| error(ErrorCode::Internal, "runtime lock poisoned"))?
            .clone();
        let Some(alive) = alive else {
            return Err(error(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        };
        match self.0.directory.entry(key.id) {
            Entry::Occupied(_) => Ok(None),
            Entry::Vacant(slot) => {
                let generation = self.0.next_generation.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = mpsc::channel(self.config().mailbox_depth);
                slot.insert(Slot::Live {
                    generation,
                    tx: tx.clone(),
                });
                factory.spawn(actor::ActorArgs {
                    key: key.clone(),
                    generation,
                    rx,
                    runtime: self.clone(),
                    _alive: alive,
                });
                Ok(Some(tx))
            }
        }
    }

    /// Called by a stopping actor before it closes its mailbox: later senders
    /// wait on `done` instead of starting a second instance.
    pub(crate) fn mark_stopping(&self, id: ObjectId, generation: u64, done: watch::Receiver<()>) {
        if let Some(mut slot) = self.0.directory.get_mut(&id) {
            if matches!(&*slot, Slot::Live { generation: g, .. } if *g == generation) {
                *slot = Slot::Stopping { generation, done };
            }
        }
    }

    /// Called by an actor after its last batch, once its database is closed.
    pub(crate) fn remove_stopped(&self, id: ObjectId, generation: u64) {
        self.0
            .directory
            .remove_if(&id, |_, slot| slot.generation() == generation);
    }

    /// Drops every live slot's sender (each actor then drains its mailbox
    /// and exits); tombstones stay until their actors finish.
    pub(super) fn drop_live_slots(&self) {
        self.0
            .directory
            .retain(|_, slot| matches!(slot, Slot::Stopping { .. }));
    }
}
