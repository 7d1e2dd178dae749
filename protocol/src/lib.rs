//! Wire types shared by the Roost server, the load tester and the tests.
//!
//! This crate is the only place that defines what goes over the wire:
//!
//! - `error` — error codes, their HTTP statuses and the JSON error body;
//! - `envelope` — the JSON envelope spoken on object WebSockets, the `error`
//!   and `auth` events and the heartbeat `ping`/`pong` among it;
//! - `close` — WebSocket close codes;
//! - `duration` — durations as flags take them (`250ms`, `10s`, `2d`), for
//!   the server and the load tester;
//! - `yjs` — y-websocket frames, Roost's extension messages (`saved`,
//!   `refresh`, `ping`) and the bounded readers of Yjs bytes from clients
//!   (checked before yrs decodes them).
//!
//! It knows nothing of tokio, axum or SQLite, and its decoders never panic
//! on any input. Every frame here has a byte-exact example in
//! `protocol/vectors/`, checked against these functions by
//! `tests/vectors.rs` (and by the TypeScript client's tests).

#![warn(missing_docs)]

pub mod close;
pub mod duration;
pub mod envelope;
pub mod error;
pub mod yjs;

pub use envelope::{ClientFrame, DecodeError, ServerFrame};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
