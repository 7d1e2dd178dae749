//! Yjs on the wire: y-websocket frames and Roost's extension messages, and
//! bounded readers of the Yjs bytes clients send.
//!
//! - `frame` — a y-websocket frame read whole into its
//!   messages (`read_frame`), and the encoders and decoders of Roost's
//!   extension messages: `saved` (100), `refresh` (101) and `ping` (102).
//! - `update` — `check_update` (a v1 update walked the way yrs 0.28 decodes
//!   it), `check_state_vector`, `check_awareness`.
//! - `reader` — the cursor both read with: every read names what it reads,
//!   every count is bounded by the bytes left.
//!
//! Everything here walks the bytes with a loop and an explicit bound — no
//! recursion, no allocation sized by a declared length, no panic — so it can
//! run on any input *before* a recursive decoder (yrs decodes `Any` values
//! and JSON by recursion: a 10 KB update nested 5,000 deep overflows a
//! thread's stack) sees it. The standard y-protocols messages (sync,
//! awareness) are encoded by yrs in the server; this module only reads them.

mod frame;
mod reader;
mod update;

pub use frame::{
    read_frame, read_saved, refresh_frame, refresh_token, saved_frame, YMessage, MSG_PING,
    MSG_REFRESH, MSG_SAVED, PING_FRAME,
};
pub use update::{
    check_awareness, check_state_vector, check_update, item_links, ItemLink, ItemParent,
    UpdateLimits, UpdateShape,
};

/// Deepest nesting of arrays and objects in one `Any` value or JSON text
/// (1 = a flat array) unless configured otherwise.
pub const DEFAULT_MAX_NESTING: u32 = 64;

/// Deepest nesting of shared types (a map in a map in …; 1 = a root
/// type's own items) unless configured otherwise. yrs deletes and
/// garbage-collects nested types by recursion.
pub const DEFAULT_MAX_TYPE_NESTING: u32 = 256;

/// Largest clock (plus length) a struct or deletion may reach: yrs does
/// clock arithmetic in `u32` and `i32`.
pub const MAX_CLOCK: u64 = i32::MAX as u64;

/// Largest client id: Yjs ids are JavaScript safe integers, and yrs
/// asserts (in debug builds) that an id fits 53 bits.
pub const MAX_CLIENT: u64 = (1 << 53) - 1;

/// Why client bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YjsError {
    /// The bytes end inside the named part.
    #[error("truncated: the bytes end inside {0}")]
    Truncated(&'static str),
    /// The named part is not what the format allows (or what Roost takes).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// An `Any` value or JSON text nests deeper than the bound.
    #[error("values nested deeper than {0} levels")]
    TooDeep(u32),
    /// A clock plus length passes `MAX_CLOCK`.
    #[error("a clock passes 2^31 - 1")]
    ClockTooLarge,
    /// A client id passes `MAX_CLIENT`.
    #[error("a client id passes 2^53 - 1")]
    ClientTooLarge,
    /// Bytes follow the end of the message or update.
    #[error("{0} bytes after the end")]
    Trailing(usize),
    /// A `refresh` token that is not UTF-8. (The words are the ones yrs's
    /// string reader used when the server read tokens with it; they reach
    /// the client in the close reason, so they are kept.)
    #[error("malformed update: invalid UTF-8 sequence")]
    TokenNotUtf8,
}
