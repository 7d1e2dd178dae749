//! One client of a trace replay: a writer (one agent of the trace, sending
//! its precomputed keystroke updates) or a reader (keeping every update it
//! receives, to rebuild the document's text after the run). Both time what
//! they receive from the other agents and count it.
//!
//! A writer sends its next keystroke once (1) the keystrokes of the other
//! agents it was typed against have reached it (as a real editor could
//! only type against what it had received), and (2) it is due: at
//! `start + place / (rate × agents)`, its place among all agents'
//! keystrokes in trace order (late sends go at once, none is skipped), or with
//! `rate` 0 as soon as fewer than `window` of its updates are still on their
//! way to the document's first reader.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::key::update_key;
use super::replay::{Replay, Step};
use crate::report::client_histogram;
use crate::target::Target;
use crate::ws::{Kind, WsConn};
use crate::yclient::Phase;
use crate::yjs::{self, Framer, Incoming, Protocol};

/// Send times are kept for this many recent updates of each agent.
const RING: usize = 1 << 15;

/// What the clients of one document share.
pub(crate) struct DocShared {
    /// Per agent: how many of its updates the first reader has received.
    pub seen: Vec<AtomicU32>,
    /// Woken when `seen` moves.
    pub notify: Notify,
    /// Per agent: send times (µs since the run's origin), by update index mod `RING`.
    sent_at: Vec<Box<[AtomicU64]>>,
    /// Per agent: updates sent.
    pub sent: Vec<AtomicU32>,
}

