//! Wire types shared by the Roost server, the load tester and the tests.
//!
//! This crate is the only place that defines what goes over the wire: the JSON
//! error body of the HTTP API and the JSON envelope spoken on object
//! WebSockets. It knows nothing of tokio, axum or SQLite, and its decoders
//! never panic on any input.

pub mod envelope;
pub mod error;

pub use envelope::{ClientFrame, DecodeError, ServerFrame};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
