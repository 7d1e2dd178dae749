//! One Yjs client's life: connect (holding a connect permit until synced),
//! send step 1, answer the server's step 1, then react to phase changes,
//! its send timer and incoming frames until `Stop`.
//!
//! Sending follows the phase: `Send` with `once` sends one update and then
//! a sync request (whose step 2 answer counts as a resync); otherwise a
//! sender paces updates at the rate (open loop, see `pacing.rs`), spread
//! over one interval by its index. Slots skipped by the pacer are counted
//! when pacing stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::scribe::{Scribe, Workload};
use super::{empty_stats, marker_value, split_marker, Phase, Shared, Spec, Stats};
use crate::pacing::Pacer;
use crate::report::client_histogram;
use crate::target::Target;
use crate::ws::{Kind, WsConn};
use crate::yjs::{self, Author, Framer, Incoming};

/// Connects and runs one client until the phase becomes `Stop` or the
/// connection fails. Never panics on bad input from the server.
pub(super) async fn run(
    spec: Spec,
    target: Target,
    origin: Instant,
    mut phase: watch::Receiver<Phase>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) -> Stats {
    let mut stats = empty_stats();
    if let Err(e) = drive(
        &spec, &target, origin, &mut phase, &shared, &mut stats, gate,
    )
    .await
    {
        stats.error = Some(format!("{e:#}"));
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

async fn drive(
    spec: &Spec,
    target: &Target,
    origin: Instant,
    phase_rx: &mut watch::Receiver<Phase>,
    shared: &Shared,
    stats: &mut Stats,
    gate: Arc<Semaphore>,
) -> anyhow::Result<()> {
    // Held from connecting until synced: bounds connections in progress.
    let permit = Some(gate.acquire_owned().await?);
    let t0 = Instant::now();
    let conn = WsConn::connect(target, &spec.path, &[]).await?;
    let mut link = Link {
        spec,
        origin,
        shared,
        stats,
        t0,
        permit,
        conn,
        framer: Framer::new(spec.protocol, &spec.doc),
        author: Author::new(spec.client_id),
        scribe: (spec.workload != Workload::Append)
            .then(|| Scribe::new(spec.client_id, spec.workload, spec.first.clone())),
        text: String::with_capacity(yjs::MARKER_LEN + spec.pad),
    };
    link.handshake().await?;
    let _ = *phase_rx.borrow_and_update();
    let mut schedule = Schedule::default();
    // One timer, re-armed when the next send moves (no timer per loop turn).
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    // Frames may have arrived with the handshake response.
    link.answer_buffered().await?;
    loop {
        let sending = schedule.sending(spec.sender);
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let phase = *phase_rx.borrow_and_update();
                link.stats.skipped += schedule.stop_pacing();
                if phase == Phase::Stop {
                    break;
                }
                if let Some(at) = schedule.on_phase(phase, spec) {
                    timer.as_mut().reset(at.into());
                }
            }
            () = &mut timer, if sending => {
                let now = link.send_update().await?;
                if let Some(due) = schedule.sent(now, &mut link).await? {
                    timer.as_mut().reset(due.into());
                }
            }
            n = link.conn.read_more() => {
                if n? == 0 {
                    anyhow::bail!("server closed the connection");
                }
                link.answer_buffered().await?;
                link.conn.flush_control().await?;
            }
        }
    }
    link.stats.skipped += schedule.stop_pacing();
    let Link { conn, permit, .. } = link;
    drop(permit);
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    Ok(())
}

/// When this client sends next: paced, or one update pending (`once`).
#[derive(Default)]
struct Schedule {
    pacer: Option<Pacer>,
    once_pending: bool,
}

impl Schedule {
    /// Whether the send timer is armed.
    fn sending(&self, sender: bool) -> bool {
        self.once_pending || (self.pacer.is_some() && sender)
    }

    /// Stops pacing; returns the slots the pacer skipped.
    fn stop_pacing(&mut self) -> u64 {
        self.pacer.take().map_or(0, |p| p.skipped())
    }

    /// A new phase (not `Stop`; pacing already stopped). Returns when the
    /// timer should fire next, if it moves.
    fn on_phase(&mut self, phase: Phase, spec: &Spec) -> Option<Instant> {
        match phase {
            Phase::Send { start, rate, once } => {
                if once {
                    self.once_pending = spec.sender;
                    Some(start)
                } else if spec.sender {
                    // Spread clients over one interval (golden-ratio phases).
                    let p = (spec.index as f64 * 0.618_033_988_75).fract();
                    let pc = Pacer::new(start, rate, p, Duration::from_millis(250));
                    let due = pc.due();
                    self.pacer = Some(pc);
                    Some(due)
                } else {
                    None
                }
            }
            Phase::Hold | Phase::Drain | Phase::Stop => {
                self.once_pending = false;
                None
            }
        }
    }

