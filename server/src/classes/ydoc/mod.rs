//! `ydoc`: a Yjs document served over the y-websocket protocol
//! (`/v1/yjs/{doc}`) and HTTP (`/v1/yjs/{doc}/state`, `/update`).
//!
//! Each frame is read whole and each update a client sends is checked
//! (`roost_protocol::yjs`: bounded nesting, counts and clocks, before yrs
//! decodes it recursively) and decoded within its event (malformed → close
//! 1008 / HTTP 400, nothing stored). An update whose items name a parent by
//! id may fail to apply (the parent is not a type): it is applied at once,
//! alone (so is every update while structs are pending), and if it fails
//! the `Doc` is rebuilt from storage plus the batch's other updates and
//! only its sender is refused (1008 / 400); so is an update that would
//! leave a gap in a client's clocks (`gap`). Every other
//! update cannot fail to apply: the batch's are applied to the in-memory
//! `Doc` in one transaction and appended to the document's log as one row
//! when the batch ends (`before_commit`), or earlier if an event reads the
//! `Doc` or the log (`settle`, `store_pending`). Read paths (history, state,
//! read-only sockets and calls) never write. The
//! broadcast to the other clients and any sync reply are outputs, so they
//! leave only after the batch, with its row, is durable.
//! Awareness never reaches this class: the socket layer relays it.
//!
//! The document hibernates like any object: the `Doc` is dropped after
//! `--idle-timeout` and rebuilt from the newest snapshot plus the log.
//! A snapshot is written when the log since the newest one passes a size
//! threshold, and through the alarm once editing has stopped for
//! `compact_after` (5 s, plus up to a quarter more by the document's id) if
//! the log since the newest snapshot is worth one (`worth_a_snapshot`); the
//! same alarm drops what the history window no longer needs.
//! `compact_after` is shorter than the idle timeout, so the quiet document
//! is still in memory: waking an evicted document only to snapshot it
//! replays its whole log, and a hundred documents that stopped together did
//! that in one burst that took p99 at 100 x 5 past 250 ms.

pub mod store;

use std::time::Duration;

use roost_protocol::close::{self, clip_reason};
use roost_protocol::yjs::{self as wire, UpdateLimits};
use serde_json::{json, Value};
use yrs::sync::protocol::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::object::{FetchRequest, FetchResponse};
use crate::runtime::{Admission, AlarmInfo, ConnectRequest};
use crate::sockets::{SocketId, SocketMessage};
use crate::{Ctx, DurableObject, ObjectError, StorageError};

/// Tuning of `ydoc` documents.
#[derive(Debug, Clone)]
pub struct YdocConfig {
    /// Largest single update, in bytes (close 1009 / 413 beyond).
    pub max_update_bytes: usize,
    /// Deepest nesting of arrays and maps in an update's `Any` values and
    /// JSON texts (close 1008 / 400 beyond), checked before yrs decodes
    /// them by recursion.
    pub max_nesting: u32,
    /// Largest document (snapshot + log since), in bytes.
    pub max_doc_bytes: u64,
    /// How far back the document can be read (`state?at=`).
    pub retention: Duration,
    /// Snapshot once this many updates follow the newest snapshot...
    pub checkpoint_rows: u64,
    /// ...or once they weigh this much.
    pub checkpoint_bytes: u64,
    /// Snapshot (if worth it) and compact this long after editing stops;
    /// shorter than the idle timeout, so the document is still loaded.
    pub compact_after: Duration,
}

impl Default for YdocConfig {
    fn default() -> Self {
        YdocConfig {
            max_update_bytes: 1024 * 1024,
            max_nesting: roost_protocol::yjs::DEFAULT_MAX_NESTING,
            max_doc_bytes: 64 * 1024 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            checkpoint_rows: 2000,
            checkpoint_bytes: 4 * 1024 * 1024,
            compact_after: Duration::from_secs(5),
        }
    }
}

/// Roost extension: `[100, varUint(n)]`, the count of this client's
/// step-2/update messages that are durable (see protocol/PROTOCOL.md).
pub use roost_protocol::yjs::MSG_SAVED;

