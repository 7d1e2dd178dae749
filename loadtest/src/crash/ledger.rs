//! Every write acknowledged since the run began, kept across cycles, and the
//! checks run after each restart: nothing acknowledged may be missing.
//!
//! - counters: `acked ≤ value ≤ attempted` (no call is retried, so a value
//!   above the attempts would be a duplicated or invented increment);
//! - alarm counters (`increment_later`): the same bounds once every
//!   acknowledged increment is due, waiting for the alarms to fire;
//! - room messages: every acknowledged `{id, text}` is stored with that id;
//! - room follow-ups: the room's alarm posts a `roost` message after the
//!   last acknowledged message (it is re-armed by each one);
//! - Yjs: every acknowledged marker is in the stored document's text.
//!
//! Rooms are read through the admin SQL console (the whole table, where the
//! room's `history` call returns at most 500), Yjs documents through
//! `GET /v1/yjs/{doc}/state`, decoded with yrs.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use yrs::updates::decoder::Decode as _;
use yrs::{GetString as _, Transact as _};

use super::writers::{CallTally, RoomAck, RoomTally};
use crate::http1::HttpConn;
use crate::target::{encode_segment, Target};

/// How long past its due time an acknowledged alarm may take to show.
const ALARM_GRACE: Duration = Duration::from_secs(10);

/// Acknowledged and attempted writes of one kind, and what was lost.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KindTotals {
    pub acked: u64,
    pub attempted: Option<u64>,
    pub lost: u64,
}

#[derive(Debug, Default)]
struct Room {
    name: String,
    /// Acknowledged messages: id → text.
    acked: BTreeMap<i64, String>,
    attempted: u64,
    /// Follow-up room: the highest acknowledged id already seen followed.
    followed_upto: i64,
}

