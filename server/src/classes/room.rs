//! `room`: a chat/broadcast room. Messages are stored in the room's SQLite
//! table and broadcast to every connected socket; a new socket receives the
//! last 50 messages; joins and leaves are broadcast as presence events. The
//! sender's name lives in the socket's attachment, so it survives the room's
//! hibernation.
//!
//! Socket: `/v1/objects/room/{name}/ws?name=alice`. Pushed events:
//! `history` `{messages}`, `message` `{id, ts, name, text}`, `join` / `leave`
//! `{name, socket}`. Calls: `join {name}`, `send {text}` (→ `{id}`),
//! `who` (→ `[names]`), `history {limit}`, `followup {after_ms, text}`: post
//! `text` as a system message `after_ms` after the last message (re-armed by
//! each message and armed by `followup` itself when the room has messages,
//! through the room's alarm; `after_ms` is at most a year, `null` turns it
//! off). A text frame `ping` is answered
//! `pong` by the socket layer without waking the room.

use serde_json::{json, Value};

use crate::runtime::{Admission, AlarmInfo, ConnectRequest};
use crate::sockets::SocketId;
use crate::{Ctx, DurableObject, ObjectError};

const HISTORY_ON_JOIN: i64 = 50;
const MAX_TEXT_BYTES: usize = 4096;
const MAX_NAME_CHARS: usize = 64;
/// Longest follow-up delay: one year (as the counter's `delay_ms`).
const MAX_FOLLOWUP_MS: i64 = 365 * 24 * 3600 * 1000;

pub(crate) struct Room;

const MIGRATIONS: &[&str] = &["CREATE TABLE messages(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts INTEGER NOT NULL,
        name TEXT NOT NULL,
        text TEXT NOT NULL);"];

