//! The bounded queue of frames waiting to be written to one socket
//! ([`Outbox`]), the per-batch staging of frames for many sockets
//! ([`Staged`]) and the heartbeat that pings silent sockets.
//!
//! Architecture Invariant: an outbox never holds more than its byte limit. A
//! push that would exceed it drops the queue and kills the socket (closed
//! 1013): a slow reader is disconnected, never buffered without bound, and
//! never blocks the object. Its one reader is the socket's own task.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Message;
use futures_util::task::AtomicWaker;
use roost_protocol::close;

use super::{SocketHub, SocketId};

/// Keeps sockets honest about being alive, without waking any object:
/// every `interval`, a socket silent for a whole interval is sent a
/// WebSocket ping (clients answer pings by themselves), and one silent for
/// three intervals after that — a client frozen or gone without a close —
/// is closed (1001), freeing its connection.
pub(crate) async fn heartbeat(hub: Arc<SocketHub>, interval: std::time::Duration) {
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut closed = 0;
        for o in hub.accepted_outboxes() {
            match o
                .silent_ticks
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
            {
                2 => {
                    o.push(OutFrame::Msg(Message::Ping(Default::default())));
                }
                5 => {
                    closed += 1;
                    o.push(OutFrame::Close(
                        close::GOING_AWAY,
                        "no answer to pings".into(),
                    ));
                }
                _ => {}
            }
        }
        if closed > 0 {
            tracing::info!(
                sockets = closed,
                "closing sockets that stopped answering pings"
            );
        }
    }
}

/// What the socket task writes next.
pub(crate) enum OutFrame {
    Msg(Message),
    Close(u16, String),
    /// A relay connection's control frame (cluster mode), written as a
    /// binary frame as it is.
    Control(bytes::Bytes),
}

fn frame_len(f: &OutFrame) -> usize {
    match f {
        OutFrame::Msg(Message::Text(t)) => t.len(),
        OutFrame::Msg(Message::Binary(b)) => b.len(),
        OutFrame::Msg(_) => 16,
        OutFrame::Close(_, r) => r.len() + 2,
        OutFrame::Control(b) => b.len(),
    }
}

#[derive(Default)]
struct OutboxState {
    frames: VecDeque<OutFrame>,
    bytes: usize,
    killed: bool,
}

/// The bounded queue of frames waiting to be written to one socket.
///
/// Its one reader is the socket's task, so a single `AtomicWaker` wakes it
/// (a `Notify` would make every idle socket's task hold a 64-byte
/// `Notified` while it waits).
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    waker: AtomicWaker,
    limit: usize,
    /// Heartbeat ticks since the client last sent anything (`heartbeat`).
    silent_ticks: AtomicU8,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            waker: AtomicWaker::new(),
            limit,
            silent_ticks: AtomicU8::new(0),
        }
    }

    /// The client sent a frame (any, a pong included): it is alive.
    pub(crate) fn heard(&self) {
        self.silent_ticks.store(0, Ordering::Relaxed);
    }

    /// Queues a frame; returns false if the socket is (now) killed.
    pub(crate) fn push(&self, frame: OutFrame) -> bool {
        self.enqueue(frame_len(&frame), std::iter::once(frame))
    }

    /// Queues several frames under one lock and wakes the writer once;
    /// returns false if the socket is (now) killed.
    pub(crate) fn push_all(&self, frames: Vec<OutFrame>) -> bool {
        let len = frames.iter().map(frame_len).sum();
        self.enqueue(len, frames)
    }

    /// Queues `frames` (`len` bytes in all), or kills the socket if they
    /// would take its queue over the limit.
    fn enqueue(&self, len: usize, frames: impl IntoIterator<Item = OutFrame>) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        if st.killed {
            return false;
        }
        let queued = if st.bytes + len > self.limit {
            st.killed = true;
            st.frames.clear();
            st.bytes = 0;
            false
        } else {
            st.bytes += len;
            st.frames.extend(frames);
            true
        };
        drop(st);
        self.waker.wake();
        queued
    }

    /// Resolves once frames are queued or the socket was killed. For the
    /// socket's own task only (one waker is kept).
    pub(crate) fn ready(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_until(cx, |st| st.killed || !st.frames.is_empty()))
    }

    /// Resolves once the socket was killed. For the socket's own task only.
    pub(crate) fn killed(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_until(cx, |st| st.killed))
    }

    fn poll_until(
        &self,
        cx: &mut std::task::Context<'_>,
        done: impl Fn(&OutboxState) -> bool,
    ) -> std::task::Poll<()> {
        // Register first: a push after the check below wakes this task.
        self.waker.register(cx.waker());
        if self.state.lock().map_or(true, |st| done(&st)) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Takes every queued frame (the queue keeps no buffer while empty);
    /// also returns whether the socket was killed.
    pub(crate) fn take(&self) -> (VecDeque<OutFrame>, bool) {
        let Ok(mut st) = self.state.lock() else {
            return (VecDeque::new(), true);
        };
        st.bytes = 0;
        (std::mem::take(&mut st.frames), st.killed)
    }

    #[cfg(test)]
    pub(crate) fn is_killed(&self) -> bool {
        self.state.lock().map_or(true, |s| s.killed)
    }
}

/// Frames gathered per socket while a batch's outputs are released, so each
/// socket's queue is locked and its writer woken once per batch rather than
/// once per frame. Order per socket is the order frames were staged.
#[derive(Default)]
pub(crate) struct Staged {
    index: HashMap<SocketId, usize>,
    queues: Vec<(Arc<Outbox>, Vec<OutFrame>)>,
}

impl Staged {
    pub(super) fn add(&mut self, id: SocketId, outbox: &Arc<Outbox>, frame: OutFrame) {
        let queues = &mut self.queues;
        let i = *self.index.entry(id).or_insert_with(|| {
            queues.push((outbox.clone(), Vec::new()));
            queues.len() - 1
        });
        self.queues[i].1.push(frame);
    }

    /// Queues everything staged.
    pub(crate) fn flush(self) {
        for (outbox, frames) in self.queues {
            outbox.push_all(frames);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_kills_on_overflow_and_stays_bounded() {
        let o = Outbox::new(100);
        assert!(o.push(OutFrame::Msg(Message::Text("x".repeat(60).into()))));
        assert!(!o.push(OutFrame::Msg(Message::Text("y".repeat(60).into()))));
        assert!(o.is_killed());
        assert!(!o.push(OutFrame::Msg(Message::Text("z".into()))));
        let (out, killed) = o.take();
        assert!(killed);
        assert!(out.is_empty(), "a killed outbox holds nothing");
    }
}
