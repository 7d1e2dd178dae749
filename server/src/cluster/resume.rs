//! Relayed object sockets that outlive their owner (docs/CLUSTER.md,
//! "Sockets"): the socket's *state* — its id, tags and attachment — signed
//! by the owner, kept by the relay, and presented to the next owner to
//! resume the socket there without `on_connect`.
//!
//! On a relay connection (the relay's upgrade request carries
//! `roost-relay: T`, T being an HMAC of a fixed text under the cluster's
//! key, which only nodes know, and the owner's answer `roost-relay:
//! framed`) the owner frames what it sends: text frames are the
//! object's own; a binary frame starts with a kind byte — [`DATA`] then the
//! object's binary frame, or [`STATE`] then a signed state. The relay strips
//! the framing and keeps the newest state; to resume it sends the state
//! back in `roost-resume` (base64url). A state is `HMAC-SHA256(key, json)
//! ‖ json`, the key being 32 random bytes every node reads from the
//! `roost-cluster` bucket (the first node creates them), so a client cannot
//! forge an attachment by sending the header itself.
//!
//! This module also keeps the relay's list of calls in flight, which fail
//! with `object_moved` when the owner dies before answering them. It does
//! not move the socket table: the owner's table holds the socket; the relay
//! holds only the state it was last told.

use std::collections::BTreeSet;

use anyhow::Context as _;
use async_nats::jetstream;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use roost_protocol::{ErrorCode, ErrorDetail, ServerFrame};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Cluster, ClusterConfig};
use crate::id::ObjectKey;
use crate::sockets::{ResumedSocket, SocketId};

/// The relay's request header asking for framed frames.
pub(crate) const RELAY: &str = "roost-relay";
/// The relay's request header carrying a state to resume.
pub(crate) const RESUME: &str = "roost-resume";
/// Kind byte: the object's own binary frame follows.
pub(crate) const DATA: u8 = 0;
/// Kind byte: a signed socket state follows.
pub(crate) const STATE: u8 = 1;

const BUCKET: &str = "roost-cluster";
const KEY: &str = "relay-key";
const MAC_BYTES: usize = 32;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a state says. Signed; the object's id binds it to its object.
#[derive(Serialize, Deserialize)]
struct State {
    object: String,
    socket: u64,
    tags: Vec<String>,
    attachment: Option<String>,
}

