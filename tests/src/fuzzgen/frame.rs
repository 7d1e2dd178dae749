//! What arrives on a socket: y-websocket frames (sync, awareness, auth,
//! query, ping and unknown messages), awareness updates, state vectors and
//! JSON envelope text.

use std::sync::Arc;

use proptest::prelude::*;
use yrs::encoding::write::Write;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::encoder::Encode;
use yrs::{ClientID, StateVector};

use super::honest::{honest_updates, op};
use super::update::raw_update;
use super::values::{any_value, clock, json_text, yrs_client};
use super::{string, var};

/// One y-websocket message, encoded by `frame`.
#[derive(Debug, Clone)]
pub enum RawMessage {
    Step1(Vec<u8>),
    Step2(Vec<u8>),
    Update(Vec<u8>),
    Awareness(Vec<u8>),
    Auth(Option<String>),
    Query,
    /// Roost's heartbeat ping: `[102]`, no payload.
    Ping,
    /// Any other type, with a `varUint8Array` payload.
    Other(u8, Vec<u8>),
}

pub fn frame(messages: &[RawMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        match m {
            RawMessage::Step1(b) => {
                out.extend_from_slice(&[0, 0]);
                out.write_buf(b);
            }
            RawMessage::Step2(b) => {
                out.extend_from_slice(&[0, 1]);
                out.write_buf(b);
            }
            RawMessage::Update(b) => {
                out.extend_from_slice(&[0, 2]);
                out.write_buf(b);
            }
            RawMessage::Awareness(b) => {
                out.push(1);
                out.write_buf(b);
            }
            RawMessage::Auth(reason) => {
                out.push(2);
                match reason {
                    Some(r) => {
                        out.push(0);
                        string(&mut out, r);
                    }
                    None => out.push(1),
                }
            }
            RawMessage::Query => out.push(3),
            RawMessage::Ping => out.push(roost_protocol::yjs::MSG_PING),
            RawMessage::Other(tag, b) => {
                var(&mut out, u64::from(*tag));
                out.write_buf(b);
            }
        }
    }
    out
}

/// An awareness update as yrs encodes it.
pub fn awareness_update() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((yrs_client(), clock(), json_text()), 0..4).prop_map(|entries| {
        let clients = entries
            .into_iter()
            .map(|(c, clock, json)| {
                (
                    ClientID::new(c),
                    AwarenessUpdateEntry {
                        clock,
                        json: Arc::from(json.as_str()),
                    },
                )
            })
            .collect();
        AwarenessUpdate { clients }.encode_v1()
    })
}

/// A state vector as yrs encodes it.
pub fn state_vector() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((yrs_client(), clock()), 0..4).prop_map(|entries| {
        let mut sv = StateVector::default();
        for (c, k) in entries {
            sv.set_max(ClientID::new(c), k);
        }
        sv.encode_v1()
    })
}

/// An update for a frame: structured (often hostile) or honest.
pub fn any_update() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => raw_update().prop_map(|u| u.encode()),
        1 => (prop::collection::vec(op(), 1..4), yrs_client()).prop_map(|(ops, c)| honest_updates(&ops, c).1),
    ]
}

pub fn raw_message() -> impl Strategy<Value = RawMessage> {
    prop_oneof![
        2 => state_vector().prop_map(RawMessage::Step1),
        2 => any_update().prop_map(RawMessage::Step2),
        4 => any_update().prop_map(RawMessage::Update),
        2 => awareness_update().prop_map(RawMessage::Awareness),
        1 => prop::option::of(".{0,8}").prop_map(RawMessage::Auth),
        1 => Just(RawMessage::Query),
        1 => Just(RawMessage::Ping),
        // Any type but the ping's, which has no payload.
        1 => (4u8..=254, prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(t, b)| {
            let t = if t >= roost_protocol::yjs::MSG_PING { t + 1 } else { t };
            RawMessage::Other(t, b)
        }),
    ]
}

pub fn raw_frame() -> impl Strategy<Value = Vec<RawMessage>> {
    prop::collection::vec(raw_message(), 1..4)
}

/// JSON envelope text: calls and other frames, with args nested shallow or deep.
pub fn envelope_text() -> impl Strategy<Value = String> {
    let args = prop_oneof![
        any_value(3).prop_map(|a| {
            let mut s = String::new();
            a.to_json(&mut s);
            s
        }),
        json_text(),
    ];
    (
        prop_oneof![Just("call"), Just("auth"), Just("other"), Just("")],
        any::<u64>(),
        "[a-zA-Z_]{0,8}",
        args,
    )
        .prop_map(|(ty, id, method, args)| {
            format!(r#"{{"type":"{ty}","id":{id},"method":"{method}","token":"{method}","args":{args}}}"#)
        })
}
