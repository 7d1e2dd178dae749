//! Yjs on the wire for load clients: building y-protocols sync messages
//! (with `yrs::sync`), the Hocuspocus framing (a document-name prefix on
//! every message), classifying received messages without allocating, and the
//! latency marker that senders write into their text and receivers find in
//! the raw update bytes.
//!
//! A load client never applies what it receives: its own updates only refer
//! to its own earlier items (it always appends to its own run of text), so
//! they are valid without knowing anybody else's state.

use anyhow::{bail, Context as _};
use yrs::encoding::read::{Cursor, Read as _};
use yrs::encoding::write::Write as _;
use yrs::updates::decoder::Decode as _;
use yrs::updates::encoder::Encode as _;
use yrs::{
    Doc, GetString as _, ReadTxn as _, StateVector, Text as _, TextRef, Transact as _, Update,
};

/// How messages are framed on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// Roost's `/v1/yjs/{doc}` endpoint (y-websocket framing).
    Roost,
    /// y-websocket-server: `ws://host:port/{doc}`.
    YWebsocket,
    /// Hocuspocus: every message prefixed with the document name.
    Hocuspocus,
    /// y-sweet: y-websocket framing on the socket URL its HTTP API hands
    /// out (`POST /doc/new`, then `POST /doc/{id}/auth`; see `ysweet.rs`).
    #[value(name = "y-sweet")]
    YSweet,
}

impl Protocol {
    /// The flag value (`roost`, `y-websocket`, `hocuspocus`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Roost => "roost",
            Protocol::YWebsocket => "y-websocket",
            Protocol::Hocuspocus => "hocuspocus",
            Protocol::YSweet => "y-sweet",
        }
    }

    /// The request path for `doc` under the URL's base path. For y-sweet
    /// this is the path its auth answer names when the server has no auth
    /// key and no URL prefix; `ysweet::doc_paths` asks the server instead.
    pub(crate) fn path(self, base: &str, doc: &str) -> String {
        let doc = crate::target::encode_segment(doc);
        match self {
            Protocol::Roost => format!("{base}/v1/yjs/{doc}"),
            Protocol::YWebsocket | Protocol::Hocuspocus => format!("{base}/{doc}"),
            Protocol::YSweet => format!("{base}/d/{doc}/ws/{doc}"),
        }
    }
}

/// Hocuspocus message types (its own numbering after the name prefix).
pub(crate) const HP_SYNC: u32 = 0;
pub(crate) const HP_AUTH: u32 = 2;
pub(crate) const HP_SYNC_REPLY: u32 = 4;

/// Builds outgoing messages for one document into a reused buffer.
pub(crate) struct Framer {
    protocol: Protocol,
    doc: String,
    buf: Vec<u8>,
}

impl Framer {
    pub(crate) fn new(protocol: Protocol, doc: &str) -> Framer {
        Framer {
            protocol,
            doc: doc.to_string(),
            buf: Vec::with_capacity(128),
        }
    }

    fn start(&mut self) {
        self.buf.clear();
        if self.protocol == Protocol::Hocuspocus {
            self.buf.write_string(&self.doc);
        }
    }

    /// Sync step 1 carrying our state vector.
    pub(crate) fn step1(&mut self, sv: &StateVector) -> &[u8] {
        self.start();
        self.buf.write_var(0u8);
        self.buf.write_var(0u8);
        self.buf.write_buf(sv.encode_v1());
        &self.buf
    }

    /// Sync step 2 carrying an update (the answer to the server's step 1).
    pub(crate) fn step2(&mut self, update: &[u8]) -> &[u8] {
        self.start();
        self.buf.write_var(0u8);
        self.buf.write_var(1u8);
        self.buf.write_buf(update);
        &self.buf
    }

