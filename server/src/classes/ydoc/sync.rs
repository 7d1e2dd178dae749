//! The y-websocket side of a document: reading a client's frame, answering
//! sync steps, accepting its updates and the `saved` extension (the count
//! of a socket's updates that are durable, kept in its attachment so it
//! survives hibernation; other sockets' attachments are never written).
//!
//! A frame is read whole and every state vector and update in it is checked
//! before anything is answered or accepted: a malformed or truncated frame
//! changes nothing, not even a valid message in front of the damage.

use roost_protocol::close::{self, clip_reason};
use roost_protocol::yjs as wire;
use yrs::sync::protocol::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::StateVector;

use super::update::{Checked, Refusal};
use super::Ydoc;
use crate::sockets::{SocketId, SocketMessage};
use crate::{Ctx, ObjectError};

/// Closes a socket whose update was refused: 1009 too large, else 1008.
pub(super) fn refuse(ctx: &mut Ctx, socket: SocketId, refusal: Refusal) {
    match refusal {
        Refusal::TooLarge(why) => ctx.close(socket, close::TOO_LARGE, clip_reason(&why)),
        Refusal::Malformed(why) | Refusal::CannotApply(why) | Refusal::Ahead(why) => {
            tracing::info!(%socket, error = %why, "refusing an update");
            ctx.close(socket, close::POLICY, clip_reason(&why));
        }
    }
}

pub(super) fn frame(msg: &YMessage) -> SocketMessage {
    SocketMessage::Binary(msg.encode_v1())
}

pub(super) fn saved_frame(n: u64) -> SocketMessage {
    SocketMessage::Binary(wire::saved_frame(n))
}

/// A socket's `saved` bookkeeping, kept in its attachment so it survives
/// hibernation: `[wants_saved: u8][count: u64 LE]`.
pub(super) fn saved_state(ctx: &Ctx, socket: SocketId) -> (bool, u64) {
    match ctx.attachment(socket) {
        Some(b) if b.len() == 9 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[1..]);
            (b[0] == 1, u64::from_le_bytes(n))
        }
        _ => (false, 0),
    }
}

pub(super) fn set_saved_state(
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

impl Ydoc {
    /// Handles one binary frame from a socket.
    pub(super) fn on_frame(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        bytes: &[u8],
    ) -> Result<(), ObjectError> {
        // Read the whole frame first: a malformed or truncated one changes
        // nothing, not even a valid message in front of the damage.
        let messages = match wire::read_frame(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(%socket, error = %e, "malformed y-protocols frame");
                let why = format!("malformed y-protocols message: {e}");
                ctx.close(socket, close::POLICY, clip_reason(&why));
                return Ok(());
            }
        };
        let read_only = ctx.storage().is_read_only();
        let Some(checked) = Self::check_frame(ctx, socket, read_only, &messages) else {
            return Ok(());
        };
        let Some(accepted) = self.answer_frame(ctx, socket, read_only, messages, checked)? else {
            return Ok(());
        };
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

    /// Every state vector and update of the frame passes its checks before
    /// anything is answered or accepted; only applying (`answer_frame`) can
    /// still refuse an update. `None`: refused, the socket is closed.
    fn check_frame(
        ctx: &mut Ctx,
        socket: SocketId,
        read_only: bool,
        messages: &[wire::YMessage<'_>],
    ) -> Option<CheckedFrame> {
        let config = Self::config(ctx);
        let mut checked = Vec::new();
        let mut state_vectors = Vec::new();
        for message in messages {
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
                            return None;
                        }
                    }
                }
                (false, wire::YMessage::SyncStep2(u) | wire::YMessage::Update(u)) => {
                    match Self::check(&config, u) {
                        Ok(c) => checked.push(c),
                        Err(refusal) => {
                            refuse(ctx, socket, refusal);
                            return None;
                        }
                    }
                }
                _ => {}
            }
        }
        Some(CheckedFrame {
            updates: checked,
            state_vectors,
        })
    }

    /// Answers the frame's sync steps and accepts its updates, in order.
    /// Returns how many updates were accepted, or `None` if one was refused
    /// (the socket is closed; the updates before it stay accepted). One
    /// sent ahead of its client's earlier updates is parked, and tried
    /// again once this socket's later updates are in (`parked.rs`).
    fn answer_frame(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        read_only: bool,
        messages: Vec<wire::YMessage<'_>>,
        checked: CheckedFrame,
    ) -> Result<Option<u64>, ObjectError> {
        let mut checked_updates = checked.updates.into_iter();
        let mut state_vectors = checked.state_vectors.into_iter();
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
                    let this = checked_updates
                        .next()
                        .expect("invariant: every update of the frame was checked");
                    match self.accept_update(ctx, update, this)? {
                        Ok(broadcast) => {
                            if let Some(frame) = broadcast {
                                ctx.broadcast(None, frame, Some(socket));
                            }
                            accepted += 1;
                        }
                        Err(Refusal::Ahead(why)) if self.park(ctx, socket, update)? => {
                            tracing::debug!(%socket, why, "parked an update");
                        }
                        Err(refusal) => {
                            refuse(ctx, socket, refusal);
                            return Ok(None);
                        }
                    }
                }
                // Awareness is the socket layer's; auth and unknown types are ignored.
                _ => {}
            }
        }
        // What this frame accepted may complete updates parked before.
        if accepted > 0 && self.parked.contains_key(&socket) {
            let Some(unparked) = self.unpark(ctx, socket)? else {
                return Ok(None);
            };
            accepted += unparked;
        }
        Ok(Some(accepted))
    }
}

/// A frame's checked parts, in frame order.
struct CheckedFrame {
    /// Each update's check (`None`: it changes nothing).
    updates: Vec<Option<Checked>>,
    /// Each sync step 1's state vector, decoded.
    state_vectors: Vec<StateVector>,
}