impl DocShared {
    pub(crate) fn new(agents: usize) -> DocShared {
        DocShared {
            seen: (0..agents).map(|_| AtomicU32::new(0)).collect(),
            notify: Notify::new(),
            sent_at: (0..agents)
                .map(|_| (0..RING).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            sent: (0..agents).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// Who a client is.
#[derive(Clone)]
pub(crate) struct Role {
    pub protocol: Protocol,
    pub doc: String,
    pub path: String,
    pub token: String,
    /// `Some(agent)`: a writer; `None`: a reader (`first`: the one writers' windows follow).
    pub agent: Option<usize>,
    pub first_reader: bool,
    /// Keystrokes/s per writer; 0: as fast as `window` allows.
    pub rate: f64,
    pub window: u32,
}

/// What one client measured.
#[derive(Default)]
pub(crate) struct Outcome {
    pub connected: bool,
    pub delivered: u64,
    pub latency: Option<Histogram<u32>>,
    /// A reader's received updates (sync step 2 answers included), in order.
    pub received: Vec<Vec<u8>>,
    pub unknown: u64,
    pub error: Option<String>,
}

/// Run-wide counters for progress and draining.
#[derive(Default)]
pub(crate) struct Counters {
    pub synced: AtomicU32,
    pub failed: AtomicU32,
    pub delivered: AtomicU64,
    pub writers_done: AtomicU32,
}

pub(crate) struct Ctx {
    pub replay: Arc<Replay>,
    pub doc: Arc<DocShared>,
    pub counters: Arc<Counters>,
    pub origin: Instant,
}

pub(crate) async fn run(
    role: Role,
    ctx: Ctx,
    target: Target,
    phase: watch::Receiver<Phase>,
    gate: Arc<Semaphore>,
) -> Outcome {
    let mut out = Outcome::default();
    let counters = ctx.counters.clone();
    if let Err(e) = drive(&role, ctx, &target, phase, gate, &mut out).await {
        out.error = Some(format!("{e:#}"));
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

async fn drive(
    role: &Role,
    ctx: Ctx,
    target: &Target,
    mut phase_rx: watch::Receiver<Phase>,
    gate: Arc<Semaphore>,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let permit = Some(gate.acquire_owned().await?);
    let conn = WsConn::connect(target, &role.path, &[]).await?;
    let agents = ctx.replay.agents.len();
    let mut c = Client {
        role,
        ctx,
        conn,
        framer: Framer::new(role.protocol, &role.doc),
        permit,
        received: vec![0; agents],
        next: 0,
        start: None,
        out,
    };
    if let Some(auth) = c.framer.auth(&role.token) {
        c.conn.send_binary(auth).await?;
    }
    let empty = yrs::StateVector::default();
    c.conn.send_binary(c.framer.step1(&empty)).await?;
    c.handle_buffered().await?;
    let _ = *phase_rx.borrow_and_update();
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    loop {
        let doc = c.ctx.doc.clone();
        let notified = doc.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = c.send_ready().await?;
        if let Wait::At(at) = wait {
            timer.as_mut().reset(at.into());
        }
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                match *phase_rx.borrow_and_update() {
                    Phase::Stop => break,
                    Phase::Send { start, .. } => c.start = Some(start),
                    Phase::Hold | Phase::Drain => c.start = None,
                }
            }
            () = &mut timer, if matches!(wait, Wait::At(_)) => {}
            () = &mut notified, if matches!(wait, Wait::Window) => {}
            n = c.conn.read_more() => {
                if n? == 0 {
                    anyhow::bail!("server closed the connection");
                }
                c.handle_buffered().await?;
                c.conn.flush_control().await?;
            }
        }
    }
    drop(c.permit.take());
    let conn = c.conn;
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    Ok(())
}

/// Why a writer is not sending now.
enum Wait {
    /// Not a writer, not sending, finished, or waiting for other agents'
    /// keystrokes (a read will change that).
    Idle,
    /// Its next keystroke is due then.
    At(Instant),
    /// Its window is full: the first reader must receive more.
    Window,
}

struct Client<'a> {
    role: &'a Role,
    ctx: Ctx,
    conn: WsConn,
    framer: Framer,
    permit: Option<OwnedSemaphorePermit>,
    /// Per agent: how many of its updates this client received.
    received: Vec<u32>,
    /// A writer's next update.
    next: usize,
    /// When sending began (`None`: not sending).
    start: Option<Instant>,
    out: &'a mut Outcome,
}

impl Client<'_> {
    /// Sends every keystroke that may go now (at most 64 per call, with one
    /// write, so reads keep up); returns what the next one waits for.
    async fn send_ready(&mut self) -> anyhow::Result<Wait> {
        let (Some(agent), Some(start)) = (self.role.agent, self.start) else {
            return Ok(Wait::Idle);
        };
        let replay = self.ctx.replay.clone();
        let steps = &replay.agents[agent];
        let first = self.next;
        let mut wait = Wait::At(Instant::now());
        let now = Instant::now();
        let micros = now.duration_since(self.ctx.origin).as_micros() as u64;
        while self.next < first + 64 {
            match self.may_send(steps, agent, start, now) {
                Some(w) => {
                    wait = w;
                    break;
                }
                None => {
                    self.ctx.doc.sent_at[agent][self.next % RING].store(micros, Ordering::Relaxed);
                    self.next += 1;
                }
            }
        }
        if self.next > first {
            let framer = &mut self.framer;
            let mut frames = Vec::with_capacity(self.next - first);
            for s in &steps[first..self.next] {
                frames.push(framer.update(&s.bytes).to_vec());
            }
            self.conn
                .send_binaries(frames.iter().map(Vec::as_slice))
                .await?;
            self.ctx.doc.sent[agent].store(self.next as u32, Ordering::Release);
            if self.next == steps.len() {
                self.ctx
                    .counters
                    .writers_done
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(wait)
    }

    /// `None` if the next keystroke may go at `now`, else what it waits for.
    fn may_send(&self, steps: &[Step], agent: usize, start: Instant, now: Instant) -> Option<Wait> {
        let Some(step) = steps.get(self.next) else {
            return Some(Wait::Idle);
        };
        let ready = step
            .deps
            .iter()
            .zip(&self.received)
            .enumerate()
            .all(|(b, (need, have))| b == agent || have >= need);
        if !ready {
            return Some(Wait::Idle);
        }
        if self.role.rate > 0.0 {
            let agents = self.received.len() as f64;
            let due =
                start + Duration::from_secs_f64(f64::from(step.place) / (self.role.rate * agents));
            return (due > now).then_some(Wait::At(due));
        }
        let seen = self.ctx.doc.seen[agent].load(Ordering::Acquire);
        (self.next as u32 >= seen + self.role.window).then_some(Wait::Window)
    }

    /// Handles every complete message received; answers a server's step 1.
    async fn handle_buffered(&mut self) -> anyhow::Result<()> {
        let now_us = self.ctx.origin.elapsed().as_micros() as u64;
        let mut owe_step2 = false;
        let mut delivered = 0u64;
        while let Some(msg) = self.conn.next_buffered()? {
            match msg.kind {
                Kind::Close => anyhow::bail!("server closed the socket"),
                Kind::Text => continue,
                Kind::Binary => {}
            }
            match yjs::classify(self.role.protocol, msg.payload)? {
                Incoming::Update(u) => {
                    let u = u.to_vec();
                    if self.on_update(&u, now_us)? {
                        delivered += 1;
                    }
                    if self.role.agent.is_none() {
                        self.out.received.push(u);
                    }
                }
                Incoming::Step2(u) => {
                    if self.role.agent.is_none() {
                        self.out.received.push(u.to_vec());
                    }
                    if !self.out.connected {
                        self.out.connected = true;
                        self.ctx.counters.synced.fetch_add(1, Ordering::Relaxed);
                        self.permit = None;
                    }
                }
                Incoming::Step1(_) => owe_step2 = true,
                Incoming::Awareness | Incoming::Other(_) => {}
            }
        }
        if delivered > 0 {
            self.out.delivered += delivered;
            self.ctx
                .counters
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
        if owe_step2 {
            // Our own updates come from the trace; the server has them all
            // (or will, in order): nothing to offer.
            self.conn.send_binary(self.framer.step2(&[0, 0])).await?;
        }
        Ok(())
    }

    /// Counts and times one received update; whether it is one of the
    /// trace's keystrokes from another agent.
    fn on_update(&mut self, update: &[u8], now_us: u64) -> anyhow::Result<bool> {
        let Some(key) = update_key(update)? else {
            return Ok(false);
        };
        let Some(&(agent, k)) = self.ctx.replay.index.get(&key) else {
            self.out.unknown += 1;
            return Ok(false);
        };
        let agent = agent as usize;
        if self.role.agent == Some(agent) {
            return Ok(false);
        }
        self.received[agent] = self.received[agent].max(k + 1);
        if self.role.first_reader {
            self.ctx.doc.seen[agent].fetch_max(k + 1, Ordering::Release);
            self.ctx.doc.notify.notify_waiters();
        }
        let sent = self.ctx.doc.sent_at[agent][k as usize % RING].load(Ordering::Relaxed);
        if sent > 0 {
            self.out
                .latency
                .get_or_insert_with(client_histogram)
                .saturating_record(now_us.saturating_sub(sent));
        }
        Ok(true)
    }
}