    /// An update message.
    pub(crate) fn update(&mut self, update: &[u8]) -> &[u8] {
        self.start();
        // Same bytes as `Message::Sync(SyncMessage::Update(..))` without
        // copying the update into an owned Vec first.
        self.buf.write_var(0u8);
        self.buf.write_var(2u8);
        self.buf.write_buf(update);
        &self.buf
    }

    /// Hocuspocus's authentication message (sent first; the token may be
    /// empty when the server has no `onAuthenticate` hook). `None` for other
    /// protocols.
    pub(crate) fn auth(&mut self, token: &str) -> Option<&[u8]> {
        if self.protocol != Protocol::Hocuspocus {
            return None;
        }
        self.start();
        self.buf.write_var(HP_AUTH);
        self.buf.write_var(0u8); // AuthMessageType.Token
        self.buf.write_string(token);
        Some(&self.buf)
    }
}

/// A received message, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    Step1(&'a [u8]),
    Step2(&'a [u8]),
    Update(&'a [u8]),
    Awareness,
    /// Anything else (auth replies, Hocuspocus sync status, queries).
    Other(u32),
}

/// Classifies a binary message. Never panics and never allocates.
pub(crate) fn classify(protocol: Protocol, msg: &[u8]) -> anyhow::Result<Incoming<'_>> {
    let mut c = Cursor::new(msg);
    if protocol == Protocol::Hocuspocus {
        c.read_string()
            .map_err(|e| anyhow::anyhow!("document name prefix: {e}"))?;
    }
    let tag: u32 = c
        .read_var()
        .map_err(|e| anyhow::anyhow!("message type: {e}"))?;
    // Hocuspocus answers a step 1 with its own step 1 tagged `SyncReply` (4).
    let tag = if protocol == Protocol::Hocuspocus && tag == HP_SYNC_REPLY {
        HP_SYNC
    } else {
        tag
    };
    match tag {
        0 => {
            let sub: u32 = c
                .read_var()
                .map_err(|e| anyhow::anyhow!("sync type: {e}"))?;
            let len: u32 = c
                .read_var()
                .map_err(|e| anyhow::anyhow!("sync payload length: {e}"))?;
            // Slice the original buffer so the result outlives the cursor.
            let body = msg
                .get(c.next..c.next.saturating_add(len as usize))
                .context("sync payload is truncated")?;
            Ok(match sub {
                0 => Incoming::Step1(body),
                1 => Incoming::Step2(body),
                2 => Incoming::Update(body),
                other => bail!("unknown sync message type {other}"),
            })
        }
        1 => Ok(Incoming::Awareness),
        other => Ok(Incoming::Other(other)),
    }
}

/// Length of an encoded marker: `~L` + 16 hex digits + `~`.
pub(crate) const MARKER_LEN: usize = 19;

/// Writes the marker for `micros` (time since the run's origin).
pub(crate) fn write_marker(micros: u64) -> [u8; MARKER_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut m = [0u8; MARKER_LEN];
    m[0] = b'~';
    m[1] = b'L';
    for i in 0..16 {
        m[2 + i] = HEX[((micros >> (60 - 4 * i)) & 0xf) as usize];
    }
    m[18] = b'~';
    m
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        _ => None,
    }
}

/// Calls `f` with the timestamp of every marker in `bytes`, in order.
/// Allocation-free; returns how many were found.
pub(crate) fn scan_markers(bytes: &[u8], mut f: impl FnMut(u64)) -> usize {
    let mut found = 0;
    let mut i = 0;
    while i + MARKER_LEN <= bytes.len() {
        if bytes[i] == b'~' && bytes[i + 1] == b'L' && bytes[i + 18] == b'~' {
            let mut v = 0u64;
            let mut ok = true;
            for &b in &bytes[i + 2..i + 18] {
                match hex_value(b) {
                    Some(d) => v = (v << 4) | d,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                f(v);
                found += 1;
                i += MARKER_LEN;
                continue;
            }
        }
        i += 1;
    }
    found
}

/// A client id for the `index`-th load client of a run: unique within the
/// run (index below 2^21) and, through 11 bits of `run_seed`, mostly across
/// runs. Kept below 2^32 like the random ids real Yjs clients pick: with
/// ids up to 2^52, y-sweet 0.9.1 intermittently never applied any update
/// from some clients (two per affected document; cause not established).
pub(crate) fn client_id(run_seed: u32, index: usize) -> u64 {
    (u64::from(run_seed & 0x7ff) << 21) | (index as u64 & 0x1f_ffff)
}

/// A per-run seed from the clock (not for security).
pub(crate) fn run_seed() -> u32 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let x = d.as_nanos() as u64;
    let x = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 32) as u32
}

