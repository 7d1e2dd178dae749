//! One batch, from `BEGIN` to the hand-off to durability:
//! 1. `begin_batch`: a savepoint in the object's open transaction, and the
//!    capture of its row changes.
//! 2. Each event in its own savepoint ([`events`](super::events)); a
//!    failure that breaks the batch rolls it all back.
//! 3. The object's `before_commit`, outside every event's savepoint.
//! 4. `finish_batch` (the captured changes, `seq` stamped); an alarm set in
//!    the batch made durable in the alarm index.
//! 5. End the batch inside the open transaction (`end_batch`; the actor
//!    commits it to the file later), or `COMMIT` now with no commit interval.
//! 6. Make it durable: its record to the commit log, or — a schema change,
//!    an unattributable change, `--durability file` — fsync the object's
//!    own files.
//!
//! Architecture Invariant (output gate): no output leaves here. A batch
//! that committed is handed back as an `InFlight` whose outputs wait for
//! its durability; one that failed has every output failed (replies become
//! `object_broken` errors) and every command not run answered with the
//! error, and the actor restarts the object from storage.
//! Architecture Invariant: an alarm set in the batch is in the durable index
//! before the batch commits (the index may be early, never late or missing).

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use roost_protocol::{ErrorCode, ErrorDetail};

use super::events::{run_event, EventFailure};
use super::output::{self, AlarmUpdate, Output};
use super::pipeline::{count_durable, Ack, InFlight};
use super::state::Live;
use super::{error, Command, Runtime};
use crate::commitlog::record::Record;
use crate::commitlog::LogError;
use crate::object::DurableObject;
use crate::storage::{BatchChanges, StorageError};

/// What happened to a batch.
pub(super) enum BatchEnd {
    /// Committed; outputs wait in the pipeline (or with the log's writer).
    Committed(InFlight),
    /// Commit failed or a handler panicked: outputs already became errors
    /// and the object must restart from storage.
    Broken,
}

/// Runs the commands of `cmds` as one batch. Commands not run (after a
/// failure) are answered with the batch's error; `cmds` is left empty.
/// `by_log`: the log's writer may release the outputs itself.
pub(super) async fn run_batch<T: DurableObject>(
    l: &mut Live<T>,
    runtime: &Runtime,
    cmds: &mut Vec<Command>,
    by_log: bool,
) -> BatchEnd {
    let events = cmds.len();
    runtime
        .metrics()
        .events
        .fetch_add(events as u64, std::sync::atomic::Ordering::Relaxed);
    let mut batch = Batch {
        l,
        runtime,
        outputs: Vec::with_capacity(events),
    };
    if let Err(e) = batch.l.ctx.storage.begin_batch_of(events) {
        let give_up = GiveUp::new(None, "cannot begin transaction", e);
        return batch.give_up(give_up, cmds);
    }
    if let Err(e) = batch.run_events(cmds).await {
        batch.fail_all(cmds, e);
        return BatchEnd::Broken;
    }
    let changes = match batch.end().await {
        Ok(changes) => changes,
        Err(give_up) => return batch.give_up(give_up, cmds),
    };
    let committed_at = Instant::now();
    let wrote = changes.is_some();
    let ack = match batch.make_durable(changes, by_log, committed_at, events) {
        Ok(ack) => ack,
        Err(give_up) => return batch.give_up(give_up, cmds),
    };
    BatchEnd::Committed(InFlight {
        by_log: by_log && ack.is_some(),
        ack,
        outputs: batch.outputs,
        committed_at,
        events,
        wrote,
    })
}

/// One batch as it runs: the loaded object, the runtime, and the outputs
/// of its events so far.
struct Batch<'a, T> {
    l: &'a mut Live<T>,
    runtime: &'a Runtime,
    outputs: Vec<Output>,
}

/// Why a batch is given up, its storage already rolled back (or, for a
/// durability failure, committed but never acknowledged).
struct GiveUp {
    /// The error counter to raise and log under, if it is one to count.
    kind: Option<&'static str>,
    what: &'static str,
    error: String,
}

impl GiveUp {
    fn new(kind: Option<&'static str>, what: &'static str, e: impl std::fmt::Display) -> GiveUp {
        GiveUp {
            kind,
            what,
            error: e.to_string(),
        }
    }
}

