//! Updates that arrive ahead of their client's earlier ones.
//!
//! A y-websocket client that edited offline and types the moment its
//! socket reopens sends that keystroke before its sync step 2 (which
//! carries the offline edits): the keystroke starts above the clocks the
//! document holds of that client. Applying it would leave a gap (`gap`,
//! which yrs fills with skip ranges it has panicked on), and refusing it
//! closed the socket (1008) and made the client reconnect. Instead it is
//! parked, per socket, in memory, and tried again after each update that
//! socket gets accepted; the step 2 that follows fills the gap.
//!
//! A parked update is not accepted: it is neither stored nor broadcast nor
//! counted as `saved` until it applies, and a socket that closes drops its
//! parked updates (its client sends everything again on its next sync).
//! Limits: a socket parks at most [`MAX_PARKED`] updates of
//! [`MAX_PARKED_BYTES`] together, a document [`MAX_DOC_PARKED_BYTES`] over
//! all its sockets (what a client types while its sync is under way is a
//! few bytes a keystroke; a hostile one must not make every socket hold a
//! megabyte), each for at most [`PARK_FOR`] (or the document's quiet time,
//! if shorter, so the document is still loaded). Beyond any of them the
//! socket is closed with 1008, as before, and its client re-syncs.

use std::collections::HashMap;

use roost_protocol::close::{self, clip_reason};

use super::sync::refuse;
use super::update::Refusal;
use super::Ydoc;
use crate::sockets::SocketId;
use crate::{Ctx, ObjectError};

/// Most updates one socket may have parked.
pub(super) const MAX_PARKED: usize = 256;
/// Most bytes one socket may have parked.
pub(super) const MAX_PARKED_BYTES: usize = 32 * 1024;
/// Most bytes one document holds parked, over all its sockets.
pub(super) const MAX_DOC_PARKED_BYTES: usize = 512 * 1024;
/// Longest an update stays parked, in ms.
pub(super) const PARK_FOR: i64 = 2_000;

/// One socket's parked updates, oldest first.
#[derive(Default)]
pub(super) struct Parked {
    updates: Vec<Vec<u8>>,
    bytes: usize,
    /// When the oldest was parked (ms).
    since: i64,
}

pub(super) type ParkedBySocket = HashMap<SocketId, Parked>;

impl Ydoc {
    /// Parks `update` for `socket`; false if that would pass a limit (the
    /// caller refuses it).
    pub(super) fn park(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        update: &[u8],
    ) -> Result<bool, ObjectError> {
        let now = ctx.now_ms();
        let in_doc: usize = self.parked.values().map(|p| p.bytes).sum();
        let (count, bytes) = self
            .parked
            .get(&socket)
            .map_or((0, 0), |p| (p.updates.len(), p.bytes));
        if count >= MAX_PARKED
            || bytes + update.len() > MAX_PARKED_BYTES
            || in_doc + update.len() > MAX_DOC_PARKED_BYTES
        {
            return Ok(false);
        }
        let parked = self.parked.entry(socket).or_default();
        if parked.updates.is_empty() {
            parked.since = now;
        }
        parked.updates.push(update.to_vec());
        parked.bytes += update.len();
        let due = parked.since + self.park_for();
        if ctx.get_alarm()?.is_none_or(|at| at > due) {
            ctx.set_alarm(due)?;
        }
        Ok(true)
    }

    fn park_for(&self) -> i64 {
        PARK_FOR.min(self.quiet_ms)
    }

    /// Tries `socket`'s parked updates again, oldest first, until a round
    /// accepts none: returns how many were accepted (each broadcast), or
    /// `None` if one was refused (the socket is closed).
    pub(super) fn unpark(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
    ) -> Result<Option<u64>, ObjectError> {
        let Some(mut parked) = self.parked.remove(&socket) else {
            return Ok(Some(0));
        };
        let config = Self::config(ctx);
        let mut accepted = 0u64;
        loop {
            let mut still = Vec::new();
            let before = parked.updates.len();
            for update in std::mem::take(&mut parked.updates) {
                let outcome = match Self::check(&config, &update) {
                    Ok(checked) => self.accept_update(ctx, &update, checked)?,
                    Err(refusal) => Err(refusal),
                };
                match outcome {
                    Ok(broadcast) => {
                        if let Some(frame) = broadcast {
                            ctx.broadcast(None, frame, Some(socket));
                        }
                        accepted += 1;
                    }
                    Err(Refusal::Ahead(_)) => still.push(update),
                    Err(refusal) => {
                        refuse(ctx, socket, refusal);
                        return Ok(None);
                    }
                }
            }
            let progress = still.len() < before;
            parked.updates = still;
            if !progress || parked.updates.is_empty() {
                break;
            }
        }
        if !parked.updates.is_empty() {
            parked.bytes = parked.updates.iter().map(Vec::len).sum();
            self.parked.insert(socket, parked);
        }
        Ok(Some(accepted))
    }

    /// Closes every socket whose oldest parked update waited its time out
    /// (its client re-syncs on reconnect).
    pub(super) fn expire_parked(&mut self, ctx: &mut Ctx) {
        let now = ctx.now_ms();
        let park_for = self.park_for();
        let expired: Vec<SocketId> = self
            .parked
            .iter()
            .filter(|(_, p)| p.since + park_for <= now)
            .map(|(s, _)| *s)
            .collect();
        for socket in expired {
            self.parked.remove(&socket);
            let why = "update skips clocks of its client the document does not have, \
                       and the updates before it did not follow";
            tracing::info!(%socket, "closing a socket whose parked updates were never completed");
            ctx.close(socket, close::POLICY, clip_reason(why));
        }
    }

    /// Brings the alarm forward to the next parked update's deadline.
    pub(super) fn arm_parked(&self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        let park_for = self.park_for();
        if let Some(due) = self.parked.values().map(|p| p.since + park_for).min() {
            if ctx.get_alarm()?.is_none_or(|at| at > due) {
                ctx.set_alarm(due)?;
            }
        }
        Ok(())
    }
}
