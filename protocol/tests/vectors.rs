//! Checks the byte-exact vectors in `protocol/vectors/` against this crate, so
//! the Rust server and the TypeScript client (which checks the same files in
//! `client-ts/test/unit/vectors.test.ts`) cannot drift apart.
//!
//! - `envelope.json`: every server frame decodes with `ServerFrame::decode` and
//!   re-encodes with `ServerFrame::encode` to the exact same text; every client
//!   call, auth and ping frame decodes with `ClientFrame::decode` as documented;
//!   error bodies round-trip through `ErrorBody`.
//!   The `error` and `auth` events are also built with their constructors
//!   (`ServerFrame::error_event`, `ServerFrame::auth_event`), which the
//!   server sends them with.
//! - `yjs.json`: every frame is read with `yjs::read_frame` (the server's
//!   reader) and its payload checked with `check_state_vector`,
//!   `check_update` or `check_awareness`; the Roost extensions `saved` (100),
//!   `refresh` (101) and `ping` (102) decode and re-encode with this crate's
//!   `read_saved`/`saved_frame`, `refresh_token`/`refresh_frame` and
//!   `PING_FRAME`, the functions the server uses. The payloads' contents
//!   (state vector and awareness entries) are decoded by hand here. The
//!   standard messages are encoded by yrs in the server: the server's
//!   `sockets::yjs` tests check yrs against this file; the Yjs update
//!   encoding itself is checked by the TypeScript tests against `yjs`.

use std::path::PathBuf;

