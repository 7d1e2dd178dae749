//! The pipeline of an object's in-flight batches: committed, not yet known
//! durable, their outputs held back by the output gate.
//!
//! Architecture Invariant (output gate, in order): outputs leave strictly in
//! batch order, each only once its own batch — and so every earlier one —
//! is durable. Batches that wrote nothing, and console `Flush` answers,
//! still queue behind earlier ones: what they read may not be durable yet.
//! A batch whose record went to the log with its outputs (`by_log`) has
//! them released by the log's writer thread itself; the actor lets that
//! happen only while no earlier batch's outputs still wait here
//! ([`Pipeline::all_by_log`]).
//!
//! Architecture Invariant (prefix durability): if a batch's durability
//! fails, it and every later in-flight batch fail, and the object restarts
//! from storage.
//!
//! Pipelining: while batch N waits for its fsync the actor may run N+1 (up
//! to [`MAX_IN_FLIGHT`]) once [`PIPELINE_AFTER`] commands are queued; with
//! fewer it waits for N's fsync and takes them all in one batch — fewer,
//! larger commits under load, the same latency when idle.

use std::collections::VecDeque;
use std::time::Instant;

use roost_protocol::{ErrorCode, ErrorDetail};
use tokio::sync::oneshot;

use super::output::{self, Output, Reply};
use super::{error, Runtime};
use crate::commitlog::LogError;
use crate::id::ObjectId;

/// Most batches an object may have committed but not yet durable.
const MAX_IN_FLIGHT: usize = 4;
/// Queued commands that start another batch while one is in flight.
const PIPELINE_AFTER: usize = 16;

/// The log's answer: resolves when the log has fsynced a batch.
pub(super) type Ack = oneshot::Receiver<Result<(), LogError>>;

/// A committed batch whose outputs wait for durability.
pub(super) struct InFlight {
    /// Resolves when the log has fsynced the batch; `None` if there was
    /// nothing to make durable (or it already is).
    pub(super) ack: Option<Ack>,
    pub(super) outputs: Vec<Output>,
    pub(super) committed_at: Instant,
    pub(super) events: usize,
    pub(super) wrote: bool,
    /// The log's writer releases (or fails) the outputs itself once the
    /// batch is durable; `outputs` is empty.
    pub(super) by_log: bool,
}

impl InFlight {
    /// A reply that waits in the pipeline behind every earlier batch, with
    /// no batch of its own.
    pub(super) fn answer(reply: Reply, result: Result<serde_json::Value, ErrorDetail>) -> InFlight {
        InFlight {
            ack: None,
            outputs: vec![Output::Reply(reply, result)],
            committed_at: Instant::now(),
            events: 0,
            wrote: false,
            by_log: false,
        }
    }

    /// Releases the outputs of a batch that is durable.
    fn release(self, runtime: &Runtime, object: ObjectId) {
        if self.by_log {
            // The log's writer released (and counted) them already.
            return;
        }
        if self.wrote {
            count_durable(runtime, self.committed_at, self.events);
        }
        output::release(runtime, object, self.outputs);
    }
}

/// Counts a durable batch that wrote.
pub(super) fn count_durable(runtime: &Runtime, committed_at: Instant, events: usize) {
    let metrics = runtime.metrics();
    metrics.commit_latency.observe(committed_at.elapsed());
    metrics
        .commits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics
        .committed_events
        .fetch_add(events as u64, std::sync::atomic::Ordering::Relaxed);
}

/// What a batch's outputs become when it could not be made durable: in a
/// cluster, a retryable `object_moved` when another node took the object.
pub(super) fn durability_error(e: &LogError) -> ErrorDetail {
    match e {
        LogError::Moved(why) => error(ErrorCode::ObjectMoved, why.clone()),
        e => error(
            ErrorCode::ObjectBroken,
            format!("batch could not be made durable: {e}; the object restarts from storage"),
        ),
    }
}

/// The in-flight batches of one object, oldest first.
#[derive(Default)]
pub(super) struct Pipeline {
    batches: VecDeque<InFlight>,
}

impl Pipeline {
    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Whether the actor may take a new command while the oldest batch
    /// waits for its fsync, with `queued` commands in the mailbox.
    pub(super) fn accepting(&self, queued: usize) -> bool {
        self.batches.is_empty() || (self.batches.len() < MAX_IN_FLIGHT && queued >= PIPELINE_AFTER)
    }

    /// Whether the log may release the next batch's outputs itself: only if
    /// no earlier batch's outputs still wait here (they must leave first).
    pub(super) fn all_by_log(&self) -> bool {
        self.batches.iter().all(|f| f.by_log)
    }

    pub(super) fn push(&mut self, batch: InFlight) {
        self.batches.push_back(batch);
    }

    /// Releases the oldest batches as long as they wait for no fsync.
    pub(super) fn release_ready(&mut self, runtime: &Runtime, object: ObjectId) {
        while self.batches.front().is_some_and(|f| f.ack.is_none()) {
            if let Some(done) = self.batches.pop_front() {
                done.release(runtime, object);
            }
        }
    }

    /// The oldest batch's fsync, if it waits for one.
    pub(super) fn front_ack(&mut self) -> Option<&mut Ack> {
        self.batches.front_mut().and_then(|f| f.ack.as_mut())
    }

    /// The oldest batch's fsync answered: releases its outputs, or — if it
    /// failed — fails them and every later batch's. Returns false if the
    /// batch failed: the object must restart from storage.
    pub(super) fn land_front(
        &mut self,
        result: Result<(), LogError>,
        runtime: &Runtime,
        object: ObjectId,
    ) -> bool {
        let Some(done) = self.batches.pop_front() else {
            return true;
        };
        match result {
            Ok(()) => {
                done.release(runtime, object);
                true
            }
            Err(e) => {
                runtime.metrics().error("log_failed");
                tracing::error!(error = %e, "batch could not be made durable");
                let err = durability_error(&e);
                output::fail(runtime, object, done.outputs, &err);
                for later in self.batches.drain(..) {
                    output::fail(runtime, object, later.outputs, &err);
                }
                false
            }
        }
    }

    /// Waits for every in-flight batch's fsync and releases (or fails) its
    /// outputs, in order.
    pub(super) async fn settle(&mut self, runtime: &Runtime, object: ObjectId) {
        while let Some(mut f) = self.batches.pop_front() {
            let result = match f.ack.take() {
                Some(ack) => ack.await.unwrap_or(Err(LogError::Closed)),
                None => Ok(()),
            };
            match result {
                Ok(()) => f.release(runtime, object),
                Err(e) => {
                    let err = durability_error(&e);
                    output::fail(runtime, object, f.outputs, &err);
                }
            }
        }
    }
}