/// The cluster's relay key: read from `roost-cluster`, created (32 bytes
/// of `/dev/urandom`) by the first node that finds none.
pub(super) async fn relay_key(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> anyhow::Result<Vec<u8>> {
    let kv = super::ensure_kv(js, BUCKET, std::time::Duration::ZERO, config.replicas).await?;
    if let Some(key) = kv.get(KEY).await.context("reading the relay key")? {
        return Ok(key.to_vec());
    }
    let mut fresh = vec![0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut fresh)?;
    // Another node may have created it meanwhile: theirs wins.
    let _ = kv.create(KEY, fresh.into()).await;
    kv.get(KEY)
        .await
        .context("reading the relay key")?
        .map(|k| k.to_vec())
        .context("the relay key vanished")
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("invariant: HMAC takes keys of any length")
}

impl Cluster {
    /// The control frame telling a relay `socket`'s state.
    pub(crate) fn state_frame(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        tags: &[String],
        attachment: Option<&[u8]>,
    ) -> bytes::Bytes {
        sign(&self.0.relay_key, key, socket, tags, attachment)
    }

    /// The socket a `roost-resume` header names, if its signature holds
    /// and it belongs to `key`.
    pub(crate) fn resumed(&self, key: &ObjectKey, header: &str) -> Option<ResumedSocket> {
        verify(&self.0.relay_key, key, header)
    }

    /// The `roost-relay` value this cluster's nodes send.
    pub(super) fn relay_token(&self) -> String {
        relay_token(&self.0.relay_key)
    }

    /// Whether a `roost-relay` value is one a node of this cluster sent.
    pub(crate) fn is_relay(&self, header: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        self.relay_token().as_bytes().ct_eq(header).into()
    }
}

fn relay_token(relay_key: &[u8]) -> String {
    let mut m = mac(relay_key);
    m.update(b"roost-relay v1");
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// [`STATE`], the signature, the state.
fn sign(
    relay_key: &[u8],
    key: &ObjectKey,
    socket: SocketId,
    tags: &[String],
    attachment: Option<&[u8]>,
) -> bytes::Bytes {
    let state = State {
        object: key.id.to_string(),
        socket: socket.0,
        tags: tags.to_vec(),
        attachment: attachment.map(|a| B64.encode(a)),
    };
    let json = serde_json::to_vec(&state).unwrap_or_default();
    let mut m = mac(relay_key);
    m.update(&json);
    let mut frame = Vec::with_capacity(1 + MAC_BYTES + json.len());
    frame.push(STATE);
    frame.extend_from_slice(&m.finalize().into_bytes());
    frame.extend_from_slice(&json);
    frame.into()
}

fn verify(relay_key: &[u8], key: &ObjectKey, header: &str) -> Option<ResumedSocket> {
    let blob = B64.decode(header).ok()?;
    let (sig, json) = blob.split_at_checked(MAC_BYTES)?;
    let mut m = mac(relay_key);
    m.update(json);
    m.verify_slice(sig).ok()?;
    let state: State = serde_json::from_slice(json).ok()?;
    if state.object != key.id.to_string() {
        return None;
    }
    let attachment = match state.attachment {
        Some(a) => Some(B64.decode(a).ok()?),
        None => None,
    };
    Some(ResumedSocket {
        socket: SocketId(state.socket),
        tags: state.tags,
        attachment,
    })
}

/// The relay's side of an object socket: the newest state the owner sent,
/// and the calls passed upstream and not yet answered.
#[derive(Default)]
pub(super) struct Resumable {
    /// The owner frames this connection (it answered `roost-relay`; an
    /// older owner does not, and its sockets are not resumed).
    pub(super) framed: bool,
    state: Option<bytes::Bytes>,
    calls: BTreeSet<u64>,
}

/// The parts of a frame the relay looks at.
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: String,
    id: Option<u64>,
}

fn peek(text: &str) -> Option<(String, u64)> {
    let p: Peek = serde_json::from_str(text).ok()?;
    Some((p.kind, p.id?))
}

/// The id of the call a client's text frame makes, if it is a well-formed
/// one (the owner answers those, and only those, with a result).
pub(super) fn call_id(text: &str) -> Option<u64> {
    if !text.contains("\"call\"") {
        return None;
    }
    match roost_protocol::ClientFrame::decode(text) {
        Ok(roost_protocol::ClientFrame::Call { id, .. }) => Some(id),
        _ => None,
    }
}

impl Resumable {
    /// A call passed to the owner is now in flight.
    pub(super) fn sent_call(&mut self, id: u64) {
        self.calls.insert(id);
    }

    /// A text frame from the owner: a result answers its call.
    pub(super) fn owner_text(&mut self, text: &str) {
        // Results are encoded with their type first (`ServerFrame`).
        if self.calls.is_empty() || !text.starts_with(r#"{"type":"result""#) {
            return;
        }
        if let Some(("result", id)) = peek(text).as_ref().map(|(k, id)| (k.as_str(), *id)) {
            self.calls.remove(&id);
        }
    }

    /// A binary frame from the owner, framed: the object's own frame to
    /// pass on, or `None` (a state was kept, or a frame without a kind).
    pub(super) fn owner_binary(&mut self, mut frame: bytes::Bytes) -> Option<bytes::Bytes> {
        if !self.framed {
            return Some(frame);
        }
        match frame.first() {
            Some(&DATA) => Some(frame.split_off(1)),
            Some(&STATE) => {
                self.state = Some(frame.split_off(1));
                None
            }
            _ => None,
        }
    }

    /// The header value to resume with, once the owner accepted the socket.
    pub(super) fn resume_header(&self) -> Option<String> {
        self.state.as_ref().map(|s| B64.encode(s))
    }

    /// Error results for the calls the lost owner never answered.
    pub(super) fn fail_calls(&mut self) -> Vec<String> {
        let detail = ErrorDetail {
            code: ErrorCode::ObjectMoved,
            message: "the object's node went away before answering; the call may or may not \
                      have run; retry"
                .into(),
        };
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|id| ServerFrame::err(id, detail.clone()).encode())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_in_flight_fail_once_and_answered_ones_do_not() {
        let mut r = Resumable::default();
        for text in [
            r#"{"type":"call","id":1,"method":"a","args":{}}"#,
            r#"{"type":"call","id":2,"method":"a","args":{}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"call","id":3}"#,
            "not json",
        ] {
            if let Some(id) = call_id(text) {
                r.sent_call(id);
            }
        }
        r.owner_text(r#"{"type":"result","id":1,"ok":5}"#);
        let failed = r.fail_calls();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains(r#""id":2"#), "{}", failed[0]);
        assert!(failed[0].contains("object_moved"), "{}", failed[0]);
        assert!(r.fail_calls().is_empty());
    }

    #[test]
    fn framed_binary_is_unwrapped_and_states_are_kept() {
        let mut r = Resumable::default();
        let plain = r.owner_binary(bytes::Bytes::from_static(&[STATE, 1]));
        assert_eq!(plain.as_deref(), Some(&[STATE, 1][..]), "unframed");
        r.framed = true;
        assert!(r.resume_header().is_none());
        let data = r.owner_binary(bytes::Bytes::from_static(&[DATA, 7, 8]));
        assert_eq!(data.as_deref(), Some(&[7u8, 8][..]));
        assert!(r
            .owner_binary(bytes::Bytes::from_static(&[STATE, 1, 2]))
            .is_none());
        assert_eq!(r.resume_header(), Some(B64.encode([1u8, 2])));
        assert!(r.owner_binary(bytes::Bytes::new()).is_none());
        // What the owner's socket task writes for a relay comes out whole.
        let framed = crate::sockets::relay_data(&[DATA, STATE, 9]);
        let data = r.owner_binary(framed);
        assert_eq!(data.as_deref(), Some(&[DATA, STATE, 9][..]));
    }

    #[test]
    fn a_state_resumes_only_its_object_and_only_unchanged() {
        let key = ObjectKey::new("room", "r").expect("key");
        let tags = vec!["member".to_owned()];
        let frame = sign(b"k", &key, SocketId(5), &tags, Some(b"{\"name\":\"a\"}"));
        let mut r = Resumable {
            framed: true,
            ..Resumable::default()
        };
        assert!(r.owner_binary(frame).is_none());
        let header = r.resume_header().expect("a state");
        let s = verify(b"k", &key, &header).expect("resumes");
        assert_eq!((s.socket, s.tags), (SocketId(5), tags));
        assert_eq!(s.attachment.as_deref(), Some(&b"{\"name\":\"a\"}"[..]));
        assert!(verify(b"other key", &key, &header).is_none());
        let other = ObjectKey::new("room", "s").expect("key");
        assert!(verify(b"k", &other, &header).is_none());
        let mut blob = B64.decode(&header).expect("b64");
        let last = blob.len() - 2;
        blob[last] ^= 1;
        assert!(verify(b"k", &key, &B64.encode(blob)).is_none());
        assert!(verify(b"k", &key, "%%").is_none());
    }
}
