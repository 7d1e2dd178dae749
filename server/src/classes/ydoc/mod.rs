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
//! same alarm drops what the history window no longer needs, and gives the
//! freed pages back to the filesystem.
//! `compact_after` is shorter than the idle timeout, so the quiet document
//! is still in memory: waking an evicted document only to snapshot it
//! replays its whole log, and a hundred documents that stopped together did
//! that in one burst that took p99 at 100 x 5 past 250 ms.
//!
//! - this file: the class (`DurableObject`), its configuration and state,
//!   compaction by alarm;
//! - `sync.rs`: y-websocket frames, sync replies and the `saved` extension;
//! - `parked.rs`: updates that came ahead of their client's earlier ones,
//!   held per socket until those arrive;
//! - `http.rs`: `state` (also as of a time) and `update` over HTTP;
//! - `update.rs`: checking, applying and gathering updates; snapshots;
//! - `nesting.rs`: how deep shared types nest, bounded before an update
//!   is applied (yrs deletes nested types by recursion);
//! - `store.rs`: the tables (update log, snapshots), load, compaction,
//!   history;
//! - `history.rs`: the history window kept at a granularity (merged rows,
//!   fewer snapshots);
//! - `feed.rs`: each stored row of updates as a change-feed event;
//! - `versions.rs`: named versions (create, list, read, restore, delete)
//!   and the document as JSON.

mod feed;
mod history;
mod http;
mod nesting;
mod parked;
pub(crate) mod store;
mod sync;
mod update;
mod versions;

use std::time::Duration;

use serde_json::{json, Value};
use yrs::sync::protocol::{Message as YMessage, SyncMessage};
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::object::{FetchRequest, FetchResponse};
use crate::runtime::{Admission, AlarmInfo, ConnectRequest};
use crate::sockets::{SocketId, SocketMessage};
use crate::{Ctx, DurableObject, ObjectError, StorageError};
use sync::{frame, set_saved_state};

/// Tuning of `ydoc` documents.
#[derive(Debug, Clone)]
pub struct YdocConfig {
    /// Largest single update, in bytes (close 1009 / 413 beyond).
    pub max_update_bytes: usize,
    /// Deepest nesting of arrays and maps in an update's `Any` values and
    /// JSON texts (close 1008 / 400 beyond), checked before yrs decodes
    /// them by recursion.
    pub max_nesting: u32,
    /// Deepest nesting of shared types (1: a root type's own items; close
    /// 1008 / 400 beyond), checked before an update meets the document:
    /// yrs deletes nested types by recursion (`nesting.rs`).
    pub max_type_nesting: u32,
    /// Largest document (snapshot + log since), in bytes.
    pub max_doc_bytes: u64,
    /// How far back the document can be read (`state?at=`).
    pub retention: Duration,
    /// How finely that history is kept: updates in one such interval are
    /// merged into one row once the document is quiet (zero: every update
    /// row and every snapshot is kept; `history.rs`).
    pub granularity: Duration,
    /// Snapshot once this many updates follow the newest snapshot...
    pub checkpoint_rows: u64,
    /// ...or once they weigh this much.
    pub checkpoint_bytes: u64,
    /// Snapshot (if worth it) and compact this long after editing stops;
    /// shorter than the idle timeout, so the document is still loaded.
    pub compact_after: Duration,
    /// Most named versions one document keeps (`POST versions`: 507 beyond).
    pub max_versions: u64,
}

impl Default for YdocConfig {
    fn default() -> Self {
        YdocConfig {
            max_update_bytes: 1024 * 1024,
            max_nesting: roost_protocol::yjs::DEFAULT_MAX_NESTING,
            max_type_nesting: roost_protocol::yjs::DEFAULT_MAX_TYPE_NESTING,
            max_doc_bytes: 64 * 1024 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            granularity: Duration::from_secs(1),
            checkpoint_rows: 2000,
            checkpoint_bytes: 4 * 1024 * 1024,
            compact_after: Duration::from_secs(5),
            max_versions: 100,
        }
    }
}

/// The built-in `ydoc` class: a Yjs document (see the module's text).
pub(crate) struct Ydoc {
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
    /// Rows up to this id are as coarse as they will get (`history.rs`).
    coarse_through: i64,
    /// Updates each socket sent ahead of its client's earlier ones.
    parked: parked::ParkedBySocket,
}

impl DurableObject for Ydoc {
    fn new(ctx: &mut Ctx) -> Result<Self, ObjectError> {
        ctx.storage().migrate(store::MIGRATIONS)?;
        ctx.storage().sql().execute_batch(versions::TABLE)?;
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
            coarse_through: 0,
            parked: parked::ParkedBySocket::default(),
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
                roost_protocol::close::POLICY,
                "y-websocket messages are binary frames",
            );
            return Ok(());
        };
        self.on_frame(ctx, socket, &bytes)
    }

    async fn on_close(
        &mut self,
        _ctx: &mut Ctx,
        socket: SocketId,
        _code: u16,
        _reason: &str,
    ) -> Result<(), ObjectError> {
        self.parked.remove(&socket);
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut Ctx, _info: AlarmInfo) -> Result<(), ObjectError> {
        self.expire_parked(ctx);
        self.compact_by_alarm(ctx)?;
        self.arm_parked(ctx)
    }

    async fn fetch(
        &mut self,
        ctx: &mut Ctx,
        request: FetchRequest,
    ) -> Result<FetchResponse, ObjectError> {
        if let Some(result) = self.version_route(ctx, &request) {
            return result;
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "state") => self.get_state(ctx, &request),
            ("POST", "update") => self.post_update(ctx, &request),
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
                self.checkpoint(ctx, true)?;
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

impl Ydoc {
    /// Snapshots, merges and compacts once editing has stopped, and sets
    /// the alarm for the next time there is work (the module's text).
    fn compact_by_alarm(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        let config = Self::config(ctx);
        let now = ctx.now_ms();
        let quiet_since = self.stats.last_update_ts + self.quiet_ms;
        if quiet_since > now {
            // Still being edited: look again once it has been quiet long enough.
            ctx.set_alarm(quiet_since)?;
            return Ok(());
        }
        if self.worth_a_snapshot(&config) {
            self.checkpoint(ctx, true)?;
        }
        let fatal = |e: store::StoreError| ObjectError::Fatal(e.to_string());
        let coarse = self.coarsen(ctx, &config, now)?;
        let cutoff = now - config.retention.as_millis() as i64;
        let (updates, snapshots) = store::compact(ctx.storage().sql(), cutoff).map_err(fatal)?;
        if updates > 0 || snapshots > 0 || coarse.rows_removed > 0 || coarse.snapshots_changed > 0 {
            // The deleted rows' pages go back to the filesystem, not to a
            // free list the document would keep for good.
            let pages = ctx.storage().reclaim_free_pages()?;
            let merged = coarse.rows_removed;
            tracing::debug!(updates, snapshots, merged, pages, "compacted document log");
        }
        if !coarse.done {
            // More rows to merge: go on at once, in a new batch.
            ctx.set_alarm(now)?;
            return Ok(());
        }
        // Come back when the oldest kept update leaves the retention window.
        let oldest = store::oldest_ts(ctx.storage().sql()).map_err(fatal)?;
        let due = oldest.map(|ts| ts + config.retention.as_millis() as i64);
        let next = match (due, coarse.open_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(next) = next {
            ctx.set_alarm(next.max(now + 1000))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::sync::saved_frame;
    use super::*;
    use yrs::updates::decoder::Decode;

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
            coarse_through: 0,
            parked: parked::ParkedBySocket::default(),
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
