//! A small WebSocket client (RFC 6455) built for receiving many small frames
//! cheaply: one read buffer per connection, frames parsed in place and handed
//! to the caller as borrowed slices, so receiving a frame allocates nothing.
//! Pings are answered, fragmented messages are reassembled.
//!
//! Deliberately not here: TLS, extensions (permessage-deflate is never
//! offered), and verifying a random handshake nonce — the key is a constant,
//! which servers accept (it proves nothing about security on either side).

use std::ops::Range;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::target::Target;

/// The RFC 6455 sample nonce and its expected `Sec-WebSocket-Accept`.
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const HANDSHAKE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Largest handshake response accepted.
const MAX_HANDSHAKE: usize = 16 * 1024;
/// Initial read buffer; it grows only for frames that do not fit.
const INITIAL_BUFFER: usize = 2 * 1024;
/// Read at least this much free space at a time.
const MIN_READ: usize = 512;

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// What a caller receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Binary,
    Close,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub kind: Kind,
    pub payload: &'a [u8],
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub header_len: usize,
    pub payload_len: usize,
}

/// Parses a frame header from the start of `buf`; `None` if more bytes are
/// needed. Never panics.
pub(crate) fn parse_header(buf: &[u8]) -> anyhow::Result<Option<Header>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        bail!("frame uses reserved bits (no extension was negotiated)");
    }
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    let payload_len = usize::try_from(len).context("frame length")?;
    if opcode >= 0x8 && (payload_len > 125 || b0 & 0x80 == 0) {
        bail!("control frame too long or fragmented");
    }
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        header_len: at,
        payload_len,
    }))
}

/// XORs `data` with the mask, starting at mask offset 0.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one masked client frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Where a complete message's payload lives.
enum Payload {
    Buffer(Range<usize>),
    Fragments,
}

pub(crate) struct WsConn {
    stream: TcpStream,
    /// Bytes `start..end` of `rbuf` are received and not yet parsed.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    /// Reassembly of a fragmented message (allocates only when used).
    frag: Vec<u8>,
    frag_kind: Option<Kind>,
    /// A ping payload to answer with the next write.
    pong: Option<([u8; 125], usize)>,
    rng: u32,
    max_message: usize,
}

