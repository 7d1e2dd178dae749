//! Wire types shared by the Roost server, the load tester and the tests.
//!
//! This crate is the only place that defines what goes over the wire: the JSON
//! error body of the HTTP API, the JSON envelope spoken on object
//! WebSockets, and the bounded readers of Yjs bytes from clients (`yjs`:
//! y-websocket frames and v1 updates, checked before yrs decodes them). It knows nothing of tokio, axum or SQLite, and its decoders
//! never panic on any input.

pub mod duration;
pub mod envelope;
pub mod error;
pub mod yjs;

pub use envelope::{ClientFrame, DecodeError, ServerFrame};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
