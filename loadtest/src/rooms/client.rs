//! One simulated room member: connects to the object WebSocket (the room
//! sends its history), calls `join`, then, while the phase says so, calls
//! `send` at its paced rate; it times every call's result and every
//! `message` event, and on `Drain` calls `who` to check presence.
//!
//! Calls in flight are remembered in a ring indexed by call id: a slot
//! still taken when its id comes round again is a call never answered
//! (counted as an error). The member holds its connect permit until its
//! `join` succeeded, which bounds the connections in progress.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use roost_protocol::{ClientFrame, ServerFrame};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::Shared;
use crate::pacing::Pacer;
use crate::report::client_histogram;
use crate::target::Target;
use crate::ws::{Kind, WsConn};
use crate::yclient::{marker_value, split_marker, Phase};
use crate::yjs;

/// What one member measured.
pub(super) struct Stats {
    /// Time from starting to connect until `join` succeeded.
    pub join: Option<Duration>,
    /// Messages in the history event received on connecting.
    pub history_len: usize,
    /// Call round trips, in µs.
    pub calls: Histogram<u32>,
    /// End-to-end latency of `message` events (own ones included), in µs;
    /// allocated at the first event.
    pub events: Option<Histogram<u32>>,
    pub sent: u64,
    /// Messages of other members received.
    pub delivered: u64,
    /// Own messages received back.
    pub own: u64,
    /// Calls that returned an error or were never answered.
    pub call_errors: u64,
    /// Members listed by `who`, once it answered.
    pub who: Option<usize>,
    pub error: Option<String>,
}

/// Calls in flight are remembered in a ring indexed by id.
const RING: usize = 4096;

/// The name of an event frame, found near its start without parsing the
/// JSON; `None` for anything else (call results).
pub(crate) fn event_kind(text: &[u8]) -> Option<&[u8]> {
    // `{"type":"event","event":"message",...}`: look for the event name near the start.
    let head = &text[..text.len().min(64)];
    let key = b"\"event\":\"";
    let at = head.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &head[at..];
    let end = rest.iter().position(|b| *b == b'"')?;
    Some(&rest[..end])
}

/// Fixed facts about one member.
pub(super) struct Member {
    /// Index among all members of the run (goes into markers).
    pub index: usize,
    pub target: Target,
    /// The room's WebSocket path.
    pub path: String,
    /// The run's clock origin for markers.
    pub origin: Instant,
    /// Text bytes per message beyond the marker.
    pub pad: usize,
}

/// Runs one member until the phase becomes `Stop` or the connection
/// fails (then `error` says why and `failed` is counted).
pub(super) async fn run(
    member: Member,
    phase_rx: watch::Receiver<Phase>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) -> Stats {
    let mut st = Stats {
        join: None,
        history_len: 0,
        calls: client_histogram(),
        events: None,
        sent: 0,
        delivered: 0,
        own: 0,
        call_errors: 0,
        who: None,
        error: None,
    };
    if let Err(e) = drive(&member, phase_rx, &shared, gate, &mut st).await {
        st.error = Some(format!("{e:#}"));
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    st
}

/// Connects, joins, and reacts to phase changes, the send timer and
/// incoming frames until `Stop` (or the phase sender is gone).
async fn drive(
    member: &Member,
    mut phase_rx: watch::Receiver<Phase>,
    shared: &Shared,
    gate: Arc<Semaphore>,
    st: &mut Stats,
) -> anyhow::Result<()> {
    let permit = gate.acquire_owned().await?;
    let t0 = Instant::now();
    let mut conn = WsConn::connect(&member.target, &member.path, &[]).await?;
    let mut s = Session {
        member,
        shared,
        st,
        ring: vec![None::<Instant>; RING],
        next_id: 1,
        join_id: 0,
        who_id: None,
        t0,
        permit: None,
        pacer: None,
        text: String::new(),
    };
    s.join_id = s.start_call(Instant::now());
    let name = format!("u{}", member.index);
    let join = ClientFrame::call(s.join_id, "join", serde_json::json!({ "name": name }));
    conn.send_text(&join).await?;
    s.permit = Some(permit);
    // One timer, re-armed when the next send moves.
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let phase = *phase_rx.borrow_and_update();
                if phase == Phase::Stop {
                    break;
                }
                if let Some(due) = s.on_phase(phase, &mut conn).await? {
                    timer.as_mut().reset(due.into());
                }
            }
            () = &mut timer, if s.pacer.is_some() => {
                if let Some(due) = s.send_message(&mut conn).await? {
                    timer.as_mut().reset(due.into());
                }
            }
            n = conn.read_more() => {
                if n? == 0 {
                    anyhow::bail!("server closed the connection");
                }
                s.read_frames(&mut conn)?;
                conn.flush_control().await?;
            }
        }
    }
    drop(s.permit.take());
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    Ok(())
}

/// A member's state while connected (the connection itself is passed in,
/// so frames borrowed from its buffer can be read while this changes).
struct Session<'a> {
    member: &'a Member,
    shared: &'a Shared,
    st: &'a mut Stats,
    /// When each call in flight was sent, at `id % RING`.
    ring: Vec<Option<Instant>>,
    next_id: u64,
    join_id: u64,
    /// The `who` call's id, once made.
    who_id: Option<u64>,
    /// When connecting began.
    t0: Instant,
    /// The connect permit, released once `join` succeeded.
    permit: Option<OwnedSemaphorePermit>,
    /// Set while sending.
    pacer: Option<Pacer>,
    /// The message text, reused.
    text: String,
}

