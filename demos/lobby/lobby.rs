//! `lobby`: a game lobby, written only against Roost's public object API
//! (`roost::{DurableObject, Ctx, ...}`), the way a user of Roost writes a class.
//!
//! Players join with a name into a fixed number of seats (default 4), toggle
//! "ready", and the host — the longest-seated player — starts the game once
//! every seated player is ready (at least two). When the host leaves (its
//! socket closes, or it calls `leave`), the next longest-seated player becomes
//! host. The whole lobby is one JSON value in the object's KV storage, so it
//! survives restarts. When the last player leaves, the lobby arms its alarm;
//! if it is still empty when the alarm fires, it clears its storage and
//! reports `closed` (a later `join` opens it afresh).
//!
//! Why seats are never over-booked: an object handles one event at a time, so
//! the "is there a free seat?" check and the write that takes the seat can
//! never interleave with another join — no locks needed.
//!
//! Socket: `/v1/objects/lobby/{name}/ws?player=<id>` (the `player` parameter
//! re-binds a reconnecting page to its seat). Every change pushes the event
//! `state` (`State::view`) to every socket; a new socket gets it at once,
//! with `you`: its own player's handle, if it is seated.
//! Calls (over the socket, or over HTTP with an explicit `player`):
//! `state`, `join {name, player?}` → `{player, seat, state}`,
//! `ready {ready?, player?}`, `start {player?}`, `end {player?}`,
//! `leave {player?}`, `configure {seats?, close_after_ms?}`. `join`
//! answers `you` too.
//!
//! With auth on (`--auth-secret`), a player is the token's `sub` (and its
//! `name`, if any, the display name): `player` arguments and `?player=` are
//! ignored, so no one can act as another; a token without a `sub` may watch
//! but not join or act (its calls fail). Without auth, a player id is a
//! bearer secret chosen by the page (or drawn at random by the lobby);
//! anyone who knows it can act as that player, so views never carry it:
//! they name each player by a handle, a hash of its id ([`handle`]).

use roost::{Admission, AlarmInfo, ConnectRequest, Ctx, DurableObject, ObjectError, SocketId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const DEFAULT_SEATS: usize = 4;
const MAX_SEATS: usize = 16;
const DEFAULT_CLOSE_AFTER_MS: i64 = 60_000;
const MAX_CLOSE_AFTER_MS: i64 = 24 * 3600 * 1000;
const MAX_NAME_CHARS: usize = 32;
const MAX_PLAYER_ID_BYTES: usize = 64;
/// The one KV key holding the lobby.
const KEY: &str = "lobby";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// Waiting for players. Next: `Started` (host's `start`) or `Closed` (alarm).
    Open,
    /// The game is on: no joins. Next: `Open` (host's `end`) or `Closed`.
    Started,
    /// Emptied by the alarm; storage cleared. Next: `Open` on the next `join`.
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Player {
    id: String,
    name: String,
    ready: bool,
}

/// What is stored under [`KEY`]. `players` is in joining order: the first is
/// the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    status: Status,
    seats: usize,
    close_after_ms: i64,
    players: Vec<Player>,
    /// When the empty lobby's alarm fires (`None` while anyone is seated).
    closes_at: Option<i64>,
    started_at: Option<i64>,
    /// Players seated so far (kept for stored lobbies; ids are random).
    next_player: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            status: Status::Open,
            seats: DEFAULT_SEATS,
            close_after_ms: DEFAULT_CLOSE_AFTER_MS,
            players: Vec::new(),
            closes_at: None,
            started_at: None,
            next_player: 1,
        }
    }
}

impl State {
    fn seat_of(&self, player: &str) -> Option<usize> {
        self.players.iter().position(|p| p.id == player)
    }

    /// The public view pushed to sockets and returned by calls: players by
    /// their [`handle`], never by their id.
    fn view(&self) -> Value {
        let host = self.players.first().map(|p| handle(&p.id));
        let players: Vec<Value> = self
            .players
            .iter()
            .enumerate()
            .map(|(seat, p)| {
                json!({
                    "id": handle(&p.id),
                    "name": p.name,
                    "ready": p.ready,
                    "seat": seat,
                    "host": seat == 0,
                })
            })
            .collect();
        json!({
            "status": self.status,
            "seats": self.seats,
            "close_after_ms": self.close_after_ms,
            "closes_at": self.closes_at,
            "started_at": self.started_at,
            "host": host,
            "players": players,
            "can_start": self.can_start(),
        })
    }