pub struct Ydoc {
    doc: Doc,
    stats: store::LogStats,
    /// Updates accepted in this batch and not yet in the log table.
    pending: store::Pending,
    /// Updates accepted (decoded) in this batch and not yet applied to
    /// `doc`: they are applied together, in one transaction, by the batch's
    /// end or by the first read of `doc` before it (`settle`).
    /// Architecture Invariant: none of them can fail to apply — none names
    /// a parent by id, and `doc` had no pending structs when they came
    /// (`may_fail`); the others are applied at once, alone.
    unapplied: Vec<Update>,
    /// The clocks `unapplied` reaches, per client (what `doc` will know
    /// once settled): an update must not start above them (`gap`).
    unapplied_sv: StateVector,
    /// How long after its last update this document compacts, in ms:
    /// `compact_after` plus up to a quarter more, chosen by the document's
    /// id, so that documents whose editing stopped together (a class, a
    /// load test's round) do not all snapshot in the same instant.
    quiet_ms: i64,
}

/// Closes a socket whose update was refused: 1009 too large, else 1008.
fn refuse(ctx: &mut Ctx, socket: SocketId, refusal: Refusal) {
    match refusal {
        Refusal::TooLarge(why) => ctx.close(socket, close::TOO_LARGE, clip_reason(&why)),
        Refusal::Malformed(why) | Refusal::CannotApply(why) => {
            tracing::info!(%socket, error = %why, "refusing an update");
            ctx.close(socket, close::POLICY, clip_reason(&why));
        }
    }
}

fn frame(msg: &YMessage) -> SocketMessage {
    SocketMessage::Binary(msg.encode_v1())
}

fn saved_frame(n: u64) -> SocketMessage {
    SocketMessage::Binary(wire::saved_frame(n))
}

/// A socket's `saved` bookkeeping, kept in its attachment so it survives
/// hibernation: `[wants_saved: u8][count: u64 LE]`.
fn saved_state(ctx: &Ctx, socket: SocketId) -> (bool, u64) {
    match ctx.attachment(socket) {
        Some(b) if b.len() == 9 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[1..]);
            (b[0] == 1, u64::from_le_bytes(n))
        }
        _ => (false, 0),
    }
}

fn set_saved_state(
    ctx: &mut Ctx,
    socket: SocketId,
    wants: bool,
    n: u64,
) -> Result<(), ObjectError> {
    let mut b = Vec::with_capacity(9);
    b.push(u8::from(wants));
    b.extend_from_slice(&n.to_le_bytes());
    ctx.set_attachment(socket, b)
}

/// An update that passed `Ydoc::check`.
struct Checked {
    decoded: Update,
    /// Some item names its parent by id: applying it may fail.
    parent_by_id: bool,
    /// A client whose structs include a skip range (a gap).
    skip: Option<u64>,
    /// Each client's run: (client, first clock, clock after the last).
    runs: Vec<(u64, u32, u32)>,
}

/// Why an update was refused (its sender alone: 1009 / 413, else 1008 / 400).
enum Refusal {
    TooLarge(String),
    Malformed(String),
    /// It decoded, but the document cannot take it (yrs: an item whose
    /// parent is not a type).
    CannotApply(String),
}

impl Ydoc {
    fn config(ctx: &Ctx) -> YdocConfig {
        ctx.runtime.config().ydoc.clone()
    }

    /// The checks an update passes before it meets the document: its size,
    /// its shape (`wire::check_update`: bounded nesting, counts and clocks,
    /// before yrs's recursive decoder sees it) and decoding. `None`: it
    /// changes nothing (a client's sync step 2 when it holds nothing the
    /// server lacks, sent on every connect).
    fn check(config: &YdocConfig, update: &[u8]) -> Result<Option<Checked>, Refusal> {
        if update.len() > config.max_update_bytes {
            return Err(Refusal::TooLarge(format!(
                "update is {} bytes; the limit is {}",
                update.len(),
                config.max_update_bytes
            )));
        }
        let limits = UpdateLimits {
            max_nesting: config.max_nesting,
        };
        let shape = wire::check_update(update, &limits)
            .map_err(|e| Refusal::Malformed(format!("update refused: {e}")))?;
        let decoded = Update::decode_v1(update)
            .map_err(|e| Refusal::Malformed(format!("update does not decode: {e}")))?;
        if decoded.is_empty() {
            return Ok(None);
        }
        Ok(Some(Checked {
            decoded,
            parent_by_id: shape.parent_by_id,
            skip: shape.skip_of,
            runs: shape.runs,
        }))
    }