fn clean_name(name: &str) -> Result<String, ObjectError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ObjectError::bad_args(format!(
            "name must be 1..={MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// The caller's name as its token's issuer vouched for it (`name`, else
/// `sub`, trimmed and cut to 64 characters; `anonymous` for a token that
/// names no one); `None` without auth. With auth on, names a client
/// chooses (`?name=`, `join`, `send`'s `name`) are never used: a token
/// without `name` or `sub` cannot pass for someone else.
fn verified_name(ctx: &Ctx) -> Option<String> {
    let identity = ctx.identity()?;
    let name: String = identity
        .name
        .as_deref()
        .or(identity.sub.as_deref())
        .unwrap_or("")
        .trim()
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim();
    Some(if name.is_empty() { "anonymous" } else { name }.to_owned())
}

fn name_of(ctx: &Ctx, socket: SocketId) -> String {
    ctx.attachment(socket)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "anonymous".to_owned())
}

fn set_name(ctx: &mut Ctx, socket: SocketId, name: &str) -> Result<(), ObjectError> {
    let bytes = serde_json::to_vec(&json!({ "name": name }))
        .map_err(|e| ObjectError::app(e.to_string()))?;
    ctx.set_attachment(socket, bytes)
}

/// Stores a message and broadcasts it; returns its id.
fn post(ctx: &mut Ctx, name: &str, text: &str) -> Result<i64, ObjectError> {
    let ts = ctx.now_ms();
    ctx.storage()
        .sql()
        .prepare_cached("INSERT INTO messages(ts, name, text) VALUES(?1, ?2, ?3)")?
        .execute((ts, name, text))?;
    let id = ctx.storage().sql().last_insert_rowid();
    let message = json!({ "id": id, "ts": ts, "name": name, "text": text });
    ctx.emit("room.message", message.clone())?;
    ctx.broadcast_event(None, "message", message, None);
    Ok(id)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Followup {
    after_ms: i64,
    text: String,
}

fn history(ctx: &Ctx, limit: i64) -> Result<Vec<Value>, ObjectError> {
    let mut stmt = ctx
        .storage()
        .sql()
        .prepare_cached("SELECT id, ts, name, text FROM messages ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map([limit], |r| {
        Ok(json!({
            "id": r.get::<_, i64>(0)?,
            "ts": r.get::<_, i64>(1)?,
            "name": r.get::<_, String>(2)?,
            "text": r.get::<_, String>(3)?,
        }))
    })?;
    let mut out: Vec<Value> = rows.collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

impl DurableObject for Room {
    fn new(ctx: &mut Ctx) -> Result<Self, ObjectError> {
        ctx.storage().migrate(MIGRATIONS)?;
        Ok(Room)
    }

    async fn on_connect(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        request: &ConnectRequest,
    ) -> Result<Admission, ObjectError> {
        let name = match (verified_name(ctx), request.query.get("name")) {
            (Some(n), _) => n,
            (None, Some(n)) => clean_name(n)?,
            (None, None) => "anonymous".to_owned(),
        };
        set_name(ctx, socket, &name)?;
        // Keep-alive pings are answered by the socket layer, never waking the room.
        ctx.set_auto_response(Some(("ping".to_owned(), "pong".to_owned())));
        let messages = history(ctx, HISTORY_ON_JOIN)?;
        ctx.send_event(socket, "history", json!({ "messages": messages }));
        ctx.broadcast_event(
            None,
            "join",
            json!({ "name": name, "socket": socket.0 }),
            Some(socket),
        );
        Ok(Admission::accept_with_tags(["member"]))
    }

    async fn on_close(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        _code: u16,
        _reason: &str,
    ) -> Result<(), ObjectError> {
        let name = name_of(ctx, socket);
        ctx.broadcast_event(
            None,
            "leave",
            json!({ "name": name, "socket": socket.0 }),
            Some(socket),
        );
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut Ctx, _info: AlarmInfo) -> Result<(), ObjectError> {
        if let Some(f) = ctx.storage().get::<Followup>("followup")? {
            post(ctx, "roost", &f.text)?;
        }
        Ok(())
    }

    async fn call(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        args: Value,
    ) -> Result<Value, ObjectError> {
        match method {
            "join" => join(ctx, &args),
            "send" => send(ctx, &args),
            "followup" => followup(ctx, &args),
            "who" => {
                let sockets = ctx.sockets(Some("member"));
                let names: Vec<String> = sockets.into_iter().map(|s| name_of(ctx, s)).collect();
                Ok(json!(names))
            }
            "history" => {
                let limit = args
                    .get("limit")
                    .and_then(Value::as_i64)
                    .unwrap_or(HISTORY_ON_JOIN)
                    .clamp(1, 500);
                Ok(json!(history(ctx, limit)?))
            }
            other => Err(ObjectError::UnknownMethod(other.to_owned())),
        }
    }
}

/// `join {name}`: names the calling socket and tells the others.
fn join(ctx: &mut Ctx, args: &Value) -> Result<Value, ObjectError> {
    let socket = ctx
        .caller_socket()
        .ok_or_else(|| ObjectError::bad_args("`join` is called over the room's WebSocket"))?;
    let name = match verified_name(ctx) {
        Some(n) => n,
        None => clean_name(args.get("name").and_then(Value::as_str).unwrap_or(""))?,
    };
    set_name(ctx, socket, &name)?;
    ctx.broadcast_event(
        None,
        "join",
        json!({ "name": name, "socket": socket.0 }),
        Some(socket),
    );
    Ok(json!({ "name": name }))
}

/// `send {text}`: posts a message (from the socket's name, or `name` over
/// HTTP) and re-arms the follow-up.
fn send(ctx: &mut Ctx, args: &Value) -> Result<Value, ObjectError> {
    let text = args
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ObjectError::bad_args("`send` needs {\"text\": \"...\"}"))?;
    if text.is_empty() || text.len() > MAX_TEXT_BYTES {
        return Err(ObjectError::bad_args(format!(
            "text must be 1..={MAX_TEXT_BYTES} bytes"
        )));
    }
    let name = match (ctx.caller_socket(), verified_name(ctx)) {
        (Some(s), _) => name_of(ctx, s),
        (None, Some(n)) => n,
        (None, None) => clean_name(args.get("name").and_then(Value::as_str).unwrap_or("http"))?,
    };
    let id = post(ctx, &name, text)?;
    if let Some(f) = ctx.storage().get::<Followup>("followup")? {
        // Saturating: a delay stored before it was bounded cannot wrap.
        let at = ctx.now_ms().saturating_add(f.after_ms);
        ctx.set_alarm(at)?;
    }
    Ok(json!({ "id": id }))
}

/// `followup {after_ms, text}`: sets (or, with `after_ms: null`, clears)
/// the system message posted `after_ms` after the last message.
fn followup(ctx: &mut Ctx, args: &Value) -> Result<Value, ObjectError> {
    match args.get("after_ms") {
        Some(Value::Null) | None => {
            ctx.storage().delete("followup")?;
            ctx.delete_alarm()?;
            Ok(json!({ "followup": null }))
        }
        Some(v) => {
            let after_ms = v
                .as_i64()
                .filter(|v| (1..=MAX_FOLLOWUP_MS).contains(v))
                .ok_or_else(|| {
                    ObjectError::bad_args(format!(
                        "`after_ms` must be an integer in 1..={MAX_FOLLOWUP_MS} (one year) or null"
                    ))
                })?;
            let text = args
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("How was this conversation? Tell us what you think.");
            if text.is_empty() || text.len() > MAX_TEXT_BYTES {
                return Err(ObjectError::bad_args(format!(
                    "text must be 1..={MAX_TEXT_BYTES} bytes"
                )));
            }
            let f = Followup {
                after_ms,
                text: text.to_owned(),
            };
            ctx.storage().put("followup", &f)?;
            // A conversation already under way gets its follow-up
            // `after_ms` from now, without waiting for a next message.
            let has_messages = ctx
                .storage()
                .sql()
                .prepare_cached("SELECT 1 FROM messages LIMIT 1")?
                .exists([])?;
            if has_messages {
                let at = ctx.now_ms() + after_ms;
                ctx.set_alarm(at)?;
            }
            Ok(json!({ "followup": f }))
        }
    }
}