impl WsConn {
    /// Opens a TCP connection and performs the upgrade to `path`.
    pub(crate) async fn connect(
        target: &Target,
        path: &str,
        extra_headers: &[(&str, &str)],
    ) -> anyhow::Result<WsConn> {
        let stream = crate::connections::dial(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let mut conn = WsConn {
            stream,
            rbuf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(256),
            frag: Vec::new(),
            frag_kind: None,
            pong: None,
            rng: seed(target.addr.port(), path),
            max_message: 256 * 1024 * 1024,
        };
        conn.handshake(&target.authority, path, extra_headers)
            .await?;
        Ok(conn)
    }

    async fn handshake(
        &mut self,
        authority: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        let head_end = loop {
            if let Some(i) = find(&self.rbuf[..self.end], b"\r\n\r\n") {
                break i + 4;
            }
            if self.end >= MAX_HANDSHAKE {
                bail!("handshake response too large");
            }
            if self.end == self.rbuf.len() {
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.rbuf[self.end..]).await?;
            if n == 0 {
                bail!("connection closed during the WebSocket handshake");
            }
            self.end += n;
        };
        let head = String::from_utf8_lossy(&self.rbuf[..head_end]).into_owned();
        check_handshake_response(&head, path)?;
        self.start = head_end;
        Ok(())
    }

    /// Reads more bytes from the socket; returns 0 at end of stream.
    /// Cancel-safe: dropping the future loses no data.
    pub(crate) async fn read_more(&mut self) -> anyhow::Result<usize> {
        self.make_room(MIN_READ);
        let n = self.stream.read(&mut self.rbuf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Reads what is already available without waiting; 0 if nothing is.
    pub(crate) fn try_read_more(&mut self) -> anyhow::Result<usize> {
        self.make_room(MIN_READ);
        match self.stream.try_read(&mut self.rbuf[self.end..]) {
            Ok(0) => bail!("server closed the connection"),
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Ensures at least `free` bytes after `end`, compacting first.
    fn make_room(&mut self, free: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.rbuf.len() - self.end >= free {
            return;
        }
        if self.start > 0 {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.rbuf.len() - self.end < free {
            let want = (self.end + free).max(self.rbuf.len() * 2);
            self.rbuf.resize(want, 0);
        }
    }

    /// The next complete message already received, if any. Pings are
    /// answered at the next write (call [`WsConn::flush_control`] after
    /// draining), pongs are skipped.
    pub(crate) fn next_buffered(&mut self) -> anyhow::Result<Option<Message<'_>>> {
        loop {
            let Some(h) = parse_header(&self.rbuf[self.start..self.end])? else {
                return Ok(None);
            };
            let total = h.header_len + h.payload_len;
            if total > self.max_message {
                bail!("frame of {} bytes exceeds the limit", h.payload_len);
            }
            if self.end - self.start < total {
                // Make sure the whole frame will fit in the buffer.
                let have = self.end - self.start;
                self.make_room(total - have);
                return Ok(None);
            }
            let p0 = self.start + h.header_len;
            let p1 = p0 + h.payload_len;
            self.start = p1;
            if let Some(m) = h.mask {
                apply_mask(&mut self.rbuf[p0..p1], m);
            }
            let found = match h.opcode {
                OP_PING => {
                    let mut b = [0u8; 125];
                    b[..h.payload_len].copy_from_slice(&self.rbuf[p0..p1]);
                    self.pong = Some((b, h.payload_len));
                    None
                }
                OP_PONG => None,
                OP_CLOSE => Some((Kind::Close, Payload::Buffer(p0..p1))),
                OP_TEXT | OP_BINARY => {
                    let kind = if h.opcode == OP_TEXT {
                        Kind::Text
                    } else {
                        Kind::Binary
                    };
                    if self.frag_kind.is_some() {
                        bail!("new data frame inside a fragmented message");
                    }
                    if h.fin {
                        Some((kind, Payload::Buffer(p0..p1)))
                    } else {
                        self.frag.clear();
                        self.frag.extend_from_slice(&self.rbuf[p0..p1]);
                        self.frag_kind = Some(kind);
                        None
                    }
                }
                OP_CONTINUATION => {
                    let Some(kind) = self.frag_kind else {
                        bail!("continuation frame without a started message");
                    };
                    if self.frag.len() + h.payload_len > self.max_message {
                        bail!("fragmented message exceeds the limit");
                    }
                    self.frag.extend_from_slice(&self.rbuf[p0..p1]);
                    if h.fin {
                        self.frag_kind = None;
                        Some((kind, Payload::Fragments))
                    } else {
                        None
                    }
                }
                other => bail!("unknown opcode {other:#x}"),
            };
            if let Some((kind, at)) = found {
                let payload = match at {
                    Payload::Buffer(r) => &self.rbuf[r],
                    Payload::Fragments => &self.frag[..],
                };
                return Ok(Some(Message { kind, payload }));
            }
        }
    }

    /// Waits for the next message; `None` at end of stream.
    pub(crate) async fn next_message(&mut self) -> anyhow::Result<Option<Message<'_>>> {
        loop {
            // Peek without holding the borrow across the await below.
            if self.has_buffered_message()? {
                return self.next_buffered();
            }
            self.flush_control().await?;
            if self.read_more().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Whether a complete data or close message is buffered; consumes
    /// leading control frames and fragments while looking.
    fn has_buffered_message(&mut self) -> anyhow::Result<bool> {
        // Parsing consumes frames, so look without consuming: walk headers.
        let mut at = self.start;
        let mut frag = self.frag_kind.is_some();
        loop {
            let Some(h) = parse_header(&self.rbuf[at..self.end])? else {
                return Ok(false);
            };
            let total = h.header_len + h.payload_len;
            if self.end - at < total {
                return Ok(false);
            }
            at += total;
            match h.opcode {
                OP_CLOSE => return Ok(true),
                OP_TEXT | OP_BINARY if h.fin && !frag => return Ok(true),
                OP_TEXT | OP_BINARY => frag = true,
                OP_CONTINUATION if h.fin => return Ok(true),
                _ => {}
            }
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masks need not be secret for a load generator.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x.to_le_bytes()
    }

    fn push_pending_pong(&mut self) {
        if let Some((b, n)) = self.pong.take() {
            let m = self.next_mask();
            encode_frame(&mut self.wbuf, OP_PONG, &b[..n], m);
        }
    }

    /// Sends an answer to a received ping, if one is owed.
    pub(crate) async fn flush_control(&mut self) -> anyhow::Result<()> {
        if self.pong.is_none() {
            return Ok(());
        }
        self.wbuf.clear();
        self.push_pending_pong();
        self.stream.write_all(&self.wbuf).await?;
        Ok(())
    }

    /// Sends one message (and any owed pong). Not cancel-safe.
    pub(crate) async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        self.wbuf.clear();
        self.push_pending_pong();
        let m = self.next_mask();
        encode_frame(&mut self.wbuf, opcode, payload, m);
        self.stream.write_all(&self.wbuf).await?;
        Ok(())
    }

    pub(crate) async fn send_binary(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.send(OP_BINARY, payload).await
    }

    /// Sends several binary messages with one write (and any owed pong).
    /// Not cancel-safe.
    pub(crate) async fn send_binaries<'p>(
        &mut self,
        payloads: impl IntoIterator<Item = &'p [u8]>,
    ) -> anyhow::Result<()> {
        self.wbuf.clear();
        self.push_pending_pong();
        for p in payloads {
            let m = self.next_mask();
            encode_frame(&mut self.wbuf, OP_BINARY, p, m);
        }
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
        }
        Ok(())
    }

    pub(crate) async fn send_text(&mut self, payload: &str) -> anyhow::Result<()> {
        self.send(OP_TEXT, payload.as_bytes()).await
    }

    /// Sends a normal close (1000) and shuts down the write side.
    pub(crate) async fn close(mut self) -> anyhow::Result<()> {
        self.send(OP_CLOSE, &1000u16.to_be_bytes()).await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

fn seed(port: u16, path: &str) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut h: u32 = 0x811c_9dc5 ^ nanos ^ u32::from(port);
    for b in path.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h | 1
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks a handshake response head: status 101 and the expected accept key.
pub(crate) fn check_handshake_response(head: &str, path: &str) -> anyhow::Result<()> {
    let status = head.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "101" {
        bail!("WebSocket upgrade of {path} refused: {status:?}");
    }
    let accept = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| v.trim())
    });
    if accept != Some(HANDSHAKE_ACCEPT) {
        bail!("WebSocket upgrade of {path}: bad Sec-WebSocket-Accept {accept:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
        let n = payload.len();
        if n < 126 {
            v.push(n as u8);
        } else if n <= 65535 {
            v.push(126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_lengths_at_boundaries() {
        for n in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![7u8; n];
            let mut out = Vec::new();
            encode_frame(&mut out, OP_BINARY, &payload, [1, 2, 3, 4]);
            let h = parse_header(&out).expect("valid").expect("complete");
            assert_eq!(h.payload_len, n);
            assert_eq!(h.opcode, OP_BINARY);
            assert!(h.fin);
            assert_eq!(h.mask, Some([1, 2, 3, 4]));
            assert_eq!(h.header_len + n, out.len());
            let mut body = out[h.header_len..].to_vec();
            apply_mask(&mut body, [1, 2, 3, 4]);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn incomplete_headers_need_more() {
        let f = server_frame(OP_BINARY, true, &[0; 300]);
        for cut in 0..4 {
            assert_eq!(parse_header(&f[..cut]).expect("no error"), None);
        }
        assert!(parse_header(&f[..4]).expect("no error").is_some());
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        assert!(parse_header(&[0xC2, 0x00]).is_err()); // RSV1 set
        assert!(parse_header(&[0x89, 126, 0, 200]).is_err()); // long ping
        assert!(parse_header(&[0x09, 0x00]).is_err()); // fragmented ping
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = parse_header(&[a, b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
            }
        }
    }

    #[test]
    fn handshake_response_checks() {
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept: {HANDSHAKE_ACCEPT}\r\n\r\n");
        assert!(check_handshake_response(&ok, "/").is_ok());
        assert!(check_handshake_response("HTTP/1.1 404 Not Found\r\n\r\n", "/").is_err());
        assert!(check_handshake_response(
            "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n",
            "/"
        )
        .is_err());
    }

    /// A real server (tungstenite) sends text, binary, a ping and a
    /// fragmented message; our client reads them all and echoes.
    #[tokio::test]
    async fn talks_to_tungstenite() {
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::protocol::frame::{
            coding::Data, coding::OpCode, Frame,
        };
        use tokio_tungstenite::tungstenite::Message as TMessage;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(sock)
                .await
                .expect("upgrade");
            ws.send(TMessage::text("hello")).await.expect("send");
            ws.send(TMessage::binary(vec![1u8; 200_000]))
                .await
                .expect("send");
            ws.send(TMessage::Ping(vec![9, 9].into()))
                .await
                .expect("send");
            let mut f1 = Frame::message(b"frag".to_vec(), OpCode::Data(Data::Binary), false);
            f1.header_mut().is_final = false;
            ws.send(TMessage::Frame(f1)).await.expect("send");
            ws.send(TMessage::Frame(Frame::message(
                b"ment".to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )))
            .await
            .expect("send");
            let mut got = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    TMessage::Binary(b) => got.push(b.to_vec()),
                    TMessage::Pong(p) => got.push(p.to_vec()),
                    TMessage::Close(_) => break,
                    _ => {}
                }
            }
            got
        });
        let target = Target::parse(&format!("ws://{addr}"), false).expect("target");
        let mut c = WsConn::connect(&target, "/x", &[]).await.expect("connect");
        let m = c.next_message().await.expect("read").expect("message");
        assert_eq!((m.kind, m.payload), (Kind::Text, &b"hello"[..]));
        let m = c.next_message().await.expect("read").expect("message");
        assert_eq!(m.kind, Kind::Binary);
        assert_eq!(m.payload.len(), 200_000);
        let m = c.next_message().await.expect("read").expect("message");
        assert_eq!((m.kind, m.payload), (Kind::Binary, &b"fragment"[..]));
        c.flush_control().await.expect("pong");
        c.send_binary(b"echo").await.expect("send");
        c.close().await.expect("close");
        let got = server.await.expect("server");
        assert_eq!(got, vec![vec![9, 9], b"echo".to_vec()]);
    }
}
