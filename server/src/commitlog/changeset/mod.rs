//! Changesets: the row changes of one batch as bytes. They are what a
//! commit-log record carries (`record.rs`) and what recovery replays into an
//! object's file; `Storage` captures them on the object's connection.
//!
//! - [`capture`] records every row change of a batch on the object's
//!   connection (SQLite's preupdate hook and a statement trace). The only
//!   module with `unsafe` code besides `sys.rs`.
//! - `format` is the byte format: the encoding the capture writes and its
//!   decoder (which never panics; garbage is an error).
//! - `replay` applies decoded changes with plain SQL ([`apply_changeset`]).
//!
//! Architecture Invariant: a changeset sets each changed row to its captured
//! image or deletes it, so replaying the same bytes twice leaves the same
//! state; the `seq` stamp (`_roost_meta`) is never in it: replay sets it from
//! the log record.

pub(crate) mod capture;
mod format;
mod replay;

use std::ffi::c_int;

pub(crate) use capture::{CapturingConnection, Mark};
pub use replay::apply_changeset;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot install the change capture (sqlite code {0})")]
    Install(c_int),
    #[error("malformed changeset at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
    #[error("cannot replay changes into table {table:?}: {why}")]
    Unsupported { table: String, why: &'static str },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
