//! The JSON envelope spoken in text frames on `/v1/objects/{class}/{name}/ws`.
//!
//! Client → server: `{"type":"call","id":N,"method":M,"args":A}`.
//! Server → client: `{"type":"result","id":N,"ok":V}`,
//! `{"type":"result","id":N,"error":{"code","message"}}`, or a push
//! `{"type":"event","event":E,"data":D}`.
//!
//! Heartbeat: the client sends `{"type":"ping"}` and the server answers
//! `{"type":"pong"}` from the socket layer, without waking the object —
//! browsers cannot see WebSocket ping frames, so this is how a client
//! notices a server that froze or vanished without closing the socket.
//!
//! Text frames that are not a `call` envelope are handed to the object's
//! `on_message` unchanged; this module only decides which is which.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, ErrorDetail};

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is not JSON; the server hands it to the object's `on_message`
    /// as it is.
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    /// A `call` (or `auth`) envelope lacks a field or has one of the wrong
    /// type; the server answers with an `error` event (`bad_request`).
    #[error("`call` envelope is malformed: {0}")]
    BadCall(String),
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// An RPC call to the object's `call` method.
    Call {
        /// The caller's id for the call, echoed in its result.
        id: u64,
        /// The method called.
        method: String,
        /// The arguments (`null` if absent).
        args: Value,
    },
    /// `{"type":"auth","token":T}`: replaces the socket's access token
    /// before it expires (in-band refresh).
    Auth {
        /// The new access token.
        token: String,
    },
    /// `{"type":"ping"}` (other fields ignored): answered with
    /// `ServerFrame::Pong` by the socket layer; the object never sees it.
    Ping,
    /// Any other JSON text: delivered to the object's `on_message`.
    Other(Value),
}

#[derive(Deserialize)]
struct RawCall {
    id: u64,
    method: String,
    #[serde(default)]
    args: Value,
}

impl ClientFrame {
    /// Decodes a text frame. Never panics.
    ///
    /// A JSON object whose `"type"` is `"call"` must be a well-formed call
    /// envelope; anything else that is valid JSON is `Other`.
    pub fn decode(text: &str) -> Result<ClientFrame, DecodeError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        match value.get("type").and_then(Value::as_str) {
            Some("call") => {}
            Some("ping") => return Ok(ClientFrame::Ping),
            Some("auth") => {
                return match value.get("token").and_then(Value::as_str) {
                    Some(t) => Ok(ClientFrame::Auth {
                        token: t.to_owned(),
                    }),
                    None => Err(DecodeError::BadCall("`auth` needs a string `token`".into())),
                };
            }
            _ => return Ok(ClientFrame::Other(value)),
        }
        let raw: RawCall =
            serde_json::from_value(value).map_err(|e| DecodeError::BadCall(e.to_string()))?;
        Ok(ClientFrame::Call {
            id: raw.id,
            method: raw.method,
            args: raw.args,
        })
    }

    /// The heartbeat ping, `{"type":"ping"}` (used by clients and tests).
    pub const PING: &'static str = r#"{"type":"ping"}"#;

    /// Encodes an in-band token refresh (used by clients and tests).
    pub fn auth(token: &str) -> String {
        serde_json::json!({"type": "auth", "token": token}).to_string()
    }

    /// Encodes a call envelope (used by clients and tests).
    pub fn call(id: u64, method: &str, args: Value) -> String {
        serde_json::json!({"type": "call", "id": id, "method": method, "args": args}).to_string()
    }
}

/// A field that is present is `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// `{"type":"result",...}`: the outcome of the call with this `id`.
    Result {
        /// The call's id.
        id: u64,
        #[serde(
            skip_serializing_if = "Option::is_none",
            default,
            deserialize_with = "present"
        )]
        /// The call's return value, if it succeeded.
        ok: Option<Value>,
        /// Why the call failed, if it did.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        error: Option<ErrorDetail>,
    },
    /// `{"type":"event","event":E,"data":D}`: a push from the object or the
    /// socket layer.
    Event {
        /// The event's name.
        event: String,
        /// The event's payload.
        #[serde(default)]
        data: Value,
    },
    /// `{"type":"pong"}`: the answer to a `{"type":"ping"}`.
    Pong,
}

impl ServerFrame {
    /// The result of call `id` that returned `value`.
    pub fn ok(id: u64, value: Value) -> Self {
        ServerFrame::Result {
            id,
            ok: Some(value),
            error: None,
        }
    }