/// The name of the shared text type the load clients write to.
pub(crate) const TEXT_NAME: &str = "t";

/// A writer of updates: one Yjs replica that only appends to the text.
pub(crate) struct Author {
    doc: Doc,
    text: TextRef,
}

impl Author {
    pub(crate) fn new(client_id: u64) -> Author {
        let doc = Doc::with_client_id(client_id);
        let text = doc.get_or_insert_text(TEXT_NAME);
        Author { doc, text }
    }

    /// Appends `s` to our own text; returns the v1 update of that change.
    pub(crate) fn append(&mut self, s: &str) -> Vec<u8> {
        let mut txn = self.doc.transact_mut();
        let len = self.text.len(&txn);
        self.text.insert(&mut txn, len, s);
        txn.encode_update_v1()
    }

    /// What we have that a peer with state vector `sv` lacks (a step 2 answer).
    pub(crate) fn diff(&self, sv: &StateVector) -> Vec<u8> {
        self.doc.transact().encode_diff_v1(sv)
    }

    pub(crate) fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }
}

/// A replica that applies what it receives (for cold-load checks; allocates).
pub(crate) struct Replica {
    doc: Doc,
    text: TextRef,
}

impl Default for Replica {
    fn default() -> Self {
        let doc = Doc::new();
        let text = doc.get_or_insert_text(TEXT_NAME);
        Replica { doc, text }
    }
}

impl Replica {
    pub(crate) fn apply(&mut self, update: &[u8]) -> anyhow::Result<()> {
        let u = Update::decode_v1(update).context("decoding an update")?;
        self.doc
            .transact_mut()
            .apply_update(u)
            .context("applying an update")?;
        Ok(())
    }

    pub(crate) fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }
}

