//! Accepting updates into the document: the checks an update passes before
//! it meets the `Doc` (`check`), applying it (`accept_update`: at once and
//! alone when it may fail, else gathered in `unapplied` for the batch's one
//! transaction, `settle`), rebuilding the `Doc` after a failed apply, and
//! writing snapshots (`checkpoint`).
//!
//! Architecture Invariant: an update that cannot be applied is refused for
//! its sender alone (1008 / 400). In yrs only an item whose parent is named
//! by id can fail, and only while applying — after part of the update is
//! already in the `Doc` —, so such an update, or any update while the `Doc`
//! holds pending structs, is applied at once, alone, and on failure the
//! `Doc` is rebuilt from storage plus the batch's accepted updates. An
//! update that would leave a gap in a client's clocks is refused outright
//! (`gap`). Every other update cannot fail and waits in `unapplied`.

use roost_protocol::yjs::{self as wire, UpdateLimits};
use yrs::sync::protocol::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use super::sync::frame;
use super::{history, store, Ydoc, YdocConfig};
use crate::sockets::SocketMessage;
use crate::{Ctx, ObjectError};

/// An update that passed `Ydoc::check`.
pub(super) struct Checked {
    decoded: Update,
    /// Some item names its parent by id: applying it may fail.
    parent_by_id: bool,
    /// A client whose structs include a skip range (a gap).
    skip: Option<u64>,
    /// Each client's run: (client, first clock, clock after the last).
    runs: Vec<(u64, u32, u32)>,
}

/// A gap an update would leave in a client's clocks (`Ydoc::gap`).
pub(super) enum Gap {
    /// The update itself holds a skip range.
    Skip(u64),
    /// It starts above what the document holds (or will, once settled).
    Ahead(u64),
}

/// Why an update was refused (its sender alone: 1009 / 413, else 1008 / 400).
pub(super) enum Refusal {
    TooLarge(String),
    Malformed(String),
    /// It decoded, but the document cannot take it (yrs: an item whose
    /// parent is not a type).
    CannotApply(String),
    /// It starts above the clocks the document holds of its client: the
    /// client's earlier updates have not arrived yet. A socket parks it
    /// until they do (`parked.rs`); over HTTP it is refused (400).
    Ahead(String),
}

impl Ydoc {
    /// The settings the class was registered with (`with_builtins`: the
    /// server's `Config::ydoc`), else the defaults.
    pub(super) fn config(ctx: &Ctx) -> YdocConfig {
        ctx.settings::<YdocConfig>().cloned().unwrap_or_default()
    }

