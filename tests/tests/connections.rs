//! Connection hygiene against the real binary: silent and half-sent TCP
//! connections are counted at accept (per IP and in all), refused beyond
//! the caps with a JSON answer, and closed once the header timeout passes;
//! other clients are served meanwhile.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use roost_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `server` from the loopback address `from`.
async fn connect_from(server: SocketAddr, from: [u8; 4]) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    Ok(socket.connect(server).await?)
}

/// What the server sends before closing, if it closes within `wait`
/// (`None`: still open).
async fn closed_with(conn: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(wait, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.is_ok()
        .then(|| String::from_utf8_lossy(&got).into_owned())
}

async fn healthz_from(server: SocketAddr, from: [u8; 4]) -> anyhow::Result<String> {
    let mut c = connect_from(server, from).await?;
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut out)).await??;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_capped_and_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--max-connections-per-ip",
            "40",
            "--max-connections",
            "100",
            "--header-timeout",
            "3s",
        ],
    )
    .await?;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse()?;
    // One attacker address: 40 silent and 40 half-sent connections.
    // (All opened before any is looked at: the header timeout runs meanwhile.)
    let mut conns = Vec::new();
    for i in 0..80 {
        let mut c = connect_from(addr, [127, 0, 0, 2]).await?;
        if i % 2 == 1 {
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await?;
        }
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for mut c in conns {
        match closed_with(&mut c, Duration::from_millis(5)).await {
            Some(answer) => refused.push(answer),
            None => held.push(c),
        }
    }
    assert_eq!(held.len(), 40, "the per-IP cap held a different number");
    assert!(
        refused
            .iter()
            .all(|a| a.starts_with("HTTP/1.1 429") && a.contains("rate_limited")),
        "refusals: {refused:?}"
    );
    // Everyone else is served meanwhile.
    assert!(healthz_from(addr, [127, 0, 0, 1])
        .await?
        .starts_with("HTTP/1.1 200"));
    // The global cap: 60 more from other addresses fill it to 100.
    for i in 0..60u8 {
        held.push(connect_from(addr, [127, 0, 1, 1 + i / 30]).await?);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = connect_from(addr, [127, 0, 0, 1]).await?;
    let answer = closed_with(&mut over, Duration::from_secs(2)).await;
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 503") && a.contains("connection limit")),
        "over the global cap: {answer:?}"
    );
    // The header timeout closes every held connection, silent or half-sent.
    for (i, c) in held.iter_mut().enumerate() {
        assert!(
            closed_with(c, Duration::from_secs(5)).await.is_some(),
            "connection {i} is still open after the header timeout"
        );
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Slots are given back: the attacker's address is served again.
    assert!(healthz_from(addr, [127, 0, 0, 2])
        .await?
        .starts_with("HTTP/1.1 200"));
    server.terminate().await?;
    Ok(())
}
