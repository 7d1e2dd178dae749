//! `rooms`: Roost's `room` class over the object WebSocket
//! (`/v1/objects/room/{name}/ws`, JSON envelope). R rooms × C clients: each
//! client connects (and receives the history), calls `join`, then calls
//! `send` at a set rate; every `message` event is timed end to end. At the
//! end each client calls `who` to check presence.
//!
//! Events are recognised and timed on the raw text (no JSON parsing per
//! event); call results, which arrive at the send rate, are decoded with
//! `roost_protocol::ServerFrame`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use roost_protocol::{ClientFrame, ServerFrame};
use tokio::sync::{watch, Semaphore};

use crate::args::{parse_duration, Common};
use crate::pacing::Pacer;
use crate::probe::Probes;
use crate::progress::Progress;
use crate::report::{client_histogram, latency_histogram, merge_into, Latency, Report, Unit};
use crate::target::{encode_segment, Target};
use crate::ws::{Kind, WsConn};
use crate::yclient::{marker_value, split_marker, Phase};
use crate::yjs;

#[derive(clap::Args, Debug, Clone)]
pub struct RoomsArgs {
    /// Roost base URL.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Number of rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Clients per room (each its own WebSocket).
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Messages each client sends per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// How long clients send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Text bytes per message beyond the 19-byte timestamp marker.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// After sending stops, wait up to this long for the remaining events.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Room name prefix (default: rooms-<random>).
    #[arg(long)]
    pub room_prefix: Option<String>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Give up waiting for all clients to join after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

#[derive(Default)]
struct Shared {
    joined: AtomicUsize,
    failed: AtomicUsize,
    sent: AtomicU64,
    delivered: AtomicU64,
}

struct Stats {
    join: Option<Duration>,
    history_len: usize,
    calls: Histogram<u32>,
    events: Option<Histogram<u32>>,
    sent: u64,
    delivered: u64,
    own: u64,
    call_errors: u64,
    who: Option<usize>,
    error: Option<String>,
}

/// Calls in flight are remembered in a ring indexed by id.
const RING: usize = 4096;

pub(crate) fn event_kind(text: &[u8]) -> Option<&[u8]> {
    // `{"type":"event","event":"message",...}`: look for the event name near the start.
    let head = &text[..text.len().min(64)];
    let key = b"\"event\":\"";
    let at = head.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &head[at..];
    let end = rest.iter().position(|b| *b == b'"')?;
    Some(&rest[..end])
}

#[allow(clippy::too_many_arguments)]
async fn client(
    index: usize,
    room_size: usize,
    target: Target,
    path: String,
    origin: Instant,
    pad: usize,
    mut phase_rx: watch::Receiver<Phase>,
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
    let res: anyhow::Result<()> = async {
        let permit = gate.acquire_owned().await?;
        let t0 = Instant::now();
        let mut conn = WsConn::connect(&target, &path, &[]).await?;
        let mut next_id: u64 = 1;
        let mut ring = vec![None::<Instant>; RING];
        let join_id = next_id;
        next_id += 1;
        ring[join_id as usize % RING] = Some(Instant::now());
        let name = format!("u{index}");
        conn.send_text(&ClientFrame::call(join_id, "join", serde_json::json!({ "name": name }))).await?;
        let mut permit = Some(permit);
        let mut pacer: Option<Pacer> = None;
        let mut who_id = None;
        let mut text = String::new();
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
                    match phase {
                        Phase::Send { start, rate, .. } => {
                            let p = Pacer::new(start, rate, (index as f64 * 0.618_033_988_75).fract(), Duration::from_millis(250));
                            timer.as_mut().reset(p.due().into());
                            pacer = Some(p);
                        }
                        Phase::Drain => {
                            pacer = None;
                            let id = next_id;
                            next_id += 1;
                            who_id = Some(id);
                            conn.send_text(&ClientFrame::call(id, "who", serde_json::json!({}))).await?;
                        }
                        Phase::Stop => break,
                        Phase::Hold => pacer = None,
                    }
                }
                () = &mut timer, if pacer.is_some() => {
                    let now = Instant::now();
                    let m = yjs::write_marker(marker_value(index, now.duration_since(origin).as_micros() as u64));
                    text.clear();
                    text.push_str(std::str::from_utf8(&m).unwrap_or("~"));
                    text.extend(std::iter::repeat_n('x', pad));
                    let id = next_id;
                    next_id += 1;
                    if ring[id as usize % RING].replace(now).is_some() {
                        st.call_errors += 1; // an old call never answered
                    }
                    conn.send_text(&ClientFrame::call(id, "send", serde_json::json!({ "text": text }))).await?;
                    st.sent += 1;
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = pacer.as_mut() {
                        p.sent(now);
                        timer.as_mut().reset(p.due().into());
                    }
                }
                n = conn.read_more() => {
                    if n? == 0 {
                        anyhow::bail!("server closed the connection");
                    }
                    let now = Instant::now();
                    let now_us = now.duration_since(origin).as_micros() as u64;
                    let mut delivered = 0;
                    while let Some(msg) = conn.next_buffered()? {
                        match msg.kind {
                            Kind::Close => anyhow::bail!("server closed the socket"),
                            Kind::Binary => continue,
                            Kind::Text => {}
                        }
                        match event_kind(msg.payload) {
                            Some(b"message") => {
                                yjs::scan_markers(msg.payload, |v| {
                                    let (sender, sent_us) = split_marker(v);
                                    let lat = now_us.saturating_sub(sent_us);
                                    st.events.get_or_insert_with(client_histogram).saturating_record(lat);
                                    if sender == index & 0xff_ffff {
                                        st.own += 1;
                                    } else {
                                        delivered += 1;
                                    }
                                });
                            }
                            Some(b"history") => {
                                if let Ok(ServerFrame::Event { data, .. }) = std::str::from_utf8(msg.payload).map_or(Err(()), |s| ServerFrame::decode(s).map_err(|_| ())) {
                                    st.history_len = data.get("messages").and_then(|m| m.as_array()).map_or(0, Vec::len);
                                }
                            }
                            Some(_) => {}
                            None => {
                                let frame = std::str::from_utf8(msg.payload).ok().and_then(|s| ServerFrame::decode(s).ok());
                                if let Some(ServerFrame::Result { id, ok, error }) = frame {
                                    if let Some(t) = ring[id as usize % RING].take() {
                                        st.calls.saturating_record(now.duration_since(t).as_micros() as u64);
                                    }
                                    if error.is_some() {
                                        st.call_errors += 1;
                                    }
                                    if id == join_id && error.is_none() && st.join.is_none() {
                                        st.join = Some(t0.elapsed());
                                        shared.joined.fetch_add(1, Ordering::Relaxed);
                                        permit = None;
                                    }
                                    if Some(id) == who_id {
                                        st.who = ok.as_ref().and_then(|v| v.as_array()).map(Vec::len);
                                    }
                                }
                            }
                        }
                    }
                    if delivered > 0 {
                        st.delivered += delivered;
                        shared.delivered.fetch_add(delivered, Ordering::Relaxed);
                    }
                    conn.flush_control().await?;
                }
            }
        }
        drop(permit);
        let _ = room_size;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        Ok(())
    }
    .await;
    if let Err(e) = res {
        st.error = Some(format!("{e:#}"));
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    st
}