fn broken(what: &str, e: &dyn std::fmt::Display) -> ErrorDetail {
    error(
        ErrorCode::ObjectBroken,
        format!("{what}: {e}; the object restarts from storage"),
    )
}

impl<T: DurableObject> Batch<'_, T> {
    /// Fails every output so far and every command not run with `e`.
    fn fail_all(self, cmds: &mut Vec<Command>, e: ErrorDetail) {
        let key = &self.l.ctx.key;
        output::fail(self.runtime, key.id, self.outputs, &e);
        for cmd in cmds.drain(..) {
            cmd.fail(self.runtime, key, e.clone());
        }
    }

    /// Gives up on the batch: counts and logs the failure if it is one to
    /// count, then fails every output and every command not run.
    fn give_up(self, give_up: GiveUp, cmds: &mut Vec<Command>) -> BatchEnd {
        let GiveUp { kind, what, error } = give_up;
        if let Some(kind) = kind {
            self.runtime.metrics().error(kind);
            tracing::error!(error = %error, "{what}");
        }
        self.fail_all(cmds, broken(what, &error));
        BatchEnd::Broken
    }

    /// Rolls the batch back and gives up on it.
    fn undo(
        &mut self,
        kind: Option<&'static str>,
        what: &'static str,
        e: impl std::fmt::Display,
    ) -> GiveUp {
        self.l.ctx.storage.rollback();
        GiveUp::new(kind, what, e)
    }

    /// Runs each command as an event in its savepoint. On a failure that
    /// breaks the batch, rolls it all back, leaves the commands not run in
    /// `cmds` and returns the batch's error.
    async fn run_events(&mut self, cmds: &mut Vec<Command>) -> Result<(), ErrorDetail> {
        let mut queue = std::mem::take(cmds).into_iter();
        let mut failure = None;
        while let Some(cmd) = queue.next() {
            if let Err(f) = run_event(self.l, self.runtime, cmd, &mut self.outputs).await {
                failure = Some(f);
                cmds.extend(queue);
                break;
            }
        }
        let Some(failure) = failure else {
            return Ok(());
        };
        // Undo the whole batch: its in-memory state cannot be trusted.
        self.l.ctx.storage.rollback();
        Err(match failure {
            EventFailure::Broken(msg, own) => {
                self.outputs.extend(own);
                broken("storage failed during an event", &msg)
            }
            EventFailure::Undone(msg, own) => {
                output::release(self.runtime, self.l.ctx.key.id, vec![own]);
                broken("another event's storage error undid this batch", &msg)
            }
            EventFailure::Panicked => error(
                ErrorCode::ObjectBroken,
                "an event in this batch panicked; nothing was saved",
            ),
        })
    }

    /// Ends the batch after its events: `before_commit`, the captured
    /// changes, the alarm index, and the commit (or end) of the batch in the
    /// open transaction. Returns the changes, `None` if nothing was written.
    async fn end(&mut self) -> Result<Option<BatchChanges>, GiveUp> {
        self.before_commit()?;
        let changes = match self.l.ctx.storage.finish_batch() {
            Ok(changes) => changes,
            Err(e) => return Err(self.undo(Some("commit_failed"), "cannot finish batch", e)),
        };
        self.index_alarm().await?;
        self.commit(changes.is_some())?;
        Ok(changes)
    }

    /// The object's own end of the batch, outside every event's savepoint.
    fn before_commit(&mut self) -> Result<(), GiveUp> {
        self.l.ctx.outputs.clear();
        let ctx = &mut self.l.ctx;
        let object_hook = &mut self.l.object;
        match std::panic::catch_unwind(AssertUnwindSafe(|| object_hook.before_commit(ctx))) {
            Ok(Ok(())) => {
                self.outputs.append(&mut self.l.ctx.outputs);
                Ok(())
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "it panicked".to_owned(),
                };
                let what = "the batch's before_commit failed";
                Err(self.undo(Some("handler_error"), what, why))
            }
        }
    }

    /// An alarm set in this batch must be in the durable index before the
    /// batch commits (the index may be early, never late or missing).
    async fn index_alarm(&mut self) -> Result<(), GiveUp> {
        if !std::mem::take(&mut self.l.ctx.alarm_touched) {
            return Ok(());
        }
        let next = match self.l.ctx.storage.alarm() {
            Ok(next) => next,
            Err(e) => return Err(self.undo(None, "cannot read the alarm", e)),
        };
        let key = self.l.ctx.key.clone();
        if let Some(at) = next {
            let alarms = self.runtime.alarms();
            if let Err(e) = alarms.ensure_indexed(self.runtime, &key, at).await {
                return Err(self.undo(None, "cannot index the alarm", e));
            }
        }
        self.outputs.push(Output::Alarm(AlarmUpdate {
            key,
            next,
            retry: 0,
            reindex: false,
            attempt: None,
        }));
        Ok(())
    }

    /// Ends the batch in the open transaction — the actor commits that to
    /// the file later (`flush`) — or commits now with no commit interval.
    /// A test's fault hook may make it fail.
    fn commit(&mut self, wrote: bool) -> Result<(), GiveUp> {
        let config = self.runtime.config();
        let key = &self.l.ctx.key;
        let injected = config
            .fault
            .as_ref()
            .is_some_and(|hook| hook(&key.class, &key.name));
        let committed = if injected {
            Err(StorageError::Injected(
                "commit failure injected by test hook".into(),
            ))
        } else if config.file_commit_interval.is_zero() {
            self.l.ctx.storage.commit(wrote)
        } else {
            self.l.ctx.storage.end_batch(wrote)
        };
        committed.map_err(|e| self.undo(Some("commit_failed"), "commit failed", e))
    }

    /// Starts making a committed batch durable. Returns the log's ack, or
    /// `None` if nothing was written or the object's files were fsynced.
    fn make_durable(
        &mut self,
        changes: Option<BatchChanges>,
        by_log: bool,
        committed_at: Instant,
        events: usize,
    ) -> Result<Option<Ack>, GiveUp> {
        let durable = |e: &dyn std::fmt::Display| {
            GiveUp::new(Some("log_failed"), "batch could not be made durable", e)
        };
        let Some(changes) = changes else {
            return Ok(None);
        };
        let snapshot_due = self
            .runtime
            .cluster()
            .is_some_and(|c| c.wants_snapshot(&self.l.ctx.key.id));
        if changes.needs_file_sync()
            || snapshot_due
            || self.runtime.config().durability == crate::config::Durability::File
        {
            let storage = &mut self.l.ctx.storage;
            crate::sys::blocking(|| storage.sync_files()).map_err(|e| durable(&e))?;
            // In a cluster the file itself goes to the replicated log.
            if let Some(cluster) = self.runtime.cluster() {
                let (key, seq) = (&self.l.ctx.key, self.l.ctx.storage.commit_seq());
                let path =
                    crate::id::object_path(&self.runtime.config().data_dir, &key.class, key.id);
                crate::sys::blocking(|| cluster.snapshot_blocking(key, seq, &path))
                    .map_err(|e| durable(&e))?;
            }
            return Ok(None);
        }
        let record = Record {
            class: self.l.ctx.key.class.clone(),
            id: self.l.ctx.key.id,
            seq: self.l.ctx.storage.commit_seq(),
            changeset: changes.changeset,
        };
        let submitted = if by_log {
            let outputs = std::mem::take(&mut self.outputs);
            submit_releasing(self.runtime, record, outputs, committed_at, events)
        } else {
            self.runtime.submit(record, None)
        };
        submitted.map(Some).map_err(|e| durable(&e))
    }
}

/// Submits a batch's record with its outputs: the log's writer releases
/// them the moment the batch is durable (or fails them), so the object's
/// task need not be scheduled first.
fn submit_releasing(
    runtime: &Runtime,
    record: Record,
    outputs: Vec<Output>,
    committed_at: Instant,
    events: usize,
) -> Result<Ack, LogError> {
    let object = record.id;
    let rt = runtime.clone();
    runtime.submit(
        record,
        Some(Box::new(move |result| match result {
            Ok(()) => {
                count_durable(&rt, committed_at, events);
                output::release(&rt, object, outputs);
            }
            Err(e) => {
                let err = super::pipeline::durability_error(&e);
                output::fail(&rt, object, outputs, &err);
            }
        })),
    )
}