/// Decodes a state vector (the server's step 1 payload).
pub(crate) fn decode_state_vector(bytes: &[u8]) -> anyhow::Result<StateVector> {
    StateVector::decode_v1(bytes).context("decoding a state vector")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a whole document to a fresh replica; returns its text.
    fn apply_to_new_doc(update: &[u8]) -> anyhow::Result<String> {
        let mut r = Replica::default();
        r.apply(update)?;
        Ok(r.text())
    }

    use yrs::sync::{Message, SyncMessage};
    use yrs::updates::decoder::DecoderV1;

    #[test]
    fn markers_round_trip() {
        for v in [0u64, 1, 0xdead_beef, u64::MAX, 1_234_567_890_123] {
            let m = write_marker(v);
            let mut got = Vec::new();
            assert_eq!(scan_markers(&m, |x| got.push(x)), 1);
            assert_eq!(got, vec![v]);
        }
    }

    #[test]
    fn scans_several_markers_among_noise() {
        let mut bytes = b"~L~~Lxyz".to_vec();
        bytes.extend_from_slice(&write_marker(5));
        bytes.extend_from_slice(&write_marker(7));
        bytes.extend_from_slice(b"~Lzzzzzzzzzzzzzzzz~ tail ~L");
        let mut got = Vec::new();
        assert_eq!(scan_markers(&bytes, |x| got.push(x)), 2);
        assert_eq!(got, vec![5, 7]);
        assert_eq!(scan_markers(b"", |_| ()), 0);
    }

    #[test]
    fn update_messages_match_yrs_encoding_and_carry_markers() {
        let mut a = Author::new(client_id(42, 3));
        let m = write_marker(99);
        let update = a.append(std::str::from_utf8(&m).expect("ascii"));
        let mut f = Framer::new(Protocol::YWebsocket, "doc");
        let ours = f.update(&update).to_vec();
        let theirs = Message::Sync(SyncMessage::Update(update.clone())).encode_v1();
        assert_eq!(ours, theirs);
        match classify(Protocol::YWebsocket, &ours).expect("valid") {
            Incoming::Update(u) => {
                let mut got = Vec::new();
                scan_markers(u, |x| got.push(x));
                assert_eq!(got, vec![99]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let step2 = f.step2(&update).to_vec();
        assert_eq!(
            step2,
            Message::Sync(SyncMessage::SyncStep2(update)).encode_v1()
        );
    }

    #[test]
    fn hocuspocus_prefix_round_trips() {
        let mut a = Author::new(client_id(1, 1));
        let update = a.append("hi");
        let mut f = Framer::new(Protocol::Hocuspocus, "my doc");
        let msg = f.update(&update).to_vec();
        let mut d = DecoderV1::from(msg.as_slice());
        assert_eq!(d.read_string().expect("name"), "my doc");
        assert!(
            matches!(classify(Protocol::Hocuspocus, &msg), Ok(Incoming::Update(u)) if u == update.as_slice())
        );
        let step1 = f.step1(&a.state_vector()).to_vec();
        assert!(matches!(
            classify(Protocol::Hocuspocus, &step1),
            Ok(Incoming::Step1(_))
        ));
        let auth = f.auth("").expect("hocuspocus has auth").to_vec();
        assert!(matches!(
            classify(Protocol::Hocuspocus, &auth),
            Ok(Incoming::Other(HP_AUTH))
        ));
        assert!(Framer::new(Protocol::Roost, "d").auth("").is_none());
    }

    #[test]
    fn classify_never_panics_on_garbage() {
        for len in 0..6 {
            for seed in 0..2000u32 {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 17) >> (i % 3)) as u8)
                    .collect();
                let _ = classify(Protocol::YWebsocket, &bytes);
                let _ = classify(Protocol::Hocuspocus, &bytes);
            }
        }
        assert!(classify(Protocol::YWebsocket, &[]).is_err());
        assert!(classify(Protocol::YWebsocket, &[0, 9, 0]).is_err());
    }

    #[test]
    fn appended_updates_apply_in_order_on_a_fresh_doc() {
        let mut a = Author::new(client_id(7, 0));
        let mut b = Author::new(client_id(7, 1));
        let doc = Doc::new();
        let text = doc.get_or_insert_text(TEXT_NAME);
        for i in 0..20 {
            let u = if i % 2 == 0 {
                a.append("a")
            } else {
                b.append("b")
            };
            let mut txn = doc.transact_mut();
            txn.apply_update(Update::decode_v1(&u).expect("valid"))
                .expect("applies");
        }
        let s = text.get_string(&doc.transact());
        assert_eq!(s.len(), 20);
        assert_eq!(s.matches('a').count(), 10);
        let whole = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(apply_to_new_doc(&whole).expect("valid").len(), 20);
    }

    #[test]
    fn client_ids_are_distinct_and_small() {
        let a = client_id(u32::MAX, 0);
        let b = client_id(u32::MAX, 1);
        assert_ne!(a, b);
        assert!(a < (1u64 << 32) && b < (1u64 << 32));
    }

    #[test]
    fn protocol_paths() {
        assert_eq!(Protocol::Roost.path("", "d 1"), "/v1/yjs/d%201");
        assert_eq!(Protocol::YWebsocket.path("/base", "d"), "/base/d");
        assert_eq!(Protocol::YSweet.path("", "d"), "/d/d/ws/d");
    }
}