impl Session<'_> {
    /// Takes the next call id and remembers `now` as its send time. A slot
    /// still taken belongs to an old call never answered: an error.
    fn start_call(&mut self, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.ring[id as usize % RING].replace(now).is_some() {
            self.st.call_errors += 1;
        }
        id
    }

    /// A new phase (not `Stop`): `Send` starts pacing (the returned time is
    /// when the first send is due), `Drain` stops it and calls `who`,
    /// `Hold` stops it.
    async fn on_phase(
        &mut self,
        phase: Phase,
        conn: &mut WsConn,
    ) -> anyhow::Result<Option<Instant>> {
        match phase {
            Phase::Send { start, rate, .. } => {
                // Spread members over one interval (golden-ratio phases).
                let offset = (self.member.index as f64 * 0.618_033_988_75).fract();
                let p = Pacer::new(start, rate, offset, Duration::from_millis(250));
                let due = p.due();
                self.pacer = Some(p);
                return Ok(Some(due));
            }
            Phase::Drain => {
                self.pacer = None;
                let id = self.next_id;
                self.next_id += 1;
                self.who_id = Some(id);
                let who = ClientFrame::call(id, "who", serde_json::json!({}));
                conn.send_text(&who).await?;
            }
            Phase::Hold | Phase::Stop => self.pacer = None,
        }
        Ok(None)
    }

    /// The send timer fired: calls `send` with a fresh timestamp marker
    /// (plus padding); returns when the next send is due.
    async fn send_message(&mut self, conn: &mut WsConn) -> anyhow::Result<Option<Instant>> {
        let now = Instant::now();
        let micros = now.duration_since(self.member.origin).as_micros() as u64;
        let m = yjs::write_marker(marker_value(self.member.index, micros));
        self.text.clear();
        self.text.push_str(std::str::from_utf8(&m).unwrap_or("~"));
        self.text.extend(std::iter::repeat_n('x', self.member.pad));
        let id = self.start_call(now);
        let send = ClientFrame::call(id, "send", serde_json::json!({ "text": self.text }));
        conn.send_text(&send).await?;
        self.st.sent += 1;
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        Ok(self.pacer.as_mut().map(|p| {
            p.sent(now);
            p.due()
        }))
    }

    /// Handles every complete frame already received: `message` events are
    /// timed by their markers (text scanned, not parsed), the `history`
    /// event gives its length, call results are timed and checked.
    fn read_frames(&mut self, conn: &mut WsConn) -> anyhow::Result<()> {
        let now = Instant::now();
        let now_us = now.duration_since(self.member.origin).as_micros() as u64;
        let mut delivered = 0;
        while let Some(msg) = conn.next_buffered()? {
            match msg.kind {
                Kind::Close => anyhow::bail!("server closed the socket"),
                Kind::Binary => continue,
                Kind::Text => {}
            }
            match event_kind(msg.payload) {
                Some(b"message") => delivered += self.on_message(msg.payload, now_us),
                Some(b"history") => {
                    if let Some(ServerFrame::Event { data, .. }) = decode(msg.payload) {
                        self.st.history_len = data
                            .get("messages")
                            .and_then(|m| m.as_array())
                            .map_or(0, Vec::len);
                    }
                }
                Some(_) => {}
                None => {
                    if let Some(ServerFrame::Result { id, ok, error }) = decode(msg.payload) {
                        self.on_result(id, ok.as_ref(), error.is_some(), now);
                    }
                }
            }
        }
        if delivered > 0 {
            self.st.delivered += delivered;
            self.shared
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Times a `message` event by its marker; returns 1 if another member
    /// sent it (a delivery), 0 if it was our own.
    fn on_message(&mut self, payload: &[u8], now_us: u64) -> u64 {
        let mut delivered = 0;
        yjs::scan_markers(payload, |v| {
            let (sender, sent_us) = split_marker(v);
            let lat = now_us.saturating_sub(sent_us);
            self.st
                .events
                .get_or_insert_with(client_histogram)
                .saturating_record(lat);
            if sender == self.member.index & 0xff_ffff {
                self.st.own += 1;
            } else {
                delivered += 1;
            }
        });
        delivered
    }

    /// A call's result: its round trip is recorded; the first successful
    /// `join` marks the member joined and releases its connect permit; the
    /// `who` answer gives the room's size.
    fn on_result(&mut self, id: u64, ok: Option<&serde_json::Value>, failed: bool, now: Instant) {
        if let Some(t) = self.ring[id as usize % RING].take() {
            self.st
                .calls
                .saturating_record(now.duration_since(t).as_micros() as u64);
        }
        if failed {
            self.st.call_errors += 1;
        }
        if id == self.join_id && !failed && self.st.join.is_none() {
            self.st.join = Some(self.t0.elapsed());
            self.shared.joined.fetch_add(1, Ordering::Relaxed);
            self.permit = None;
        }
        if Some(id) == self.who_id {
            self.st.who = ok.and_then(|v| v.as_array()).map(Vec::len);
        }
    }
}

/// A text frame as a server frame, if it is one.
fn decode(payload: &[u8]) -> Option<ServerFrame> {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| ServerFrame::decode(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_event_names() {
        let f = ServerFrame::event("message", serde_json::json!({"text": "x"})).encode();
        assert_eq!(event_kind(f.as_bytes()), Some(&b"message"[..]));
        let r = ServerFrame::ok(3, serde_json::json!({"id": 1})).encode();
        assert_eq!(event_kind(r.as_bytes()), None);
        assert_eq!(event_kind(b""), None);
        assert_eq!(event_kind(b"{\"event\":\"unterminated"), None);
    }
}