    /// Stores and applies one checked update; returns the frame to
    /// broadcast, or `None` for an update that changes nothing: it is
    /// neither stored nor broadcast.
    fn accept_update(
        &mut self,
        ctx: &mut Ctx,
        update: &[u8],
        checked: Option<Checked>,
    ) -> Result<Result<Option<SocketMessage>, Refusal>, ObjectError> {
        let config = Self::config(ctx);
        let Some(checked) = checked else {
            return Ok(Ok(None));
        };
        let size =
            self.stats.snapshot_bytes + self.stats.bytes_since_snapshot + update.len() as u64;
        if size > config.max_doc_bytes {
            return Ok(Err(Refusal::TooLarge(format!(
                "document would exceed {} bytes",
                config.max_doc_bytes
            ))));
        }
        if let Some(client) = self.gap(&checked) {
            return Ok(Err(Refusal::CannotApply(format!(
                "update skips clocks of client {client} the document does not have"
            ))));
        }
        if checked.parent_by_id || self.has_pending_structs() {
            // It may fail to apply: apply it now, alone, so that a failure
            // is its sender's only.
            self.settle()?;
            let doc = &self.doc;
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                doc.transact_mut().apply_update(checked.decoded)
            }));
            let failure = match applied {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                // Last resort only: after a panic inside yrs its `Doc` may
                // not even drop safely (fuzzing saw a SIGSEGV after its
                // skip-range panic, which `gap` now keeps out).
                Err(_) => Some("the CRDT library panicked on it".to_owned()),
            };
            if let Some(e) = failure {
                // yrs integrated part of it before it failed.
                self.rebuild(ctx)?;
                return Ok(Err(Refusal::CannotApply(format!(
                    "update cannot be applied to this document: {e}"
                ))));
            }
        } else {
            for (client, _, end) in &checked.runs {
                self.unapplied_sv.set_max(yrs::ClientID::new(*client), *end);
            }
            self.unapplied.push(checked.decoded);
        }
        let now = ctx.now_ms();
        // Past this point the update is the batch's: it is stored with the
        // batch (`before_commit`), and a failed batch discards it (Fatal
        // restarts the object from storage).
        self.pending.push(now, update);
        self.stats.rows_since_snapshot += 1;
        self.stats.bytes_since_snapshot += update.len() as u64;
        self.stats.last_update_ts = now;
        if self.stats.rows_since_snapshot >= config.checkpoint_rows
            || self.stats.bytes_since_snapshot >= config.checkpoint_bytes
        {
            self.checkpoint(ctx)?;
        }
        // Come back once editing stops. After a compaction the alarm waits
        // for the history window (days away): bring it forward once.
        let quiet = now + self.quiet_ms;
        if ctx.get_alarm()?.is_none_or(|at| at > quiet) {
            ctx.set_alarm(quiet)?;
        }
        Ok(Ok(Some(frame(&YMessage::Sync(SyncMessage::Update(
            update.to_vec(),
        ))))))
    }

    /// A client whose clocks `update` would leave a gap in: it starts
    /// above what the document holds (or will, once `unapplied` is
    /// applied), or holds a skip range. yrs fills such gaps later with
    /// skip ranges, where fuzzing found it panicking (block_store.rs) and
    /// leaving a `Doc` that crashed the process when dropped; Yjs clients
    /// send a client's structs from where the server is, so only a client
    /// that itself holds a gap (or a hostile one) is refused.
    fn gap(&self, checked: &Checked) -> Option<u64> {
        if let Some(client) = checked.skip {
            return Some(client);
        }
        let sv = self.doc.transact().state_vector();
        checked
            .runs
            .iter()
            .find(|(client, start, end)| {
                let client = yrs::ClientID::new(*client);
                start < end && *start > sv.get(&client).max(self.unapplied_sv.get(&client))
            })
            .map(|(client, _, _)| *client)
    }

    /// Whether `doc` holds structs waiting for missing ones (an update sent
    /// out of order): a later update may complete them, and applying them
    /// then may fail, so every update is applied at once until they are in.
    fn has_pending_structs(&self) -> bool {
        let txn = self.doc.transact();
        txn.store().pending_update().is_some()
    }

    /// Rebuilds `doc` from storage (what the log and snapshots hold,
    /// including this batch's rows so far) plus the batch's accepted
    /// updates that are not stored yet, after an update failed halfway
    /// through applying. Everything in it was applied before, in this
    /// order, so a failure here is fatal.
    fn rebuild(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        debug_assert!(self.unapplied.is_empty());
        let fatal = |e: &dyn std::fmt::Display| {
            ObjectError::Fatal(format!("cannot rebuild the document: {e}"))
        };
        let (doc, _) = store::load(ctx.storage().sql()).map_err(|e| fatal(&e))?;
        store::apply_pending(&doc, &self.pending).map_err(|e| fatal(&e))?;
        self.doc = doc;
        Ok(())
    }

    /// Applies the updates accepted so far to `doc`, in one transaction.
    /// None can fail (see `unapplied`); if one does anyway, that is fatal:
    /// the batch fails and the object restarts from storage, so nothing of
    /// it was stored or sent.
    fn settle(&mut self) -> Result<(), ObjectError> {
        if self.unapplied.is_empty() {
            return Ok(());
        }
        self.unapplied_sv = StateVector::default();
        let mut txn = self.doc.transact_mut();
        for update in self.unapplied.drain(..) {
            txn.apply_update(update)
                .map_err(|e| ObjectError::Fatal(format!("update could not be applied: {e}")))?;
        }
        Ok(())
    }

    /// Appends the batch's updates so far to the log table (one row).
    fn store_pending(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        store::append_pending(ctx.storage().sql(), &mut self.pending)
            .map_err(|e| ObjectError::Fatal(format!("cannot store the batch's updates: {e}")))
    }

    fn checkpoint(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        // A snapshot covers the log up to its newest row: the document in
        // memory must hold nothing more.
        self.settle()?;
        self.store_pending(ctx)?;
        let written = store::checkpoint(ctx.storage().sql(), &self.doc)
            .map_err(|e| ObjectError::Fatal(e.to_string()))?;
        if let Some(size) = written {
            self.stats.snapshot_bytes = size;
            self.stats.rows_since_snapshot = 0;
            self.stats.bytes_since_snapshot = 0;
        }
        Ok(())
    }

    /// Whether a quiet document should write a snapshot: only if the log
    /// after the newest one is long (an eighth of `checkpoint_rows`) or
    /// weighs a quarter of it. A snapshot per pause would keep a copy of
    /// the whole document for every pause of the history window; a short
    /// log costs little to replay when the document loads.
    fn worth_a_snapshot(&self, config: &YdocConfig) -> bool {
        self.stats.rows_since_snapshot > 0
            && (self.stats.rows_since_snapshot >= config.checkpoint_rows / 8
                || self.stats.bytes_since_snapshot >= self.stats.snapshot_bytes / 4)
    }

    fn state(&mut self, sv: &StateVector) -> Result<Vec<u8>, ObjectError> {
        self.settle()?;
        Ok(self.doc.transact().encode_state_as_update_v1(sv))
    }
}