    /// An update went out at `now`: a `once` send is followed by a sync
    /// request; a paced one moves the timer to the next slot (returned).
    async fn sent(&mut self, now: Instant, link: &mut Link<'_>) -> anyhow::Result<Option<Instant>> {
        if self.once_pending {
            self.once_pending = false;
            // Also check that the server still answers a sync request.
            link.send_step1().await?;
            Ok(None)
        } else {
            Ok(self.pacer.as_mut().map(|p| {
                p.sent(now);
                p.due()
            }))
        }
    }
}

/// A connected client: its socket, its Yjs document and what it measures.
struct Link<'a> {
    spec: &'a Spec,
    /// The run's clock origin for markers.
    origin: Instant,
    shared: &'a Shared,
    stats: &'a mut Stats,
    /// When connecting began.
    t0: Instant,
    /// The connect permit, released at the first step 2.
    permit: Option<OwnedSemaphorePermit>,
    conn: WsConn,
    framer: Framer,
    author: Author,
    /// Writes instead of `author` for the prepend and random workloads.
    scribe: Option<Scribe>,
    /// The update text, reused.
    text: String,
}

impl Link<'_> {
    /// The auth message (if the protocol has one), then step 1.
    async fn handshake(&mut self) -> anyhow::Result<()> {
        if let Some(auth) = self.framer.auth(&self.spec.token) {
            self.conn.send_binary(auth).await?;
        }
        self.send_step1().await
    }

    /// A sync request: our state vector.
    async fn send_step1(&mut self) -> anyhow::Result<()> {
        let mut sv = self.author.state_vector();
        if let Some(s) = &self.scribe {
            sv.set_max(yrs::ClientID::new(self.spec.client_id), s.clock());
        }
        self.conn.send_binary(self.framer.step1(&sv)).await
    }

    /// Appends a fresh timestamp marker (plus padding) to the text and
    /// sends the update; returns the send time.
    async fn send_update(&mut self) -> anyhow::Result<Instant> {
        let now = Instant::now();
        self.text.clear();
        let micros = now.duration_since(self.origin).as_micros() as u64;
        let m = yjs::write_marker(marker_value(self.spec.index, micros));
        // The marker is ASCII by construction.
        self.text.push_str(std::str::from_utf8(&m).unwrap_or("~"));
        self.text.extend(std::iter::repeat_n('x', self.spec.pad));
        match &mut self.scribe {
            Some(s) => {
                let update = s.insert(&self.text);
                self.conn.send_binary(self.framer.update(update)).await?;
            }
            None => {
                let update = self.author.append(&self.text);
                self.conn.send_binary(self.framer.update(&update)).await?;
            }
        }
        self.stats.sent += 1;
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        Ok(now)
    }

    /// Handles the buffered frames and sends the step 2 answer they owe.
    async fn answer_buffered(&mut self) -> anyhow::Result<()> {
        if let Some(owe) = self.handle_buffered()? {
            self.conn.send_binary(self.framer.step2(&owe)).await?;
        }
        Ok(())
    }

    /// Handles every complete message already received. Returns the step 2
    /// answer owed if the server sent its step 1.
    fn handle_buffered(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let spec = self.spec;
        let now_us = self.origin.elapsed().as_micros() as u64;
        let mut delivered = 0u64;
        let mut owe = None;
        while let Some(msg) = self.conn.next_buffered()? {
            match msg.kind {
                Kind::Close => anyhow::bail!("server sent close {:?}", close_code(msg.payload)),
                Kind::Text => continue,
                Kind::Binary => {}
            }
            match yjs::classify(spec.protocol, msg.payload)? {
                Incoming::Update(u) => {
                    if let Some(s) = &mut self.scribe {
                        s.learn(u);
                    }
                    let stats = &mut *self.stats;
                    yjs::scan_markers(u, |v| {
                        let (sender, sent_us) = split_marker(v);
                        if sender == spec.index & 0xff_ffff {
                            stats.echoes += 1;
                        } else {
                            stats
                                .latency
                                .get_or_insert_with(client_histogram)
                                .saturating_record(now_us.saturating_sub(sent_us));
                            delivered += 1;
                        }
                    });
                }
                Incoming::Step2(_) => {
                    if self.stats.connect.is_none() {
                        self.stats.connect = Some(self.t0.elapsed());
                        self.shared.synced.fetch_add(1, Ordering::Relaxed);
                        self.permit = None;
                    } else {
                        self.stats.resyncs += 1;
                    }
                }
                Incoming::Step1(sv) => {
                    let sv = yjs::decode_state_vector(sv)?;
                    owe = Some(self.author.diff(&sv));
                }
                Incoming::Awareness | Incoming::Other(_) => {}
            }
        }
        if delivered > 0 {
            self.stats.delivered += delivered;
            self.shared
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
        Ok(owe)
    }
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}
