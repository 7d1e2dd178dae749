//! A document over HTTP (`fetch`): `GET state` (the whole document, or as
//! of `?at=` an RFC 3339 time inside the history window) and `POST update`.
//! Read paths never write: `state?at=` reads the log table plus the
//! batch's updates not stored yet.

use serde_json::json;
use yrs::{ReadTxn, StateVector, Transact};

use super::update::Refusal;
use super::{store, Ydoc};
use crate::object::{FetchRequest, FetchResponse};
use crate::{Ctx, ObjectError};

impl Ydoc {
    /// `GET state[?at=<RFC 3339>]`: the document as an update.
    pub(super) fn get_state(
        &mut self,
        ctx: &mut Ctx,
        request: &FetchRequest,
    ) -> Result<FetchResponse, ObjectError> {
        let at = match request.query.get("at") {
            None => None,
            Some(text) => {
                match time::OffsetDateTime::parse(
                    text,
                    &time::format_description::well_known::Rfc3339,
                ) {
                    Ok(t) => Some((t.unix_timestamp_nanos() / 1_000_000) as i64),
                    Err(e) => {
                        return Ok(FetchResponse::status(
                            400,
                            &format!(
                                "`at` must be an RFC 3339 time like 2026-01-02T03:04:05Z: {e}"
                            ),
                        ));
                    }
                }
            }
        };
        // A read never writes (this is a read-only event): history
        // is the log table plus this batch's updates not stored
        // yet, which will be stored as of `pending.ts()`.
        let body = match at {
            None => self.state(&StateVector::default())?,
            Some(ts) => match store::as_of(ctx.storage().sql(), ts) {
                Ok(doc) => {
                    if !self.pending.is_empty() && self.pending.ts() <= ts {
                        store::apply_pending(&doc, &self.pending)
                            .map_err(|e| ObjectError::app(e.to_string()))?;
                    }
                    doc.transact()
                        .encode_state_as_update_v1(&StateVector::default())
                }
                Err(store::StoreError::BeforeHistory(_)) => {
                    return Ok(FetchResponse::status(
                        404,
                        "that time is older than the document's retained history",
                    ));
                }
                Err(e) => return Err(ObjectError::app(e.to_string())),
            },
        };
        Ok(FetchResponse::bytes("application/octet-stream", body))
    }

    /// `POST update`: one update in the body.
    pub(super) fn post_update(
        &mut self,
        ctx: &mut Ctx,
        request: &FetchRequest,
    ) -> Result<FetchResponse, ObjectError> {
        if request.read_only {
            return Ok(FetchResponse::status(
                403,
                "read-only access cannot update the document",
            ));
        }
        let checked = match Self::check(&Self::config(ctx), &request.body) {
            Ok(c) => c,
            Err(Refusal::TooLarge(why)) => return Ok(FetchResponse::status(413, &why)),
            Err(Refusal::Malformed(why) | Refusal::CannotApply(why) | Refusal::Ahead(why)) => {
                return Ok(FetchResponse::status(400, &why))
            }
        };
        match self.accept_update(ctx, &request.body, checked)? {
            Ok(broadcast) => {
                if let Some(frame) = broadcast {
                    ctx.broadcast(None, frame, None);
                }
                Ok(FetchResponse::json(&json!({ "ok": true })))
            }
            Err(Refusal::TooLarge(why)) => Ok(FetchResponse::status(413, &why)),
            Err(Refusal::Malformed(why) | Refusal::CannotApply(why) | Refusal::Ahead(why)) => {
                Ok(FetchResponse::status(400, &why))
            }
        }
    }
}