#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Counter name → calls.
    counters: BTreeMap<String, CallTally>,
    /// Alarm counter name → `increment_later` calls.
    alarms: BTreeMap<String, CallTally>,
    rooms: Vec<Room>,
    /// Index in `rooms` of the room with a follow-up, if any.
    followup_room: Option<usize>,
    followups_checked: u64,
    /// Document → acknowledged markers.
    yjs: BTreeMap<String, Vec<String>>,
    /// Descriptions of lost or invented writes; the run fails if any.
    pub problems: Vec<String>,
    lost: BTreeMap<&'static str, u64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Ledger {
    pub(super) fn new(rooms: &[String], followup_room: Option<usize>, ydocs: &[String]) -> Ledger {
        Ledger {
            rooms: rooms
                .iter()
                .map(|n| Room {
                    name: n.clone(),
                    ..Room::default()
                })
                .collect(),
            followup_room,
            yjs: ydocs.iter().map(|d| (d.clone(), Vec::new())).collect(),
            ..Ledger::default()
        }
    }

    pub(super) fn add_counter(&mut self, name: &str, t: CallTally) {
        let e = self.counters.entry(name.to_string()).or_default();
        e.attempted += t.attempted;
        e.acked += t.acked;
    }

    pub(super) fn add_alarm(&mut self, name: &str, t: CallTally) {
        let e = self.alarms.entry(name.to_string()).or_default();
        e.attempted += t.attempted;
        e.acked += t.acked;
        e.last_due_ms = e.last_due_ms.max(t.last_due_ms);
    }

    pub(super) fn add_room(&mut self, room: usize, t: RoomTally) {
        let r = &mut self.rooms[room];
        r.attempted += t.attempted;
        for RoomAck { id, text } in t.acked {
            if let Some(old) = r.acked.insert(id, text.clone()) {
                self.problems.push(format!(
                    "room {}: id {id} acknowledged twice, for {old:?} and {text:?}",
                    r.name
                ));
            }
        }
    }

    pub(super) fn add_yjs(&mut self, doc: &str, marker: String) {
        self.yjs.entry(doc.to_string()).or_default().push(marker);
    }

    fn lose(&mut self, kind: &'static str, n: u64, what: String) {
        *self.lost.entry(kind).or_insert(0) += n;
        self.problems.push(what);
    }

    /// Checks every acknowledged write against the server; losses go to
    /// `problems`. An error means the server could not be read at all.
    pub(super) async fn verify(&mut self, target: &Target, admin: &str) -> anyhow::Result<()> {
        let mut conn = HttpConn::connect(target).await?;
        conn.set_bearer(admin);
        self.verify_counters(&mut conn).await?;
        self.verify_alarms(&mut conn).await?;
        self.verify_rooms(&mut conn).await?;
        self.verify_followup(&mut conn).await?;
        self.verify_yjs(&mut conn).await?;
        Ok(())
    }

    async fn verify_counters(&mut self, conn: &mut HttpConn) -> anyhow::Result<()> {
        let counters: Vec<(String, CallTally)> =
            self.counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (name, t) in counters {
            let v = counter_value(conn, &name).await?;
            self.check_bounds("counter", &name, v, t);
        }
        Ok(())
    }

    fn check_bounds(&mut self, kind: &'static str, name: &str, v: i64, t: CallTally) {
        if v < t.acked as i64 {
            self.lose(
                kind,
                t.acked - v.max(0) as u64,
                format!(
                    "{kind} {name}: value {v} < {} acknowledged increments (lost {})",
                    t.acked,
                    t.acked as i64 - v
                ),
            );
        } else if v > t.attempted as i64 {
            self.problems.push(format!(
                "{kind} {name}: value {v} > {} increments attempted (duplicated)",
                t.attempted
            ));
        }
    }

    async fn verify_alarms(&mut self, conn: &mut HttpConn) -> anyhow::Result<()> {
        let alarms: Vec<(String, CallTally)> =
            self.alarms.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (name, t) in alarms {
            let wait_ms = (t.last_due_ms - now_ms()).clamp(0, 3_600_000) as u64;
            let deadline = Instant::now() + Duration::from_millis(wait_ms) + ALARM_GRACE;
            let v = loop {
                let v = counter_value(conn, &name).await?;
                if v >= t.acked as i64 || Instant::now() >= deadline {
                    break v;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            };
            self.check_bounds("alarm", &name, v, t);
        }
        Ok(())
    }

    async fn verify_rooms(&mut self, conn: &mut HttpConn) -> anyhow::Result<()> {
        for i in 0..self.rooms.len() {
            if self.rooms[i].acked.is_empty() {
                continue;
            }
            let name = self.rooms[i].name.clone();
            let stored = room_messages(conn, &name).await?;
            let mut missing = Vec::new();
            for (id, text) in &self.rooms[i].acked {
                match stored.get(id) {
                    Some(t) if t == text => {}
                    Some(t) => missing.push(format!("id {id}: {text:?} stored as {t:?}")),
                    None => missing.push(format!("id {id}: {text:?} missing")),
                }
            }
            if !missing.is_empty() {
                let n = missing.len() as u64;
                missing.truncate(10);
                self.lose(
                    "room",
                    n,
                    format!(
                        "room {name}: {n} acknowledged messages lost: {}",
                        missing.join("; ")
                    ),
                );
            }
        }
        Ok(())
    }

    /// The follow-up after the room's last acknowledged message must exist:
    /// the alarm set in that message's batch fired (before the kill or after
    /// the restart), and a follow-up once seen stays.
    async fn verify_followup(&mut self, conn: &mut HttpConn) -> anyhow::Result<()> {
        let Some(i) = self.followup_room else {
            return Ok(());
        };
        let (name, last, followed) = {
            let r = &self.rooms[i];
            let last = r.acked.keys().next_back().copied().unwrap_or(0);
            (r.name.clone(), last, r.followed_upto)
        };
        if last == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + ALARM_GRACE;
        let sql = "SELECT coalesce(max(id), 0) FROM messages WHERE name = 'roost'";
        loop {
            let latest = sql_int(conn, "room", &name, sql).await?;
            if latest > last {
                if last > followed {
                    self.rooms[i].followed_upto = last;
                    self.followups_checked += 1;
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.lose(
                    "followup",
                    1,
                    format!(
                        "room {name}: no follow-up after acknowledged message {last} \
                         within {ALARM_GRACE:?} (latest follow-up {latest})"
                    ),
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn verify_yjs(&mut self, conn: &mut HttpConn) -> anyhow::Result<()> {
        let docs: Vec<String> = self.yjs.keys().cloned().collect();
        for doc in docs {
            if self.yjs[&doc].is_empty() {
                continue;
            }
            let text = stored_text(conn, &doc).await?;
            let present = markers_in(&text);
            let missing: Vec<&String> = self.yjs[&doc]
                .iter()
                .filter(|m| !present.contains(m.as_str()))
                .collect();
            if !missing.is_empty() {
                let n = missing.len() as u64;
                let some: Vec<&str> = missing.iter().take(10).map(|s| s.as_str()).collect();
                let what = format!(
                    "ydoc {doc}: {n} of {} acknowledged edits lost, e.g. {}",
                    self.yjs[&doc].len(),
                    some.join(" ")
                );
                self.lose("yjs", n, what);
            }
        }
        Ok(())
    }

    /// Totals per kind, in report order.
    pub(super) fn totals(&self) -> Vec<(&'static str, KindTotals)> {
        let lost = |k: &str| self.lost.get(k).copied().unwrap_or(0);
        let sum = |m: &BTreeMap<String, CallTally>| {
            m.values()
                .fold((0, 0), |(a, t), v| (a + v.acked, t + v.attempted))
        };
        let (c_acked, c_tried) = sum(&self.counters);
        let (a_acked, a_tried) = sum(&self.alarms);
        let r_acked = self.rooms.iter().map(|r| r.acked.len() as u64).sum();
        let r_tried = self.rooms.iter().map(|r| r.attempted).sum();
        let y_acked = self.yjs.values().map(|v| v.len() as u64).sum();
        vec![
            (
                "counter",
                KindTotals {
                    acked: c_acked,
                    attempted: Some(c_tried),
                    lost: lost("counter"),
                },
            ),
            (
                "alarm",
                KindTotals {
                    acked: a_acked,
                    attempted: Some(a_tried),
                    lost: lost("alarm"),
                },
            ),
            (
                "room",
                KindTotals {
                    acked: r_acked,
                    attempted: Some(r_tried),
                    lost: lost("room"),
                },
            ),
            (
                "followup",
                KindTotals {
                    acked: self.followups_checked,
                    attempted: None,
                    lost: lost("followup"),
                },
            ),
            (
                "yjs",
                KindTotals {
                    acked: y_acked,
                    attempted: None,
                    lost: lost("yjs"),
                },
            ),
        ]
    }
}

async fn counter_value(conn: &mut HttpConn, name: &str) -> anyhow::Result<i64> {
    let path = format!("/v1/objects/counter/{}/call/get", encode_segment(name));
    let (status, body) = conn.post_json(&path, Bytes::from_static(b"{}")).await?;
    if !status.is_success() {
        bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice::<serde_json::Value>(&body)?
        .as_i64()
        .with_context(|| format!("{path}: not a number"))
}

/// Runs one read-only statement through the admin console; its rows (none
/// if the object does not exist: the server knows no such object).
async fn sql_rows(
    conn: &mut HttpConn,
    class: &str,
    name: &str,
    sql: &str,
) -> anyhow::Result<Vec<Vec<serde_json::Value>>> {
    let path = format!("/v1/admin/objects/{class}/{}/sql", encode_segment(name));
    let body = serde_json::json!({ "sql": sql }).to_string();
    let (status, reply) = conn.post_json(&path, Bytes::from(body)).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if !status.is_success() {
        bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&reply));
    }
    let v: serde_json::Value = serde_json::from_slice(&reply)?;
    let rows = v
        .get("rows")
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("{path}: no rows in {v}"))?;
    Ok(rows
        .iter()
        .map(|r| r.as_array().cloned().unwrap_or_default())
        .collect())
}

pub(super) async fn sql_int(
    conn: &mut HttpConn,
    class: &str,
    name: &str,
    sql: &str,
) -> anyhow::Result<i64> {
    let rows = sql_rows(conn, class, name, sql).await?;
    match rows.first() {
        None => Ok(0), // no such object
        Some(r) => r
            .first()
            .and_then(serde_json::Value::as_i64)
            .with_context(|| format!("{class}/{name}: no integer from {sql:?}")),
    }
}

/// Every stored message of a room: id → text, in one row (the console
/// returns at most 1,000 rows).
async fn room_messages(conn: &mut HttpConn, name: &str) -> anyhow::Result<BTreeMap<i64, String>> {
    let sql = "SELECT coalesce(group_concat(id || ' ' || text, char(10)), '') FROM messages";
    let rows = sql_rows(conn, "room", name, sql).await?;
    let all = match rows.first() {
        None => "", // no such room
        Some(r) => r
            .first()
            .and_then(serde_json::Value::as_str)
            .with_context(|| format!("room {name}: no text from {sql:?}"))?,
    };
    let mut out = BTreeMap::new();
    for line in all.lines() {
        if let Some((id, text)) = line.split_once(' ') {
            if let Ok(id) = id.parse() {
                out.insert(id, text.to_string());
            }
        }
    }
    Ok(out)
}

/// The text `t` of a stored Yjs document.
async fn stored_text(conn: &mut HttpConn, doc: &str) -> anyhow::Result<String> {
    let path = format!("/v1/yjs/{}/state", encode_segment(doc));
    let (status, body) = conn.get(&path).await?;
    if !status.is_success() {
        bail!("{path}: HTTP {status}");
    }
    let update = yrs::Update::decode_v1(&body).with_context(|| format!("{path}: bad update"))?;
    let ydoc = yrs::Doc::new();
    let text = ydoc.get_or_insert_text("t");
    ydoc.transact_mut()
        .apply_update(update)
        .with_context(|| format!("{path}: update does not apply"))?;
    let txn = ydoc.transact();
    Ok(text.get_string(&txn))
}

/// The markers `[...]` in a document's text.
fn markers_in(text: &str) -> HashSet<&str> {
    text.split('[')
        .skip(1)
        .filter_map(|s| s.split_once(']').map(|(m, _)| m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markers_between_filler() {
        let m = markers_in("~~[0.1.a][0.0.b]~~~~[1.1.zz]x[");
        assert!(m.contains("0.1.a") && m.contains("0.0.b") && m.contains("1.1.zz"));
        assert_eq!(m.len(), 3);
    }
}