impl DurableObject for Ydoc {
    fn new(ctx: &mut Ctx) -> Result<Self, ObjectError> {
        ctx.storage().migrate(store::MIGRATIONS)?;
        let (doc, stats) =
            store::load(ctx.storage().sql()).map_err(|e| ObjectError::app(e.to_string()))?;
        let after = Self::config(ctx).compact_after.as_millis() as i64;
        let spread = i64::from(u16::from_le_bytes([ctx.id().0[0], ctx.id().0[1]]));
        Ok(Ydoc {
            doc,
            stats,
            pending: store::Pending::default(),
            unapplied: Vec::new(),
            unapplied_sv: StateVector::default(),
            quiet_ms: after + after / 4 * spread / 65_536,
        })
    }

    async fn on_connect(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        request: &ConnectRequest,
    ) -> Result<Admission, ObjectError> {
        let wants_saved = request
            .query
            .get("saved")
            .is_some_and(|v| v == "1" || v == "true");
        if wants_saved {
            set_saved_state(ctx, socket, true, 0)?;
        }
        self.settle()?;
        let sv = self.doc.transact().state_vector();
        ctx.send(socket, frame(&YMessage::Sync(SyncMessage::SyncStep1(sv))));
        Ok(Admission::accept())
    }

    async fn on_message(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        msg: SocketMessage,
    ) -> Result<(), ObjectError> {
        let SocketMessage::Binary(bytes) = msg else {
            ctx.close(
                socket,
                close::POLICY,
                "y-websocket messages are binary frames",
            );
            return Ok(());
        };
        // Read the whole frame first: a malformed or truncated one changes
        // nothing, not even a valid message in front of the damage.
        let messages = match wire::read_frame(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(%socket, error = %e, "malformed y-protocols frame");
                let why = format!("malformed y-protocols message: {e}");
                ctx.close(socket, close::POLICY, clip_reason(&why));
                return Ok(());
            }
        };
        let read_only = ctx.storage().is_read_only();
        // Every state vector and update of the frame passes its checks
        // before anything is answered or accepted; only applying (below)
        // can still refuse an update.
        let config = Self::config(ctx);
        let mut checked = Vec::new();
        let mut state_vectors = Vec::new();
        for message in &messages {
            match (read_only, message) {
                (_, wire::YMessage::SyncStep1(sv)) => {
                    let sv = wire::check_state_vector(sv)
                        .map_err(|e| e.to_string())
                        .and_then(|()| StateVector::decode_v1(sv).map_err(|e| e.to_string()));
                    match sv {
                        Ok(sv) => state_vectors.push(sv),
                        Err(e) => {
                            refuse(
                                ctx,
                                socket,
                                Refusal::Malformed(format!("state vector: {e}")),
                            );
                            return Ok(());
                        }
                    }
                }
                (false, wire::YMessage::SyncStep2(u) | wire::YMessage::Update(u)) => {
                    match Self::check(&config, u) {
                        Ok(c) => checked.push(c),
                        Err(refusal) => {
                            refuse(ctx, socket, refusal);
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
        }
        let mut checked = checked.into_iter();
        let mut state_vectors = state_vectors.into_iter();
        let mut accepted = 0u64;
        for message in messages {
            match message {
                wire::YMessage::SyncStep1(_) => {
                    let sv = state_vectors
                        .next()
                        .expect("invariant: every state vector of the frame was checked");
                    let reply = self.state(&sv)?;
                    ctx.send(
                        socket,
                        frame(&YMessage::Sync(SyncMessage::SyncStep2(reply))),
                    );
                }
                wire::YMessage::SyncStep2(update) | wire::YMessage::Update(update) => {
                    if read_only {
                        ctx.send(
                            socket,
                            frame(&YMessage::Auth(Some(
                                "read-only: updates are refused".into(),
                            ))),
                        );
                        continue;
                    }
                    let this = checked
                        .next()
                        .expect("invariant: every update of the frame was checked");
                    match self.accept_update(ctx, update, this)? {
                        Ok(broadcast) => {
                            if let Some(frame) = broadcast {
                                ctx.broadcast(None, frame, Some(socket));
                            }
                            accepted += 1;
                        }
                        Err(refusal) => {
                            refuse(ctx, socket, refusal);
                            return Ok(());
                        }
                    }
                }
                // Awareness is the socket layer's; auth and unknown types are ignored.
                _ => {}
            }
        }
        // Only a socket that asked for `saved` keeps a count: the others'
        // attachments are not touched per update (a lock and an allocation).
        if accepted > 0 {
            let (wants_saved, saved) = saved_state(ctx, socket);
            if wants_saved {
                let saved = saved + accepted;
                set_saved_state(ctx, socket, true, saved)?;
                ctx.send(socket, saved_frame(saved));
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut Ctx, _info: AlarmInfo) -> Result<(), ObjectError> {
        let config = Self::config(ctx);
        let now = ctx.now_ms();
        let quiet_since = self.stats.last_update_ts + self.quiet_ms;
        if quiet_since > now {
            // Still being edited: look again once it has been quiet long enough.
            ctx.set_alarm(quiet_since)?;
            return Ok(());
        }
        if self.worth_a_snapshot(&config) {
            self.checkpoint(ctx)?;
        }
        let cutoff = now - config.retention.as_millis() as i64;
        let (updates, snapshots) = store::compact(ctx.storage().sql(), cutoff)
            .map_err(|e| ObjectError::Fatal(e.to_string()))?;
        if updates > 0 || snapshots > 0 {
            tracing::debug!(updates, snapshots, "compacted document log");
        }
        // Come back when the oldest kept update leaves the retention window.
        let oldest =
            store::oldest_ts(ctx.storage().sql()).map_err(|e| ObjectError::Fatal(e.to_string()))?;
        if let Some(oldest) = oldest {
            ctx.set_alarm((oldest + config.retention.as_millis() as i64).max(now + 1000))?;
        }
        Ok(())
    }

    async fn fetch(
        &mut self,
        ctx: &mut Ctx,
        request: FetchRequest,
    ) -> Result<FetchResponse, ObjectError> {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "state") => {
                let at = match request.query.get("at") {
                    None => None,
                    Some(text) => {
                        match time::OffsetDateTime::parse(
                            text,
                            &time::format_description::well_known::Rfc3339,
                        ) {
                            Ok(t) => Some((t.unix_timestamp_nanos() / 1_000_000) as i64),
                            Err(e) => {
                                return Ok(FetchResponse::status(400, &format!("`at` must be an RFC 3339 time like 2026-01-02T03:04:05Z: {e}")));
                            }
                        }
                    }
                };
                // A read never writes (this is a read-only event): history
                // is the log table plus this batch's updates not stored
                // yet, which will be stored as of `pending.ts()`.
                let body = match at {
                    None => self.state(&StateVector::default())?,
                    Some(ts) => match store::as_of(ctx.storage().sql(), ts) {
                        Ok(doc) => {
                            if !self.pending.is_empty() && self.pending.ts() <= ts {
                                store::apply_pending(&doc, &self.pending)
                                    .map_err(|e| ObjectError::app(e.to_string()))?;
                            }
                            doc.transact()
                                .encode_state_as_update_v1(&StateVector::default())
                        }
                        Err(store::StoreError::BeforeHistory(_)) => {
                            return Ok(FetchResponse::status(
                                404,
                                "that time is older than the document's retained history",
                            ));
                        }
                        Err(e) => return Err(ObjectError::app(e.to_string())),
                    },
                };
                Ok(FetchResponse::bytes("application/octet-stream", body))
            }
            ("POST", "update") => {
                if request.read_only {
                    return Ok(FetchResponse::status(
                        403,
                        "read-only access cannot update the document",
                    ));
                }
                let checked = match Self::check(&Self::config(ctx), &request.body) {
                    Ok(c) => c,
                    Err(Refusal::TooLarge(why)) => return Ok(FetchResponse::status(413, &why)),
                    Err(Refusal::Malformed(why) | Refusal::CannotApply(why)) => {
                        return Ok(FetchResponse::status(400, &why))
                    }
                };
                match self.accept_update(ctx, &request.body, checked)? {
                    Ok(broadcast) => {
                        if let Some(frame) = broadcast {
                            ctx.broadcast(None, frame, None);
                        }
                        Ok(FetchResponse::json(&json!({ "ok": true })))
                    }
                    Err(Refusal::TooLarge(why)) => Ok(FetchResponse::status(413, &why)),
                    Err(Refusal::Malformed(why) | Refusal::CannotApply(why)) => {
                        Ok(FetchResponse::status(400, &why))
                    }
                }
            }
            _ => Ok(FetchResponse::status(404, "no such document route")),
        }
    }

    async fn call(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        _args: Value,
    ) -> Result<Value, ObjectError> {
        match method {
            "stats" => Ok(json!({
                "updates_since_snapshot": self.stats.rows_since_snapshot,
                "bytes_since_snapshot": self.stats.bytes_since_snapshot,
                "snapshot_bytes": self.stats.snapshot_bytes,
                "sockets": ctx.sockets(None).len(),
            })),
            "compact" => {
                // Compaction writes: a read-only caller is refused before
                // anything changes.
                if ctx.storage().is_read_only() {
                    return Err(ObjectError::Storage(StorageError::ReadOnly));
                }
                self.checkpoint(ctx)?;
                Ok(json!({ "ok": true }))
            }
            other => Err(ObjectError::UnknownMethod(other.to_owned())),
        }
    }

    fn before_commit(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        self.settle()?;
        self.store_pending(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_frame_is_a_varint() {
        assert_eq!(saved_frame(5), SocketMessage::Binary(vec![100, 5]));
        assert_eq!(
            saved_frame(300),
            SocketMessage::Binary(vec![100, 0xac, 0x02])
        );
    }

    fn update_inserting(text: &str) -> Update {
        use yrs::Text;
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, text);
        let bytes = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        Update::decode_v1(&bytes).expect("decode")
    }

    /// Accepted updates wait, decoded, for one transaction; any read of the
    /// document applies them first, so a reply in the same batch sees them.
    #[test]
    fn reading_the_document_applies_what_the_batch_accepted() {
        use yrs::GetString;
        let mut y = Ydoc {
            doc: Doc::new(),
            stats: store::LogStats::default(),
            pending: store::Pending::default(),
            unapplied: vec![update_inserting("hello")],
            unapplied_sv: StateVector::default(),
            quiet_ms: 5000,
        };
        let state = y.state(&StateVector::default()).expect("state");
        assert!(y.unapplied.is_empty());
        let copy = Doc::new();
        copy.transact_mut()
            .apply_update(Update::decode_v1(&state).expect("decode"))
            .expect("apply");
        let t = copy.get_or_insert_text("t");
        assert_eq!(t.get_string(&copy.transact()), "hello");
        // Nothing waiting: a no-op.
        y.settle().expect("settle");
        let t = y.doc.get_or_insert_text("t");
        assert_eq!(t.get_string(&y.doc.transact()), "hello");
    }
}
