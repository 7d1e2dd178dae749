//! One object's actor: the task that alone owns the object's state, its
//! `Ctx` and its SQLite connection, and runs its events one at a time.
//!
//! The life of a batch (ARCHITECTURE.md, "The life of an event"):
//! 1. Wait for a command; take up to `max_batch` more that are already
//!    queued ([`Actor::gather`]); a `Delete` or `Flush` ends the gathering
//!    and runs right after the batch.
//! 2. Run them as one batch ([`batch`](super::batch)): each event in its
//!    own savepoint, then `before_commit`, then the commit.
//! 3. Make the batch durable — through the shared commit log (one fsync for
//!    many objects), or, if it changed the schema, by fsyncing the object's
//!    own files.
//! 4. Only then release the outputs ([`pipeline`](super::pipeline)): for a
//!    batch that went through the log, the log's writer thread releases them
//!    itself right after the fsync (`submit_then`), unless an earlier
//!    batch's outputs are still held here; those leave from this task.
//!
//! Architecture Invariant (output gate): no output of a batch leaves before
//! the batch is durable. If the commit or the durability step fails, every
//! output of the batch becomes an error and the object restarts from storage.
//!
//! Architecture Invariant: an object's log records are submitted in `seq`
//! order and the log makes them durable in submission order, so an object's
//! durable history is always a prefix of its committed batches. If any
//! batch's durability fails, it and every later in-flight batch fail and the
//! object restarts from storage.
//!
//! The actor's states ([`Phase`], [`ObjectState`]) are described in
//! [`state`](super::state); this file holds the loop that moves between
//! them: [`Actor::wait`] decides what the actor waits for, [`Actor::step`]
//! dispatches what woke it.

use std::sync::Arc;
use std::time::Duration;

use roost_protocol::{ErrorCode, ErrorDetail};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::batch::{run_batch, BatchEnd};
use super::command::DeleteReply;
use super::lifecycle;
use super::pipeline::{InFlight, Pipeline};
use super::state::{ObjectState, Phase};
use super::unwritten;
use super::{error, Command, Reply, Runtime};
use crate::commitlog::LogError;
use crate::id::{object_path, ObjectKey};
use crate::metrics::Metrics;
use crate::object::DurableObject;
use crate::storage::wal::WalKeeper;

pub(crate) struct ActorArgs {
    pub key: ObjectKey,
    pub generation: u64,
    pub rx: mpsc::Receiver<Command>,
    pub runtime: Runtime,
    /// Held for the actor's whole life; the runtime's shutdown waits for it.
    pub _alive: mpsc::Sender<()>,
}

/// One object's actor.
pub(super) struct Actor<T> {
    pub(super) key: ObjectKey,
    /// Tells this actor's directory slots from a successor's.
    generation: u64,
    pub(super) runtime: Runtime,
    pub(super) metrics: Arc<Metrics>,
    /// The mailbox; the directory's slot holds its sender.
    rx: mpsc::Receiver<Command>,
    /// Given to the directory's tombstone when the actor stops; its sender,
    /// held by [`run`], is dropped once the actor is gone.
    done: watch::Receiver<()>,
    phase: Phase,
    pub(super) object: ObjectState<T>,
    pub(super) pipeline: Pipeline,
    /// Checkpoints the object's WAL in the background.
    pub(super) wal: WalKeeper,
    /// The batch being gathered (its buffer is reused).
    batch: Vec<Command>,
    idle: Duration,
    /// Whether it went quiet since its last command (`Wake::Quiet`).
    quiet: bool,
    file_commit: Duration,
    max_batch: usize,
    /// Held for the actor's whole life; the runtime's shutdown waits for it.
    _alive: mpsc::Sender<()>,
}

/// What woke the actor.
enum Wake {
    Command(Command),
    /// The mailbox is closed, or every sender is gone, and it is empty.
    MailboxEnded,
    /// The oldest in-flight batch's fsync answered.
    Durable(Result<(), LogError>),
    /// The open transaction has been open for the file-commit interval.
    CommitDue,
    /// Idle while the file misses batches: try to catch it up.
    CatchUpDue,
    /// Quiet for `QUIET` (and loaded for a longer idle timeout): close the
    /// connection (`Storage::suspend`).
    Quiet,
    /// Idle for the idle timeout: evict.
    Idle,
}