    fn can_start(&self) -> bool {
        self.status == Status::Open
            && self.players.len() >= 2
            && self.players.iter().all(|p| p.ready)
    }
}

/// A player's public handle: the first 6 bytes of its id's SHA-256, in hex.
/// Without auth the id is a bearer secret, and a handle does not give it
/// away (the lobby compares ids, never handles).
fn handle(id: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(id.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A player id for a caller that brings none: 128 bits no one else can
/// guess (keyed hashes with the process's random keys).
fn random_player_id(now_ms: i64, n: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_i64(now_ms);
        h.write_u64(n);
        h.write_usize(i);
        *w = h.finish();
    }
    format!("p{:016x}{:016x}", words[0], words[1])
}

/// The lobby. Its memory is a cache of what is stored; every handler that
/// changes it goes through [`Lobby::save`].
pub(crate) struct Lobby {
    state: State,
}

/// The socket's attachment: which player it speaks for.
#[derive(Serialize, Deserialize)]
struct Binding {
    player: String,
}

fn bound_player(ctx: &Ctx, socket: SocketId) -> Option<String> {
    ctx.attachment(socket)
        .and_then(|b| serde_json::from_slice::<Binding>(&b).ok())
        .map(|b| b.player)
}

fn bind(ctx: &mut Ctx, socket: SocketId, player: &str) -> Result<(), ObjectError> {
    let bytes = serde_json::to_vec(&Binding {
        player: player.to_owned(),
    })
    .map_err(|e| ObjectError::app(e.to_string()))?;
    ctx.set_attachment(socket, bytes)
}

fn clean_name(args: &Value) -> Result<String, ObjectError> {
    let name = args
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ObjectError::bad_args(format!(
            "`name` must be 1..={MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// The caller's verified player id (its token's `sub`), with auth on:
/// `Ok(None)` without auth, an error for a token whose `sub` is missing or
/// unusable (it must not fall back to a `player` the caller names, or any
/// token could act as any player).
fn verified_player(ctx: &Ctx) -> Result<Option<String>, ObjectError> {
    let Some(identity) = ctx.identity() else {
        return Ok(None);
    };
    match identity.sub.as_deref() {
        Some(sub) if !sub.is_empty() && sub.len() <= MAX_PLAYER_ID_BYTES => {
            Ok(Some(sub.to_owned()))
        }
        _ => Err(ObjectError::app(format!(
            "the lobby seats a token's holder: its `sub` must be 1..={MAX_PLAYER_ID_BYTES} bytes"
        ))),
    }
}

fn player_arg(args: &Value) -> Result<Option<String>, ObjectError> {
    match args.get("player") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_PLAYER_ID_BYTES => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ObjectError::bad_args(format!(
            "`player` must be a string of 1..={MAX_PLAYER_ID_BYTES} bytes"
        ))),
    }
}

impl Lobby {
    /// The player a call acts for: the socket's bound player, else `player`.
    fn caller(&self, ctx: &Ctx, args: &Value) -> Result<String, ObjectError> {
        if let Some(p) = verified_player(ctx)? {
            return Ok(p);
        }
        if let Some(p) = ctx.caller_socket().and_then(|s| bound_player(ctx, s)) {
            return Ok(p);
        }
        player_arg(args)?.ok_or_else(|| ObjectError::app("you have not joined this lobby"))
    }

    fn seated(&self, player: &str) -> Result<usize, ObjectError> {
        self.state
            .seat_of(player)
            .ok_or_else(|| ObjectError::app("you are not seated in this lobby"))
    }

    /// Stores the state, keeps the alarm in step (armed while the lobby is
    /// open and empty, cleared while anyone is seated) and pushes `state` to
    /// every socket. All of it is part of the event: undone if it fails.
    fn save(&mut self, ctx: &mut Ctx) -> Result<(), ObjectError> {
        let empty = self.state.players.is_empty();
        match (empty, self.state.status, self.state.closes_at) {
            (true, Status::Open | Status::Started, None) => {
                let at = ctx.now_ms() + self.state.close_after_ms;
                ctx.set_alarm(at)?;
                self.state.closes_at = Some(at);
            }
            (false, _, Some(_)) => {
                ctx.delete_alarm()?;
                self.state.closes_at = None;
            }
            _ => {}
        }
        ctx.storage().put(KEY, &self.state)?;
        ctx.broadcast_event(None, "state", self.state.view(), None);
        Ok(())
    }

    /// Removes a player; the next in joining order becomes host.
    fn remove(&mut self, ctx: &mut Ctx, player: &str) -> Result<bool, ObjectError> {
        let Some(seat) = self.state.seat_of(player) else {
            return Ok(false);
        };
        self.state.players.remove(seat);
        if self.state.status == Status::Started && self.state.players.len() < 2 {
            // A game needs two: the last one standing is back in the lobby.
            self.state.status = Status::Open;
            self.state.started_at = None;
            for p in &mut self.state.players {
                p.ready = false;
            }
        }
        self.save(ctx)?;
        Ok(true)
    }

    fn join(&mut self, ctx: &mut Ctx, args: &Value) -> Result<Value, ObjectError> {
        let name = match ctx.identity().and_then(|i| i.name.clone()) {
            Some(verified) => clean_name(&json!({ "name": verified }))?,
            None => clean_name(args)?,
        };
        let socket = ctx.caller_socket();
        let requested = match (verified_player(ctx)?, player_arg(args)?) {
            (Some(p), _) | (None, Some(p)) => Some(p),
            (None, None) => socket.and_then(|s| bound_player(ctx, s)),
        };
        if self.state.status == Status::Closed {
            // A closed lobby opens afresh.
            self.state = State::default();
        }
        if let Some(seat) = requested.as_deref().and_then(|p| self.state.seat_of(p)) {
            // Already seated (a reconnecting page): keep the seat, take the name.
            self.state.players[seat].name = name;
            let player = self.state.players[seat].id.clone();
            if let Some(s) = socket {
                bind(ctx, s, &player)?;
            }
            self.save(ctx)?;
            let you = handle(&player);
            return Ok(
                json!({ "player": player, "you": you, "seat": seat, "state": self.state.view() }),
            );
        }
        if self.state.status == Status::Started {
            return Err(ObjectError::app("the game has already started"));
        }
        // The check and the write below run in one event: no other join can
        // slip in between them.
        if self.state.players.len() >= self.state.seats {
            return Err(ObjectError::app(format!(
                "the lobby is full ({} seats)",
                self.state.seats
            )));
        }
        let player = match requested {
            Some(p) => p,
            None => {
                let n = self.state.next_player;
                self.state.next_player += 1;
                random_player_id(ctx.now_ms(), n)
            }
        };
        self.state.players.push(Player {
            id: player.clone(),
            name,
            ready: false,
        });
        if let Some(s) = socket {
            bind(ctx, s, &player)?;
        }
        self.save(ctx)?;
        let seat = self.state.players.len() - 1;
        let you = handle(&player);
        Ok(json!({ "player": player, "you": you, "seat": seat, "state": self.state.view() }))
    }
}

impl DurableObject for Lobby {
    fn new(ctx: &mut Ctx) -> Result<Self, ObjectError> {
        let state = ctx.storage().get::<State>(KEY)?.unwrap_or_default();
        Ok(Lobby { state })
    }

    async fn on_connect(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        request: &ConnectRequest,
    ) -> Result<Admission, ObjectError> {
        // A page that reconnects (network blip, server restart) names its
        // player: bind the socket to the seat it still holds.
        // With auth on only the token's `sub` binds (none for a token without
        // one: it watches); `?player=` binds only without auth.
        let player = match ctx.identity() {
            Some(_) => verified_player(ctx).ok().flatten(),
            None => request.query.get("player").cloned(),
        };
        let mut view = self.state.view();
        if let Some(player) = player {
            if self.state.seat_of(&player).is_some() {
                bind(ctx, socket, &player)?;
                view["you"] = json!(handle(&player));
            }
        }
        ctx.send_event(socket, "state", view);
        Ok(Admission::accept())
    }

    async fn on_close(
        &mut self,
        ctx: &mut Ctx,
        socket: SocketId,
        _code: u16,
        _reason: &str,
    ) -> Result<(), ObjectError> {
        let Some(player) = bound_player(ctx, socket) else {
            return Ok(());
        };
        // Another socket of the same player (a reconnect that overtook this
        // close) keeps the seat.
        let elsewhere = ctx
            .sockets(None)
            .into_iter()
            .any(|s| s != socket && bound_player(ctx, s).as_deref() == Some(player.as_str()));
        if !elsewhere {
            let before = self.state.clone();
            if let Err(e) = self.remove(ctx, &player) {
                self.state = before;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut Ctx, _info: AlarmInfo) -> Result<(), ObjectError> {
        // At-least-once: the alarm may be stale (someone joined since).
        if !self.state.players.is_empty() || self.state.status == Status::Closed {
            return Ok(());
        }
        ctx.storage().delete_all()?;
        self.state = State {
            status: Status::Closed,
            ..State::default()
        };
        ctx.storage().put(KEY, &self.state)?;
        ctx.broadcast_event(None, "state", self.state.view(), None);
        Ok(())
    }

    async fn call(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        args: Value,
    ) -> Result<Value, ObjectError> {
        // A failed call's writes are rolled back; so is its change to memory.
        let before = self.state.clone();
        let result = self.dispatch(ctx, method, &args);
        if result.is_err() {
            self.state = before;
        }
        result
    }
}

impl Lobby {
    fn dispatch(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        args: &Value,
    ) -> Result<Value, ObjectError> {
        match method {
            "state" => Ok(self.state.view()),
            "join" => self.join(ctx, args),
            "ready" => {
                let player = self.caller(ctx, args)?;
                let seat = self.seated(&player)?;
                if self.state.status != Status::Open {
                    return Err(ObjectError::app("the game has already started"));
                }
                let p = &mut self.state.players[seat];
                p.ready = match args.get("ready") {
                    None | Some(Value::Null) => !p.ready,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(ObjectError::bad_args("`ready` must be a boolean")),
                };
                let ready = p.ready;
                self.save(ctx)?;
                Ok(json!({ "ready": ready, "state": self.state.view() }))
            }
            "start" => {
                let player = self.caller(ctx, args)?;
                if self.seated(&player)? != 0 {
                    return Err(ObjectError::app("only the host can start the game"));
                }
                if !self.state.can_start() {
                    return Err(ObjectError::app(
                        "every seated player (at least two) must be ready",
                    ));
                }
                self.state.status = Status::Started;
                self.state.started_at = Some(ctx.now_ms());
                self.save(ctx)?;
                Ok(self.state.view())
            }
            "end" => {
                let player = self.caller(ctx, args)?;
                if self.seated(&player)? != 0 {
                    return Err(ObjectError::app("only the host can end the game"));
                }
                self.state.status = Status::Open;
                self.state.started_at = None;
                for p in &mut self.state.players {
                    p.ready = false;
                }
                self.save(ctx)?;
                Ok(self.state.view())
            }
            "leave" => {
                let player = self.caller(ctx, args)?;
                let left = self.remove(ctx, &player)?;
                if let Some(s) = ctx.caller_socket() {
                    // The socket stays open as a spectator.
                    ctx.set_attachment(s, Vec::new())?;
                }
                Ok(json!({ "left": left, "state": self.state.view() }))
            }
            "configure" => {
                if let Some(host) = self.state.players.first() {
                    let caller = self.caller(ctx, args)?;
                    if caller != host.id {
                        return Err(ObjectError::app("only the host can configure the lobby"));
                    }
                }
                if self.state.status == Status::Closed {
                    self.state = State::default();
                }
                if let Some(v) = args.get("seats").filter(|v| !v.is_null()) {
                    let seats = v
                        .as_u64()
                        .and_then(|s| usize::try_from(s).ok())
                        .filter(|s| (2..=MAX_SEATS).contains(s))
                        .ok_or_else(|| {
                            ObjectError::bad_args(format!("`seats` must be 2..={MAX_SEATS}"))
                        })?;
                    if seats < self.state.players.len() {
                        return Err(ObjectError::app(
                            "more players are seated than that many seats",
                        ));
                    }
                    self.state.seats = seats;
                }
                if let Some(v) = args.get("close_after_ms").filter(|v| !v.is_null()) {
                    let ms = v
                        .as_i64()
                        .filter(|ms| (1..=MAX_CLOSE_AFTER_MS).contains(ms))
                        .ok_or_else(|| {
                            ObjectError::bad_args(format!(
                                "`close_after_ms` must be 1..={MAX_CLOSE_AFTER_MS}"
                            ))
                        })?;
                    self.state.close_after_ms = ms;
                    // Re-arm an armed alarm with the new delay.
                    if self.state.closes_at.take().is_some() {
                        ctx.delete_alarm()?;
                    }
                }
                self.save(ctx)?;
                Ok(self.state.view())
            }
            other => Err(ObjectError::UnknownMethod(other.to_owned())),
        }
    }
}