    /// The checks an update passes before it meets the document: its size,
    /// its shape (`wire::check_update`: bounded nesting, counts and clocks,
    /// before yrs's recursive decoder sees it) and decoding. `None`: it
    /// changes nothing (a client's sync step 2 when it holds nothing the
    /// server lacks, sent on every connect).
    pub(super) fn check(config: &YdocConfig, update: &[u8]) -> Result<Option<Checked>, Refusal> {
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
    pub(super) fn accept_update(
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
        match self.gap(&checked) {
            Some(Gap::Skip(client)) => {
                return Ok(Err(Refusal::CannotApply(format!(
                    "update holds a gap in the clocks of client {client}"
                ))))
            }
            Some(Gap::Ahead(client)) => {
                return Ok(Err(Refusal::Ahead(format!(
                    "update skips clocks of client {client} the document does not have"
                ))))
            }
            None => {}
        }
        if checked.parent_by_id || self.has_pending_structs() {
            // It may fail to apply: apply it now, alone, so that a failure
            // is its sender's only.
            self.settle()?;
            if let Err(level) = self.type_nesting(&config, update) {
                return Ok(Err(Refusal::Malformed(format!(
                    "update refused: shared types nested deeper than {} levels (it reaches {level})",
                    config.max_type_nesting
                ))));
            }
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
            self.checkpoint(ctx, false)?;
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
    /// that itself holds a gap (or a hostile one) is refused, and one sent
    /// ahead of its client's earlier updates waits for them (`Ahead`).
    pub(super) fn gap(&self, checked: &Checked) -> Option<Gap> {
        if let Some(client) = checked.skip {
            return Some(Gap::Skip(client));
        }
        let sv = self.doc.transact().state_vector();
        checked
            .runs
            .iter()
            .find(|(client, start, end)| {
                let client = yrs::ClientID::new(*client);
                start < end && *start > sv.get(&client).max(self.unapplied_sv.get(&client))
            })
            .map(|(client, _, _)| Gap::Ahead(*client))
    }

    /// How deep `update` would nest shared types once applied, with the
    /// document's pending structs (which it may complete): `Err(level)`
    /// beyond `config.max_type_nesting` (`nesting.rs`).
    pub(super) fn type_nesting(&self, config: &YdocConfig, update: &[u8]) -> Result<u32, u32> {
        // `update` passed `check_update`, and a pending update is yrs's
        // own encoding: both are read whole.
        let mut links = wire::item_links(update).unwrap_or_default();
        let txn = self.doc.transact();
        if let Some(pending) = txn.store().pending_update() {
            let bytes = yrs::updates::encoder::Encode::encode_v1(&pending.update);
            links.extend(wire::item_links(&bytes).unwrap_or_default());
        }
        super::nesting::deepest(&txn, &links, config.max_type_nesting)
    }

    /// Whether `doc` holds structs waiting for missing ones (an update sent
    /// out of order): a later update may complete them, and applying them
    /// then may fail, so every update is applied at once until they are in.
    pub(super) fn has_pending_structs(&self) -> bool {
        let txn = self.doc.transact();
        txn.store().pending_update().is_some()
    }

    /// Rebuilds `doc` from storage (what the log and snapshots hold,
    /// including this batch's rows so far) plus the batch's accepted
    /// updates that are not stored yet, after an update failed halfway
    /// through applying. Everything in it was applied before, in this
    /// order, so a failure here is fatal.
    pub(super) fn rebuild(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
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
    pub(super) fn settle(&mut self) -> Result<(), ObjectError> {
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
    pub(super) fn store_pending(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        super::feed::emit_pending(ctx, &self.pending)?;
        store::append_pending(ctx.storage().sql(), &mut self.pending)
            .map_err(|e| ObjectError::Fatal(format!("cannot store the batch's updates: {e}")))
    }

    /// With `pack` (the quiet alarm), deflated if smaller.
    pub(super) fn checkpoint(&mut self, ctx: &mut Ctx, pack: bool) -> Result<(), ObjectError> {
        // A snapshot covers the log up to its newest row: the document in
        // memory must hold nothing more.
        self.settle()?;
        self.store_pending(ctx)?;
        let written = store::checkpoint(ctx.storage().sql(), &self.doc, pack)
            .map_err(|e| ObjectError::Fatal(e.to_string()))?;
        if let Some(size) = written {
            self.stats.snapshot_bytes = size;
            self.stats.rows_since_snapshot = 0;
            self.stats.bytes_since_snapshot = 0;
        }
        Ok(())
    }

    /// Keeps the history window at its granularity (`history.rs`): merges
    /// the rows of closed buckets, drops the snapshots not worth keeping and
    /// updates the statistics of the log since the newest snapshot.
    pub(super) fn coarsen(
        &mut self,
        ctx: &mut Ctx,
        config: &YdocConfig,
        now: i64,
    ) -> Result<history::Coarsened, ObjectError> {
        let granularity = config.granularity.as_millis() as i64;
        let fatal = |e: store::StoreError| ObjectError::Fatal(e.to_string());
        if granularity == 0 {
            return Ok(history::Coarsened {
                done: true,
                ..Default::default()
            });
        }
        let conn = ctx.storage().sql();
        let mut coarse =
            history::coarsen(conn, granularity, now, self.coarse_through).map_err(fatal)?;
        self.coarse_through = coarse.through;
        let bytes = config.checkpoint_bytes;
        let thinned = history::thin(conn, config.checkpoint_rows, bytes).map_err(fatal)?;
        let packed = history::pack_snapshots(conn).map_err(fatal)?;
        coarse.snapshots_changed = thinned + packed;
        if coarse.rows_removed > 0 || coarse.snapshots_changed > 0 {
            let stats = history::since_newest_snapshot(conn).map_err(fatal)?;
            (
                self.stats.rows_since_snapshot,
                self.stats.bytes_since_snapshot,
            ) = stats;
            let merged = coarse.rows_removed;
            tracing::debug!(merged, thinned, packed, "coarsened document history");
        }
        Ok(coarse)
    }

    /// Whether a quiet document should write a snapshot: only if the log
    /// after the newest one is long (an eighth of `checkpoint_rows`) or
    /// weighs a quarter of it. A snapshot per pause would keep a copy of
    /// the whole document for every pause of the history window; a short
    /// log costs little to replay when the document loads.
    pub(super) fn worth_a_snapshot(&self, config: &YdocConfig) -> bool {
        self.stats.rows_since_snapshot > 0
            && (self.stats.rows_since_snapshot >= config.checkpoint_rows / 8
                || self.stats.bytes_since_snapshot >= self.stats.snapshot_bytes / 4)
    }

    pub(super) fn state(&mut self, sv: &StateVector) -> Result<Vec<u8>, ObjectError> {
        self.settle()?;
        Ok(self.doc.transact().encode_state_as_update_v1(sv))
    }
}
