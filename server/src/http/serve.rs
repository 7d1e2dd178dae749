//! The accept loop. Every TCP connection is counted at accept against a
//! global cap and a per-IP cap; one over either gets a short static answer
//! (503 / 429) and is closed before any HTTP parsing. HTTP/1.1 is served by
//! hyper with a header-read timeout, which also bounds how long an idle
//! keep-alive connection stays open, so silent and half-sent connections
//! cannot pile up. A WebSocket keeps its counted connection for its life.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;

/// Connection limits of the accept loop.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Most open TCP connections in all (0: the open-file limit minus 1,024).
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 0,
            header_timeout: Duration::from_secs(30),
        }
    }
}

impl ConnLimits {
    /// The global cap in force: the flag, or the open-file limit minus what
    /// the objects' files, the log and the catalog need.
    pub fn effective_max(&self, open_files: u64) -> usize {
        let by_fds = usize::try_from(open_files.saturating_sub(1024).max(64)).unwrap_or(usize::MAX);
        match self.max_connections {
            0 => by_fds,
            n => n,
        }
    }
}

/// Open connections, in all and per IP.
#[derive(Default)]
struct Counter {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    refused: AtomicU64,
    last_warned: Mutex<Option<Instant>>,
}

/// Why a connection was refused at accept.
#[derive(Clone, Copy)]
enum Refusal {
    Total,
    PerIp,
}

impl Counter {
    fn admit(self: &Arc<Self>, ip: IpAddr, max: usize, max_per_ip: usize) -> Result<Slot, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Slot {
            counter: self.clone(),
            ip,
        })
    }

    /// Logs refusals at most every 10 s, with the count since the last line.
    fn note_refusal(&self, why: Refusal, ip: IpAddr, max: usize, max_per_ip: usize) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_warned.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        match why {
            Refusal::Total => tracing::warn!(
                refused_total = refused,
                limit = max,
                "refusing connections: the server holds its most open connections (--max-connections)"
            ),
            Refusal::PerIp => tracing::warn!(
                refused_total = refused,
                %ip,
                limit = max_per_ip,
                "refusing connections from an address at its limit (--max-connections-per-ip)"
            ),
        }
    }
}

/// One counted connection; uncounted when dropped.
struct Slot {
    counter: Arc<Counter>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counter.total.fetch_sub(1, Ordering::AcqRel);
        self.counter.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// A TCP stream that holds its slot for as long as it is open, including
/// after a WebSocket upgrade.
struct Counted {
    tcp: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The answer to a refused connection, written without waiting (the socket
/// buffer of a fresh connection has room) before it is closed.
fn refusal_bytes(why: Refusal) -> Vec<u8> {
    let (status, code, message) = match why {
        Refusal::Total => (
            "503 Service Unavailable",
            roost_protocol::ErrorCode::Overloaded,
            "the server is at its connection limit (--max-connections); retry later",
        ),
        Refusal::PerIp => (
            "429 Too Many Requests",
            roost_protocol::ErrorCode::RateLimited,
            "too many open connections from this address (--max-connections-per-ip)",
        ),
    };
    let body =
        serde_json::to_string(&roost_protocol::ErrorBody::new(code, message)).unwrap_or_default();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `stop` resolves; then stops
/// accepting, lets every HTTP connection finish its request, and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    max_per_ip: usize,
    open_files: u64,
    stop: impl std::future::Future<Output = ()>,
) {
    let max = limits.effective_max(open_files);
    tracing::debug!(
        max_connections = max,
        max_per_ip = max_per_ip,
        "connection limits"
    );
    let counter = Arc::new(Counter::default());
    let (signal_tx, signal_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(stop);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before
                    // accept): back off a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let slot = match counter.admit(addr.ip(), max, max_per_ip) {
            Ok(slot) => slot,
            Err(why) => {
                let _ = tcp.try_write(&refusal_bytes(why));
                counter.note_refusal(why, addr.ip(), max, max_per_ip);
                continue;
            }
        };
        // Replies and socket frames are small and latency-bound: never let
        // Nagle's algorithm hold them back behind a delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let io = TokioIo::new(Counted { tcp, _slot: slot });
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            // The request id is given here, before routing, rather than by a
            // middleware layer on every route: one boxed service less per
            // request.
            let id = super::trace::assign_request_id(req.headers_mut());
            let response = router.clone().oneshot(req);
            async move {
                let mut response = response.await?;
                response.headers_mut().insert(super::trace::REQUEST_ID, id);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let mut signal = signal_rx.clone();
        let done = done_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = signal.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, timeout = e.is_timeout(), "HTTP connection ended");
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = signal_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
}