/// A loaded object with no event for this long closes its connection
/// (`Storage::suspend`), keeping its value and sockets; it is evicted at
/// the idle timeout as before.
const QUIET: Duration = Duration::from_secs(2);

impl From<Option<Command>> for Wake {
    fn from(cmd: Option<Command>) -> Wake {
        cmd.map_or(Wake::MailboxEnded, Wake::Command)
    }
}

/// The command that ended a gathered batch; it runs right after the batch.
enum After {
    Nothing,
    Flush(Reply),
    Delete(DeleteReply),
}

pub(crate) async fn run<T: DurableObject>(args: ActorArgs) {
    let span = tracing::info_span!("object", class = %args.key.class, id = %args.key.id);
    run_actor::<T>(args).instrument(span).await;
}

async fn run_actor<T: DurableObject>(args: ActorArgs) {
    let (done_tx, done_rx) = watch::channel(());
    let mut actor = Actor::<T>::new(args, done_rx);
    actor
        .metrics
        .live_objects
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    while actor.phase != Phase::Stopping {
        actor.step().await;
    }
    actor.stop(done_tx).await;
}

impl<T: DurableObject> Actor<T> {
    fn new(args: ActorArgs, done: watch::Receiver<()>) -> Actor<T> {
        let ActorArgs {
            key,
            generation,
            rx,
            runtime,
            _alive,
        } = args;
        let config = runtime.config();
        let wal = WalKeeper::new(
            object_path(&config.data_dir, &key.class, key.id),
            config.storage.wal_checkpoint_bytes,
            [key.id.0[0], key.id.0[1]],
        );
        let max_batch = config.max_batch.max(1);
        Actor {
            generation,
            metrics: runtime.metrics().clone(),
            rx,
            done,
            phase: Phase::Running,
            object: ObjectState::Unloaded,
            pipeline: Pipeline::default(),
            wal,
            batch: Vec::with_capacity(max_batch),
            idle: config.idle_timeout,
            quiet: false,
            file_commit: config.file_commit_interval,
            max_batch,
            _alive,
            key,
            runtime,
        }
    }

    /// Releases what is ready, waits for the next thing to do, does it.
    async fn step(&mut self) {
        self.pipeline.release_ready(&self.runtime, self.key.id);
        match self.wait().await {
            Wake::Command(cmd) => {
                self.quiet = false;
                self.object.resume_storage();
                self.handle(cmd).await;
            }
            Wake::MailboxEnded if self.pipeline.is_empty() => self.phase = Phase::Stopping,
            // Finish the in-flight batches, then stop.
            Wake::MailboxEnded => self.phase = Phase::Draining,
            Wake::Durable(result) => {
                if !self.pipeline.land_front(result, &self.runtime, self.key.id) {
                    self.object.retire(&self.metrics);
                }
            }
            Wake::CommitDue => self.object.flush(&self.metrics),
            Wake::CatchUpDue => {
                let _ = self.catch_up().await;
            }
            Wake::Quiet => {
                // A background WAL checkpoint finishes first.
                self.wal.join().await;
                self.object.suspend_storage();
                self.quiet = true;
            }
            Wake::Idle => self.evict(),
        }
    }