use roost_protocol::yjs::{self as wire, UpdateLimits, YMessage};
use roost_protocol::{ClientFrame, ErrorBody, ErrorCode, ServerFrame};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn list<'a>(file: &'a Value, key: &str) -> &'a Vec<Value> {
    file[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` is a list"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is a string in {v}"))
}

#[test]
fn server_frames_encode_and_decode_byte_exact() {
    let file = load("envelope.json");
    let frames = list(&file, "server_frames");
    assert!(!frames.is_empty());
    for v in frames {
        let name = str_field(v, "name");
        let text = str_field(v, "text");
        let f = &v["frame"];
        let expected = match str_field(f, "type") {
            "result" if f.get("error").is_some() => ServerFrame::err(
                f["id"].as_u64().expect("id"),
                serde_json::from_value(f["error"].clone()).expect("error detail"),
            ),
            "result" => ServerFrame::ok(f["id"].as_u64().expect("id"), f["ok"].clone()),
            "event" => ServerFrame::event(str_field(f, "event"), f["data"].clone()),
            "pong" => ServerFrame::Pong,
            other => panic!("{name}: unknown frame type {other}"),
        };
        assert_eq!(expected.encode(), text, "{name}: encode");
        check_event_constructor(name, f, text);
        let decoded = ServerFrame::decode(text).unwrap_or_else(|e| panic!("{name}: decode: {e}"));
        assert_eq!(decoded, expected, "{name}: decode");
    }
}

/// The `error` and `auth` events the socket layer sends have constructors
/// of their own (`ServerFrame::error_event`, `ServerFrame::auth_event`):
/// they must write the vector's exact text.
fn check_event_constructor(name: &str, f: &Value, text: &str) {
    let data = &f["data"];
    let built = match f["event"].as_str() {
        Some("error") => {
            let code: ErrorCode = serde_json::from_value(data["code"].clone()).expect("code");
            ServerFrame::error_event(code, str_field(data, "message"))
        }
        Some("auth") => ServerFrame::auth_event(data["exp"].as_i64()),
        _ => return,
    };
    assert_eq!(built.encode(), text, "{name}: event constructor");
}

#[test]
fn client_call_frames_decode() {
    let file = load("envelope.json");
    let frames = list(&file, "client_frames");
    assert!(!frames.is_empty());
    for v in frames {
        let name = str_field(v, "name");
        let f = &v["frame"];
        let expected = ClientFrame::Call {
            id: f["id"].as_u64().expect("id"),
            method: str_field(f, "method").to_owned(),
            args: f["args"].clone(),
        };
        let decoded = ClientFrame::decode(str_field(v, "text"));
        assert_eq!(decoded.as_ref(), Ok(&expected), "{name}: decode");
        // Our own encoder may order keys differently; it must mean the same.
        let ClientFrame::Call { id, method, args } = expected.clone() else {
            unreachable!()
        };
        let ours = ClientFrame::call(id, &method, args);
        let ours: Value = serde_json::from_str(&ours).expect("our call frame is JSON");
        assert_eq!(&ours, f, "{name}: ClientFrame::call");
    }
}

#[test]
fn auth_client_frames_decode() {
    let file = load("envelope.json");
    let frames = list(&file, "auth_client_frames");
    assert!(!frames.is_empty());
    for v in frames {
        let name = str_field(v, "name");
        assert_eq!(
            ClientFrame::decode(str_field(v, "text")),
            Ok(ClientFrame::Auth {
                token: str_field(v, "token").to_owned()
            }),
            "{name}"
        );
        // Our own encoder may order keys differently; it must mean the same.
        let ours: Value =
            serde_json::from_str(&ClientFrame::auth(str_field(v, "token"))).expect("JSON");
        let theirs: Value = serde_json::from_str(str_field(v, "text")).expect("JSON");
        assert_eq!(ours, theirs, "{name}: ClientFrame::auth");
    }
}

#[test]
fn ping_client_frames_decode() {
    let file = load("envelope.json");
    let frames = list(&file, "ping_client_frames");
    assert!(!frames.is_empty());
    for v in frames {
        let name = str_field(v, "name");
        let text = str_field(v, "text");
        assert_eq!(ClientFrame::decode(text), Ok(ClientFrame::Ping), "{name}");
        assert_eq!(text, ClientFrame::PING, "{name}: ClientFrame::PING");
    }
}

#[test]
fn other_and_bad_client_frames() {
    let file = load("envelope.json");
    for v in list(&file, "other_client_frames") {
        let name = str_field(v, "name");
        let decoded = ClientFrame::decode(str_field(v, "text"));
        if v["json"].as_bool() == Some(true) {
            assert!(
                matches!(decoded, Ok(ClientFrame::Other(_))),
                "{name}: {decoded:?}"
            );
        } else {
            assert!(
                decoded.is_err(),
                "{name}: not JSON, so not an envelope: {decoded:?}"
            );
        }
    }
    for v in list(&file, "bad_client_frames") {
        let name = str_field(v, "name");
        assert!(
            ClientFrame::decode(str_field(v, "text")).is_err(),
            "{name}: must be rejected"
        );
    }
}

#[test]
fn error_bodies_round_trip() {
    let file = load("envelope.json");
    for v in list(&file, "error_bodies") {
        let name = str_field(v, "name");
        let text = str_field(v, "text");
        let body: ErrorBody = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(body.error.code.as_str(), str_field(v, "code"), "{name}");
        assert_eq!(body.error.message, str_field(v, "message"), "{name}");
        assert_eq!(body.encode(), text, "{name}: ErrorBody::encode");
    }
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// A strict reader of lib0's varUint / varUint8Array / varString.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn var_uint(&mut self) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.pos).expect("truncated varUint");
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return value;
            }
        }
        panic!("varUint too long");
    }

    fn var_bytes(&mut self) -> &[u8] {
        let len = usize::try_from(self.var_uint()).expect("length fits");
        let out = self
            .bytes
            .get(self.pos..self.pos + len)
            .expect("truncated varUint8Array");
        self.pos += len;
        out
    }

    fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

#[test]
fn yjs_frames_read_and_encode_with_this_crate() {
    let file = load("yjs.json");
    let messages = list(&file, "messages");
    let mut seen_types = std::collections::BTreeSet::new();
    for v in messages {
        let name = str_field(v, "name");
        let bytes = hex(str_field(v, "hex"));
        let message_type = v["message_type"].as_u64().expect("message_type");
        assert_eq!(u64::from(bytes[0]), message_type, "{name}: message type");
        seen_types.insert(message_type);
        if message_type == u64::from(wire::MSG_SAVED) {
            // Server → client only; its payload is a varUint, not a varUint8Array.
            let count = v["count"].as_u64().expect("count");
            assert_eq!(wire::read_saved(&bytes), Ok(count), "{name}: read_saved");
            assert_eq!(wire::saved_frame(count), bytes, "{name}: saved_frame");
            continue;
        }
        let frame = wire::read_frame(&bytes).unwrap_or_else(|e| panic!("{name}: read_frame: {e}"));
        let [message] = &frame[..] else {
            panic!("{name}: one message, got {frame:?}")
        };
        check_message(name, v, &bytes, message);
    }
    assert_eq!(
        seen_types.into_iter().collect::<Vec<_>>(),
        vec![0, 1, 3, 100, 101, 102],
        "every message type has a vector"
    );
}

/// Checks one message `read_frame` read from a vector (and the encoders
/// this crate has for it: the standard messages are encoded by yrs, and
/// checked against these vectors by the server's tests).
fn check_message(name: &str, v: &Value, bytes: &[u8], message: &YMessage<'_>) {
    let payload = || hex(str_field(v, "payload_hex"));
    let sync_type = v["sync_type"].as_u64();
    match message {
        YMessage::SyncStep1(sv) => {
            assert_eq!(sync_type, Some(0), "{name}: sync type");
            assert_eq!(sv.to_vec(), payload(), "{name}: payload");
            wire::check_state_vector(sv).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_state_vector(name, sv, &v["state_vector"]);
        }
        YMessage::SyncStep2(u) | YMessage::Update(u) => {
            let expected = if matches!(message, YMessage::SyncStep2(_)) {
                1
            } else {
                2
            };
            assert_eq!(sync_type, Some(expected), "{name}: sync type");
            assert_eq!(u.to_vec(), payload(), "{name}: payload");
            wire::check_update(u, &UpdateLimits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        YMessage::Awareness(a) => {
            assert_eq!(a.to_vec(), payload(), "{name}: payload");
            wire::check_awareness(a).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_awareness(name, a, &v["awareness"]);
        }
        YMessage::QueryAwareness => assert_eq!(bytes, [3], "{name}"),
        YMessage::Other(wire::MSG_REFRESH, _) => {
            let token = str_field(v, "token");
            assert_eq!(
                wire::refresh_token(bytes),
                Ok(token),
                "{name}: refresh_token"
            );
            assert_eq!(wire::refresh_frame(token), bytes, "{name}: refresh_frame");
        }
        YMessage::Ping => assert_eq!(bytes, wire::PING_FRAME, "{name}: PING_FRAME"),
        other => panic!("{name}: unexpected message {other:?}"),
    }
}

/// A state vector: varUint(n) then n × (varUint(client), varUint(clock)).
fn check_state_vector(name: &str, payload: &[u8], expected: &Value) {
    let mut r = Reader {
        bytes: payload,
        pos: 0,
    };
    let n = r.var_uint();
    let mut got = serde_json::Map::new();
    for _ in 0..n {
        let client = r.var_uint();
        let clock = r.var_uint();
        got.insert(client.to_string(), Value::from(clock));
    }
    assert!(r.done(), "{name}: state vector has trailing bytes");
    let expected = expected.as_object().cloned().unwrap_or_default();
    assert_eq!(got, expected, "{name}: state vector");
}

/// An awareness update: varUint(n) then n × (varUint(client), varUint(clock), varString(JSON)).
fn check_awareness(name: &str, payload: &[u8], expected: &Value) {
    let mut r = Reader {
        bytes: payload,
        pos: 0,
    };
    let n = r.var_uint();
    let mut got = Vec::new();
    for _ in 0..n {
        let client = r.var_uint();
        let clock = r.var_uint();
        let state = std::str::from_utf8(r.var_bytes())
            .expect("UTF-8 state")
            .to_owned();
        let state: Value = serde_json::from_str(&state).expect("JSON state");
        got.push(serde_json::json!({"client_id": client, "clock": clock, "state": state}));
    }
    assert!(r.done(), "{name}: awareness update has trailing bytes");
    assert_eq!(&Value::Array(got), expected, "{name}: awareness entries");
}