    /// The result of call `id` that failed with `error`.
    pub fn err(id: u64, error: ErrorDetail) -> Self {
        ServerFrame::Result {
            id,
            ok: None,
            error: Some(error),
        }
    }

    /// A push event named `event` carrying `data`.
    pub fn event(event: impl Into<String>, data: Value) -> Self {
        ServerFrame::Event {
            event: event.into(),
            data,
        }
    }

    /// `{"type":"event","event":"error","data":{"code":C,"message":S}}`: a
    /// frame the socket layer could not handle (a malformed `call`, a
    /// refused token refresh); the socket stays open.
    pub fn error_event(code: ErrorCode, message: &str) -> Self {
        let data = serde_json::json!({"code": code.as_str(), "message": message});
        ServerFrame::event("error", data)
    }

    /// `{"type":"event","event":"auth","data":{"exp":E}}`: a token refresh
    /// was accepted; `exp` is its expiry in ms since the epoch (`null`: none).
    pub fn auth_event(exp: Option<i64>) -> Self {
        ServerFrame::event("auth", serde_json::json!({ "exp": exp }))
    }

    /// Encodes to the JSON text of a frame.
    pub fn encode(&self) -> String {
        // Serializing these plain data types cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Decodes a server frame (used by clients and tests). Never panics.
    pub fn decode(text: &str) -> Result<ServerFrame, DecodeError> {
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn call_round_trip() {
        let text = ClientFrame::call(7, "increment", json!({"by": 2}));
        assert_eq!(
            ClientFrame::decode(&text),
            Ok(ClientFrame::Call {
                id: 7,
                method: "increment".into(),
                args: json!({"by": 2})
            })
        );
    }

    #[test]
    fn auth_frames() {
        assert_eq!(
            ClientFrame::decode(r#"{"type":"auth","token":"abc"}"#),
            Ok(ClientFrame::Auth {
                token: "abc".into()
            })
        );
        assert!(ClientFrame::decode(r#"{"type":"auth"}"#).is_err());
    }

    #[test]
    fn ping_is_answered_with_pong() {
        assert_eq!(
            ClientFrame::decode(ClientFrame::PING),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"ping","id":3}"#),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(ServerFrame::Pong.encode(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerFrame::decode(r#"{"type":"pong"}"#),
            Ok(ServerFrame::Pong)
        );
        // The text frame `ping` (not JSON) is still the object's own.
        assert!(ClientFrame::decode("ping").is_err());
    }

    #[test]
    fn non_call_json_is_other() {
        assert_eq!(
            ClientFrame::decode(r#"{"hello":1}"#),
            Ok(ClientFrame::Other(json!({"hello": 1})))
        );
        assert_eq!(ClientFrame::decode("3"), Ok(ClientFrame::Other(json!(3))));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(
            ClientFrame::decode("{"),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"call","method":"x"}"#),
            Err(DecodeError::BadCall(_))
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"call","id":-1,"method":"x"}"#),
            Err(DecodeError::BadCall(_))
        ));
    }

    #[test]
    fn server_frames_encode_as_documented() {
        assert_eq!(
            ServerFrame::ok(1, json!(5)).encode(),
            r#"{"type":"result","id":1,"ok":5}"#
        );
        let err = ServerFrame::err(
            2,
            ErrorDetail {
                code: ErrorCode::UnknownMethod,
                message: "m".into(),
            },
        );
        assert_eq!(
            err.encode(),
            r#"{"type":"result","id":2,"error":{"code":"unknown_method","message":"m"}}"#
        );
        assert_eq!(
            ServerFrame::event("join", json!({"name": "a"})).encode(),
            r#"{"type":"event","event":"join","data":{"name":"a"}}"#
        );
        let back = ServerFrame::decode(&err.encode()).expect("decodes");
        assert_eq!(back, err);
        assert_eq!(
            ServerFrame::error_event(ErrorCode::BadRequest, "no").encode(),
            r#"{"type":"event","event":"error","data":{"code":"bad_request","message":"no"}}"#
        );
        assert_eq!(
            ServerFrame::auth_event(Some(5)).encode(),
            r#"{"type":"event","event":"auth","data":{"exp":5}}"#
        );
        assert_eq!(
            ServerFrame::auth_event(None).encode(),
            r#"{"type":"event","event":"auth","data":{"exp":null}}"#
        );
    }
}