    /// What the actor waits for: while the oldest in-flight batch waits for
    /// its fsync, that fsync — and a new command only once `PIPELINE_AFTER`
    /// are queued (its outputs could not leave earlier anyway, and what
    /// arrives meanwhile joins it); when draining, the next command; when
    /// running, the next command or a timer.
    async fn wait(&mut self) -> Wake {
        let accepting = self.pipeline.accepting(self.rx.len());
        if let Some(ack) = self.pipeline.front_ack() {
            return tokio::select! {
                biased;
                result = ack => Wake::Durable(result.unwrap_or(Err(LogError::Closed))),
                cmd = self.rx.recv(), if accepting => Wake::from(cmd),
            };
        }
        if self.phase == Phase::Draining {
            return Wake::from(self.rx.recv().await);
        }
        // An open transaction is committed to the file once it has been
        // open for the commit interval, or when the object goes idle.
        // Before the idle timeout, a quiet object closes its connection once
        // (`QUIET` into the wait; the rest of it follows).
        let open_for = self.object.open_for();
        let goes_quiet = !self.quiet && self.idle > QUIET && !self.object.is_behind();
        let wait = match open_for {
            Some(t) => self.file_commit.saturating_sub(t).min(self.idle),
            None if goes_quiet => QUIET,
            None if self.quiet => self.idle.saturating_sub(QUIET),
            None => self.idle,
        };
        match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(cmd) => Wake::from(cmd),
            Err(_) if open_for.is_some() => Wake::CommitDue,
            // Its file refused batches the log holds: never evicted (a new
            // start would read the file) until caught up.
            Err(_) if self.object.is_behind() => Wake::CatchUpDue,
            Err(_) if goes_quiet => Wake::Quiet,
            Err(_) => Wake::Idle,
        }
    }

    /// Running → Draining: leave a tombstone, close the mailbox, then run
    /// whatever was queued before it closed.
    fn close_mailbox(&mut self) {
        self.runtime
            .mark_stopping(self.key.id, self.generation, self.done.clone());
        self.rx.close();
        self.phase = Phase::Draining;
    }

    fn evict(&mut self) {
        self.close_mailbox();
        self.metrics
            .evictions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!("evicting idle object");
    }

    /// One handler per kind of first command: a deletion runs alone, after
    /// everything before it; a console flush is answered in order; anything
    /// else starts a batch.
    async fn handle(&mut self, first: Command) {
        if !self.runtime.may_run(&self.key.id) {
            return self.moved(first);
        }
        match first {
            Command::Delete { reply } => self.delete(reply).await,
            Command::Flush { reply } => self.flush(reply).await,
            first => {
                let after = self.gather(first);
                self.run_gathered(after).await;
            }
        }
    }

    /// Answers a `Flush` (the admin console reads the file next) behind
    /// every earlier batch; an object whose file misses batches is caught
    /// up first, or the answer is its 507.
    async fn flush(&mut self, reply: Reply) {
        if self.object.is_behind() {
            if let Err(e) = self.catch_up().await {
                self.pipeline.push(InFlight::answer(reply, Err(e)));
                return;
            }
        }
        let answer = self.flush_for_console(reply);
        self.pipeline.push(answer);
    }

    /// Commits the open transaction to the file and answers `reply` with
    /// no batch of its own: the answer waits in the pipeline behind every
    /// earlier batch, so the console never reads what is not durable yet.
    fn flush_for_console(&mut self, reply: Reply) -> InFlight {
        if !self.object.is_lost() {
            self.object.flush(&self.metrics);
        }
        let result = match self.object.lost() {
            Some(why) => Err(error(
                ErrorCode::ObjectBroken,
                format!("the object's file refused its batches ({why}); a restart replays them"),
            )),
            None => Ok(serde_json::Value::Null),
        };
        InFlight::answer(reply, result)
    }

    /// Takes `first` and up to `max_batch − 1` commands already queued into
    /// the batch, stopping at a deletion or a flush.
    fn gather(&mut self, first: Command) -> After {
        self.batch.push(first);
        while self.batch.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(Command::Delete { reply }) => return After::Delete(reply),
                Ok(Command::Flush { reply }) => return After::Flush(reply),
                Ok(cmd) => self.batch.push(cmd),
                Err(_) => break,
            }
        }
        After::Nothing
    }

    /// Runs a gathered batch, then the flush or deletion that ended it.
    /// A file that misses acknowledged batches is caught up first (a batch
    /// never runs on a stale file); if it cannot be, the batch fails, and a
    /// deletion behind it still runs.
    async fn run_gathered(&mut self, after: After) {
        if self.object.is_behind() {
            if let Err(e) = self.catch_up().await {
                for cmd in self.batch.drain(..) {
                    cmd.fail(&self.runtime, &self.key, e.clone());
                }
                match after {
                    After::Nothing => {}
                    After::Flush(reply) => self.pipeline.push(InFlight::answer(reply, Err(e))),
                    After::Delete(reply) => self.delete(reply).await,
                }
                return;
            }
        }
        match self.load() {
            Ok(()) => {
                self.run_batch().await;
                match after {
                    After::Nothing => {}
                    After::Flush(reply) => {
                        let answer = self.flush_for_console(reply);
                        self.pipeline.push(answer);
                    }
                    After::Delete(reply) => self.delete(reply).await,
                }
            }
            Err(e) => self.start_failed(e, after),
        }
    }

    /// Cluster mode: another node owns the object now (or this node lost
    /// its lease). Answers the command with `object_moved`, unloads the
    /// object and stops; the edge routes what comes next to the owner.
    fn moved(&mut self, first: Command) {
        let e = error(
            ErrorCode::ObjectMoved,
            "another node owns the object now; retry",
        );
        match first {
            Command::Flush { reply } => self.pipeline.push(InFlight::answer(reply, Err(e))),
            Command::Delete { reply } => {
                let _ = reply.send(Err(e));
            }
            cmd => cmd.fail(&self.runtime, &self.key, e),
        }
        self.object.retire(&self.metrics);
        if self.phase == Phase::Running {
            self.close_mailbox();
        }
    }

    /// Starts the object if it is not loaded.
    fn load(&mut self) -> Result<(), ErrorDetail> {
        if self.object.live().is_none() {
            let l = crate::sys::blocking(|| lifecycle::start::<T>(&self.key, &self.runtime))?;
            self.object = ObjectState::Loaded(l);
        }
        Ok(())
    }

    /// The object failed to start: answers the batch with the error (and a
    /// flush behind it), and stops the actor (Running → Draining): the next
    /// command starts a fresh attempt. A deletion behind the batch is
    /// dropped unanswered: its caller sees the object stop first.
    fn start_failed(&mut self, e: ErrorDetail, after: After) {
        self.metrics.error("constructor_failed");
        tracing::error!(error = %e.message, "object failed to start");
        for cmd in self.batch.drain(..) {
            cmd.fail(&self.runtime, &self.key, e.clone());
        }
        if let After::Flush(reply) = after {
            let answer = self.flush_for_console(reply);
            self.pipeline.push(answer);
        }
        self.close_mailbox();
    }

    /// Runs the gathered batch on the loaded object and keeps it in flight,
    /// or retires the object if the batch broke.
    async fn run_batch(&mut self) {
        let Some(l) = self.object.live_mut() else {
            return;
        };
        self.wal.before_batch(&mut l.ctx.storage, &self.metrics);
        // The log may release this batch's outputs itself only if no earlier
        // batch's outputs still wait here: they must leave first.
        let by_log = self.pipeline.all_by_log();
        match run_batch(l, &self.runtime, &mut self.batch, by_log).await {
            BatchEnd::Committed(f) => {
                if f.wrote {
                    self.wal.after_commit(&mut l.ctx.storage, &self.metrics);
                }
                self.pipeline.push(f);
                if l.ctx
                    .storage
                    .open_for()
                    .is_some_and(|t| t >= self.file_commit)
                {
                    self.object.flush(&self.metrics);
                }
            }
            BatchEnd::Broken => {
                if self.object.live().is_some() && !self.object.is_lost() {
                    tracing::warn!("object broken; restarting from storage");
                }
                self.object.retire(&self.metrics);
            }
        }
    }

    /// Stopping: commits the open transaction to the file, closes the
    /// object — removing it if it was never written (`unwritten.rs`) — and
    /// removes the directory's slot.
    async fn stop(mut self, done_tx: watch::Sender<()>) {
        self.wal.join().await;
        self.object.flush(&self.metrics);
        let removable = unwritten::removable(&self.runtime, &self.key, &self.object);
        lifecycle::close(self.object.unload());
        if !(removable && unwritten::remove(&self.runtime, &self.key).await) {
            self.runtime
                .catalog()
                .touch(self.key.id, crate::catalog::now_ms());
            self.runtime.evicted(&self.key.class, self.key.id);
        }
        self.runtime.remove_stopped(self.key.id, self.generation);
        self.metrics
            .live_objects
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        drop(done_tx);
    }
}