pub async fn run(args: RoomsArgs, common: &Common) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.rooms >= 1 && args.clients >= 1,
        "--rooms and --clients must be at least 1"
    );
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    let target = Target::parse(&args.url, common.allow_remote)?;
    let prefix = args
        .room_prefix
        .clone()
        .unwrap_or_else(|| format!("rooms-{:08x}", yjs::run_seed()));
    let origin = Instant::now();
    let (tx, rx) = watch::channel(Phase::Hold);
    let shared = Arc::new(Shared::default());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let total = args.rooms * args.clients;
    let mut tasks = Vec::with_capacity(total);
    for r in 0..args.rooms {
        let room = encode_segment(&format!("{prefix}-{r}"));
        for c in 0..args.clients {
            let index = r * args.clients + c;
            let path = target.path(&format!("/v1/objects/room/{room}/ws?name=u{index}"));
            tasks.push(tokio::spawn(client(
                index,
                args.clients,
                target.clone(),
                path,
                origin,
                args.pad,
                rx.clone(),
                shared.clone(),
                gate.clone(),
            )));
        }
    }
    let connecting = Progress::phase(&format!("joining {total} clients"));
    let t_join = Instant::now();
    let deadline = t_join + args.connect_timeout;
    while shared.joined.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let join_wall = t_join.elapsed();
    connecting.finish();
    let joined = shared.joined.load(Ordering::Relaxed);

    let probes = Probes::start(common, Some(&target)).await?;
    let start = Instant::now() + Duration::from_millis(20);
    if joined > 0 {
        let _ = tx.send(Phase::Send {
            start,
            rate: args.rate,
            once: false,
        });
        let counter = Arc::new(AtomicU64::new(0));
        let progress = Progress::timed("rooms", args.duration, counter.clone(), "events");
        while Instant::now() < start + args.duration {
            counter.store(shared.delivered.load(Ordering::Relaxed), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        progress.finish();
    }
    let _ = tx.send(Phase::Drain);
    let peers = (args.clients - 1) as u64;
    let t_drain = Instant::now();
    while t_drain.elapsed() < args.drain
        && shared.delivered.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed) * peers
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the `who` answers arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let drained = t_drain.elapsed();
    let mut report = Report::new("rooms");
    report.label = common.label.clone();
    probes.finish(&mut report).await;
    let _ = tx.send(Phase::Stop);

    let mut calls = latency_histogram();
    let mut events = latency_histogram();
    let mut joins = latency_histogram();
    let (mut sent, mut delivered, mut own, mut call_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut errors = Vec::new();
    let mut who_ok = 0usize;
    let mut history = 0usize;
    for t in tasks {
        let st = match t.await {
            Ok(st) => st,
            Err(e) => {
                errors.push(format!("client task failed: {e}"));
                continue;
            }
        };
        merge_into(&mut calls, &st.calls);
        if let Some(h) = &st.events {
            merge_into(&mut events, h);
        }
        if let Some(j) = st.join {
            joins.saturating_record(j.as_micros() as u64);
        }
        sent += st.sent;
        delivered += st.delivered;
        own += st.own;
        call_errors += st.call_errors;
        history = history.max(st.history_len);
        if st.who == Some(args.clients) {
            who_ok += 1;
        }
        if let Some(e) = st.error {
            errors.push(e);
        }
    }
    let expected = sent * peers;
    let window = args.duration.as_secs_f64() + drained.as_secs_f64();
    report
        .param("rooms", args.rooms)
        .param("clients", args.clients)
        .param("rate", args.rate)
        .param("duration_s", args.duration.as_secs_f64())
        .param("threads", common.threads);
    let mut f = Report::new("rooms");
    f.add("joined", joined as f64, Unit::Count)
        .add("join_wall_s", join_wall.as_secs_f64(), Unit::Seconds)
        .add("sent", sent as f64, Unit::Count)
        .add(
            "sent_per_s",
            sent as f64 / args.duration.as_secs_f64(),
            Unit::PerSec,
        )
        .add("delivered", delivered as f64, Unit::Count)
        .add("delivered_per_s", delivered as f64 / window, Unit::PerSec)
        .add("expected", expected as f64, Unit::Count)
        .add(
            "delivery_ratio",
            if expected > 0 {
                delivered as f64 / expected as f64
            } else {
                f64::NAN
            },
            Unit::Ratio,
        )
        .add("own_events", own as f64, Unit::Count)
        .add("presence_ok", who_ok as f64, Unit::Count)
        .add("max_history_on_join", history as f64, Unit::Count)
        .add(
            "errors",
            (errors.len() as u64 + call_errors) as f64,
            Unit::Count,
        );
    f.latency("join", &Latency::from_histogram(&joins));
    f.latency("call", &Latency::from_histogram(&calls));
    f.latency("event", &Latency::from_histogram(&events));
    f.figures.append(&mut report.figures);
    report.figures = f.figures;
    if let Some(e) = errors.first() {
        report.note(format!("{} clients failed; first: {e}", errors.len()));
    }
    if call_errors > 0 {
        report.note(format!(
            "{call_errors} calls returned an error or were never answered"
        ));
    }
    if who_ok < joined {
        report.note(format!(
            "`who` listed the whole room for {who_ok} of {joined} clients"
        ));
    }
    Ok(report)
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
