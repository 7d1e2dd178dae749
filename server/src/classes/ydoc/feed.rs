//! The document's updates on the change feed (`--feed ydoc`): each row the
//! log gains (one batch's updates) is emitted as one `yjs.update` event,
//! `{"update": <base64 of the batch's updates merged into one v1 update>,
//! "count": n}`, in the same batch as the row. Nothing is done for a class
//! the feed does not name.

use base64::Engine;
use serde_json::json;

use super::store::Pending;
use crate::{Ctx, ObjectError};

pub(super) fn emit_pending(ctx: &mut Ctx, pending: &Pending) -> Result<(), ObjectError> {
    if pending.is_empty() || !ctx.feeds() {
        return Ok(());
    }
    let parts = pending.updates();
    let merged = match parts.as_slice() {
        [one] => one.to_vec(),
        many => yrs::merge_updates_v1(many)
            .map_err(|e| ObjectError::Fatal(format!("cannot merge the batch's updates: {e}")))?,
    };
    let update = base64::engine::general_purpose::STANDARD.encode(merged);
    ctx.emit(
        "yjs.update",
        json!({ "update": update, "count": parts.len() }),
    )
}
