//! `GET /v1/feed?after=&class=&limit=&wait=`: the change feed from a
//! cursor (admin token). Events above `after` (a previous answer's `next`;
//! 0 from the start), of the given classes (comma-separated; all if none),
//! oldest first, at most `limit` (1 to 1000, default 100). With `wait` (up
//! to 30 seconds) an empty answer waits that long for an event first (or
//! until the server begins to stop).
//! The guarantee (PROTOCOL.md "Change feed"): every committed event at
//! least once, in commit order per object, none that was not committed.
//! A cursor above 0 some of whose following events retention dropped gets
//! 410 `cursor_expired` rather than a silent skip.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use roost_protocol::ErrorCode;
use serde_json::{json, Value};

use super::error::ApiError;
use super::query_number;
use crate::runtime::Runtime;

/// `GET /v1/feed`.
pub(crate) async fn read(
    State(runtime): State<Runtime>,
    headers: HeaderMap,
    super::Params(q): super::Params,
) -> Result<Json<Value>, ApiError> {
    super::admin::admin(&runtime, &headers)?;
    let after = query_number(&q, "after", 0, 0..=i64::MAX)?;
    let limit = query_number(&q, "limit", 100, 1..=1000)? as u32;
    let wait = query_number(&q, "wait", 0, 0..=30)?;
    let classes: Vec<String> = q
        .get("class")
        .map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let Some(feed) = runtime.0.feed.get().cloned() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the change feed is off: start roost with --feed CLASS[,CLASS...] (or --webhook)",
        ));
    };
    let storage = |e: anyhow::Error| ApiError::new(ErrorCode::Storage, e.to_string());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    loop {
        let wanted = classes.clone();
        let (events, newest, dropped) = feed
            .read(move |c| {
                // 0 is "from the oldest event kept", not a position.
                let dropped = match after {
                    0 => None,
                    _ => crate::feed::index::dropped_after(c, after, &wanted)?,
                };
                let newest = crate::feed::index::newest(c)?;
                let events = crate::feed::index::read(c, after, &wanted, limit)?;
                Ok((events, newest, dropped))
            })
            .await
            .map_err(storage)?;
        if let Some(dropped) = dropped {
            return Err(ApiError::new(
                ErrorCode::CursorExpired,
                format!(
                    "events after {after} were dropped (--feed-retention) before they were read, \
                     up to seq {dropped}: go on from after={dropped} (or after=0, the oldest kept) \
                     knowing they are lost"
                ),
            ));
        }
        let now = tokio::time::Instant::now();
        // A stopping server answers a waiting poll at once: it would
        // otherwise hold the shutdown for the whole drain timeout.
        if !events.is_empty() || now >= deadline || runtime.is_shutting_down() {
            let next = events.last().map_or(after, |e| e.seq);
            return Ok(Json(json!({ "events": events, "next": next })));
        }
        // In slices, to notice a shutdown.
        let slice = (deadline - now).min(Duration::from_millis(250));
        feed.wait_above(newest.max(after), slice).await;
    }
}
