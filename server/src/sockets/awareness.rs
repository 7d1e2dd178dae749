//! Yjs awareness kept in the socket layer: who is here and where their
//! cursor is. Awareness is ephemeral — never stored — and its keep-alive
//! traffic (clients re-send every ~15 s) is relayed here without waking the
//! document's object. When a socket closes, the clients it announced are
//! removed for everyone.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Message;
use roost_protocol::yjs as wire;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::protocol::Message as YMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::ClientID;

use super::{ObjectSockets, SocketEntry, SocketId};

/// Awareness states of one document: client id → (clock, JSON state, the
/// socket that announced it — only that socket may change or remove it).
#[derive(Default)]
pub(crate) struct AwarenessStore {
    clients: HashMap<u64, (u32, Arc<str>, SocketId)>,
    /// Bytes of every JSON state held.
    bytes: usize,
}

/// Awareness entries by client id, as yrs decodes and encodes them.
type Entries = HashMap<ClientID, AwarenessUpdateEntry>;

impl AwarenessStore {
    /// The entries of `update` that `socket` may set — ids no other socket
    /// announced, clocks not older than the held ones — if the document
    /// stays within `limits` with them (`owned`: the ids `socket` holds).
    fn admit(
        &self,
        socket: SocketId,
        update: &AwarenessUpdate,
        owned: usize,
        limits: &super::SocketLimits,
    ) -> Result<Entries, String> {
        let (mut new_ids, mut entries, mut bytes) = (0usize, self.clients.len(), self.bytes);
        let mut accepted: Entries = HashMap::new();
        for (id, entry) in &update.clients {
            let held = self.clients.get(&id.get());
            if held.is_some_and(|(clock, _, owner)| *owner != socket || entry.clock < *clock) {
                continue;
            }
            let old = held.map_or(0, |(_, json, _)| json.len());
            if &*entry.json == "null" {
                if held.is_some() {
                    entries -= 1;
                    bytes -= old;
                }
            } else {
                if held.is_none() {
                    new_ids += 1;
                    entries += 1;
                }
                bytes = bytes - old + entry.json.len();
            }
            accepted.insert(*id, entry.clone());
        }
        if owned + new_ids > limits.max_awareness_per_socket {
            return Err(format!(
                "a socket may announce at most {} awareness clients",
                limits.max_awareness_per_socket
            ));
        }
        if entries > limits.max_awareness_per_doc || bytes > limits.max_awareness_bytes {
            return Err(format!(
                "the document's awareness is full ({} clients, {} bytes at most)",
                limits.max_awareness_per_doc, limits.max_awareness_bytes
            ));
        }
        Ok(accepted)
    }

    /// Stores entries `admit` accepted from `socket`; returns the ids it
    /// announced and those it withdrew (a `null` state).
    fn store(&mut self, socket: SocketId, accepted: &Entries) -> (Vec<u64>, Vec<u64>) {
        let (mut announced, mut withdrawn) = (Vec::new(), Vec::new());
        for (id, entry) in accepted {
            let id = id.get();
            if let Some((_, old, _)) = self.clients.remove(&id) {
                self.bytes -= old.len();
            }
            if &*entry.json == "null" {
                withdrawn.push(id);
            } else {
                self.bytes += entry.json.len();
                self.clients
                    .insert(id, (entry.clock, entry.json.clone(), socket));
                announced.push(id);
            }
        }
        (announced, withdrawn)
    }
}

/// The key of an awareness state that only the server writes: the token
/// holder of the socket that set the state (`{"sub", "name"}`), so pages can
/// trust who a cursor belongs to. A `roost` key a client wrote itself is
/// removed.
const VERIFIED_KEY: &str = "roost";

/// Stamps the states of `update` with `identity` (or strips a forged stamp
/// from an anonymous socket's); returns whether any state changed.
fn stamp(update: &mut AwarenessUpdate, identity: Option<&crate::auth::Identity>) -> bool {
    let mut changed = false;
    for entry in update.clients.values_mut() {
        if &*entry.json == "null" || (identity.is_none() && !entry.json.contains("\"roost\"")) {
            continue;
        }
        let Ok(serde_json::Value::Object(mut state)) = serde_json::from_str(&entry.json) else {
            continue;
        };
        let forged = state.remove(VERIFIED_KEY).is_some();
        match identity {
            Some(who) => {
                let verified = serde_json::json!({ "sub": who.sub, "name": who.name });
                state.insert(VERIFIED_KEY.into(), verified);
            }
            None if !forged => continue,
            None => {}
        }
        entry.json = Arc::from(serde_json::Value::Object(state).to_string());
        changed = true;
    }
    changed
}

fn encode(entries: HashMap<ClientID, AwarenessUpdateEntry>) -> Message {
    let msg = YMessage::Awareness(AwarenessUpdate { clients: entries });
    Message::Binary(msg.encode_v1().into())
}

impl ObjectSockets {
    /// Applies an awareness message (a whole frame) from `socket` and relays
    /// it to the document's other sockets. Errors if it does not decode.
    ///
    /// Bounds (`SocketLimits`): the client ids one socket announces, the
    /// entries and the bytes of states the document holds. A frame that
    /// would pass one is refused whole (the caller closes the socket with
    /// 1008). Entries of ids another socket announced are ignored and not
    /// relayed.
    pub(crate) fn apply_awareness(
        &self,
        socket: SocketId,
        frame: &[u8],
        limits: &super::SocketLimits,
    ) -> Result<usize, String> {
        // Read whole and bounded first: one awareness message, nothing
        // truncated or trailing, no count larger than its bytes.
        let body = match wire::read_frame(frame).map_err(|e| e.to_string())?[..] {
            [wire::YMessage::Awareness(body)] => body,
            _ => return Err("not one awareness message".into()),
        };
        wire::check_awareness(body).map_err(|e| e.to_string())?;
        let mut update = AwarenessUpdate::decode_v1(body).map_err(|e| e.to_string())?;
        let (owned, identity) = self.with_table(|t| {
            t.get(&socket).map_or((0, None), |e| {
                (e.awareness_clients().len(), e.identity().cloned())
            })
        });
        let stamped = stamp(&mut update, identity.as_deref());
        let (accepted, announced, withdrawn) = self.with_awareness(|store| {
            // Check every bound before anything changes.
            let accepted = store.admit(socket, &update, owned, limits)?;
            let (announced, withdrawn) = store.store(socket, &accepted);
            Ok::<_, String>((accepted, announced, withdrawn))
        })?;
        self.with_table(|t| {
            if let Some(e) = t.get_mut(&socket) {
                for id in announced {
                    e.add_awareness_client(id);
                }
                for id in withdrawn {
                    e.remove_awareness_client(id);
                }
            }
        });
        if accepted.is_empty() {
            return Ok(0);
        }
        let relay = if !stamped && accepted.len() == update.clients.len() {
            Message::Binary(frame.to_vec().into())
        } else {
            encode(accepted)
        };
        Ok(self.broadcast(None, &relay, Some(socket)))
    }

    /// Every known awareness state as one message, if there are any.
    pub(crate) fn awareness_state(&self) -> Option<Message> {
        let entries: HashMap<ClientID, AwarenessUpdateEntry> = self.with_awareness(|store| {
            store
                .clients
                .iter()
                .map(|(id, (clock, json, _))| {
                    (
                        ClientID::new(*id),
                        AwarenessUpdateEntry {
                            clock: *clock,
                            json: json.clone(),
                        },
                    )
                })
                .collect()
        });
        if entries.is_empty() {
            None
        } else {
            Some(encode(entries))
        }
    }

    /// Removes the clients `socket` announced and tells the other sockets.
    pub(crate) fn drop_awareness_of(&self, socket: SocketId) {
        let ids = self.with_table(|t| {
            t.get_mut(&socket)
                .map(SocketEntry::take_awareness_clients)
                .unwrap_or_default()
        });
        if ids.is_empty() {
            return;
        }
        let removed: HashMap<ClientID, AwarenessUpdateEntry> = self.with_awareness(|store| {
            let mut removed = HashMap::new();
            for id in ids {
                if store
                    .clients
                    .get(&id)
                    .is_none_or(|(_, _, owner)| *owner != socket)
                {
                    continue;
                }
                if let Some((clock, json, _)) = store.clients.remove(&id) {
                    store.bytes -= json.len();
                    removed.insert(
                        ClientID::new(id),
                        AwarenessUpdateEntry {
                            clock: clock + 1,
                            json: Arc::from("null"),
                        },
                    );
                }
            }
            removed
        });
        if !removed.is_empty() {
            self.broadcast(None, &encode(removed), Some(socket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::{Outbox, SocketEntry, SocketHub, SocketLimits};
    use crate::ObjectKey;

    fn frame(id: u64, clock: u32, json: &str) -> Vec<u8> {
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(id),
            AwarenessUpdateEntry {
                clock,
                json: Arc::from(json),
            },
        );
        YMessage::Awareness(AwarenessUpdate { clients }).encode_v1()
    }

    /// Invariant: a state's `roost` key is the server's word on who set it:
    /// the token holder of the socket, never what a page wrote.
    #[test]
    fn states_carry_the_verified_holder_and_no_forged_one() {
        let limits = SocketLimits::default();
        let hub = SocketHub::default();
        let key = ObjectKey::new("ydoc", "d").expect("key");
        let mut alice = SocketEntry::new(Arc::new(Outbox::new(1 << 20)), false);
        alice.accepted = true;
        alice.set_holder(&crate::auth::Access {
            read_only: false,
            expires_ms: None,
            identity: Some(Arc::new(crate::auth::Identity {
                sub: Some("u-1".into()),
                name: Some("Alice".into()),
                ..Default::default()
            })),
            signed_by: 1,
        });
        let mut anon = SocketEntry::new(Arc::new(Outbox::new(1 << 20)), false);
        anon.accepted = true;
        let t = hub.insert(&key, SocketId(1), alice, 10).expect("table");
        hub.insert(&key, SocketId(2), anon, 10).expect("table");
        let forged = r#"{"user":"x","roost":{"sub":"u-1","name":"Alice"}}"#;
        t.apply_awareness(
            SocketId(1),
            &frame(1, 1, r#"{"user":"a","roost":"me"}"#),
            &limits,
        )
        .expect("apply");
        t.apply_awareness(SocketId(2), &frame(2, 1, forged), &limits)
            .expect("apply");
        let Some(Message::Binary(bytes)) = t.awareness_state() else {
            panic!("binary state")
        };
        let body = match wire::read_frame(&bytes).expect("frame")[..] {
            [wire::YMessage::Awareness(body)] => body.to_vec(),
            _ => panic!("awareness"),
        };
        let update = AwarenessUpdate::decode_v1(&body).expect("decode");
        let state = |id: u64| -> serde_json::Value {
            serde_json::from_str(&update.clients[&ClientID::new(id)].json).expect("json")
        };
        assert_eq!(
            state(1)["roost"],
            serde_json::json!({"sub": "u-1", "name": "Alice"})
        );
        assert_eq!(state(1)["user"], "a");
        assert!(state(2).get("roost").is_none(), "{}", state(2));
        assert_eq!(state(2)["user"], "x");
    }

    #[test]
    fn relays_merges_and_removes_on_close() {
        let limits = SocketLimits::default();
        let hub = SocketHub::default();
        let key = ObjectKey::new("ydoc", "d").expect("key");
        let mk = || {
            let mut e = SocketEntry::new(Arc::new(Outbox::new(1 << 20)), false);
            e.accepted = true;
            e
        };
        let t = hub.insert(&key, SocketId(1), mk(), 10).expect("table");
        hub.insert(&key, SocketId(2), mk(), 10).expect("table");
        assert_eq!(
            t.apply_awareness(SocketId(1), &frame(7, 1, r#"{"user":"a"}"#), &limits),
            Ok(1)
        );
        // An older clock does not overwrite a newer state.
        t.apply_awareness(SocketId(1), &frame(7, 3, r#"{"user":"b"}"#), &limits)
            .expect("apply");
        t.apply_awareness(SocketId(1), &frame(7, 2, r#"{"user":"old"}"#), &limits)
            .expect("apply");
        let state = t.awareness_state().expect("state");
        let Message::Binary(bytes) = state else {
            panic!("binary")
        };
        let Ok(YMessage::Awareness(u)) = YMessage::decode_v1(&bytes) else {
            panic!("awareness")
        };
        assert_eq!(&*u.clients[&ClientID::new(7)].json, r#"{"user":"b"}"#);
        t.drop_awareness_of(SocketId(1));
        assert!(t.awareness_state().is_none());
        assert!(
            t.apply_awareness(SocketId(1), &[1, 200, 1], &limits)
                .is_err(),
            "garbage is refused"
        );
    }

    fn frame_of(ids: std::ops::Range<u64>, json: &str) -> Vec<u8> {
        let clients = ids
            .map(|id| {
                let entry = AwarenessUpdateEntry {
                    clock: 1,
                    json: Arc::from(json),
                };
                (ClientID::new(id), entry)
            })
            .collect();
        YMessage::Awareness(AwarenessUpdate { clients }).encode_v1()
    }

    /// Invariant: awareness is bounded per socket and per document, and an
    /// entry belongs to the socket that announced it.
    #[test]
    fn awareness_is_bounded_and_owned_by_its_socket() {
        let limits = SocketLimits {
            max_awareness_per_socket: 4,
            max_awareness_per_doc: 6,
            max_awareness_bytes: 200,
            ..SocketLimits::default()
        };
        let hub = SocketHub::default();
        let key = ObjectKey::new("ydoc", "d").expect("key");
        let mk = || {
            let mut e = SocketEntry::new(Arc::new(Outbox::new(1 << 20)), false);
            e.accepted = true;
            e
        };
        let t = hub.insert(&key, SocketId(1), mk(), 10).expect("table");
        for s in 2..=4 {
            hub.insert(&key, SocketId(s), mk(), 10).expect("table");
        }
        let count = |t: &ObjectSockets| t.with_awareness(|s| s.clients.len());
        // Per socket: a frame of five new ids is refused whole.
        assert!(t
            .apply_awareness(SocketId(1), &frame_of(0..5, "{}"), &limits)
            .is_err());
        assert_eq!(count(&t), 0);
        t.apply_awareness(SocketId(1), &frame_of(0..4, "{}"), &limits)
            .expect("four");
        // Another socket cannot overwrite or remove socket 1's entries.
        t.apply_awareness(SocketId(2), &frame(0, 9, "null"), &limits)
            .expect("ignored");
        t.apply_awareness(SocketId(2), &frame(1, 9, r#"{"x":1}"#), &limits)
            .expect("ignored");
        assert_eq!(count(&t), 4);
        // Per document: entries, then bytes.
        t.apply_awareness(SocketId(2), &frame_of(10..12, "{}"), &limits)
            .expect("six");
        assert!(t
            .apply_awareness(SocketId(3), &frame_of(20..21, "{}"), &limits)
            .is_err());
        let big = format!("{{\"s\":\"{}\"}}", "x".repeat(200));
        assert!(t
            .apply_awareness(SocketId(2), &frame(10, 2, &big), &limits)
            .is_err());
        // Withdrawing an id frees its place for the socket.
        t.apply_awareness(SocketId(1), &frame(0, 2, "null"), &limits)
            .expect("withdraw");
        t.apply_awareness(SocketId(1), &frame(5, 1, "{}"), &limits)
            .expect("room again");
        t.drop_awareness_of(SocketId(1));
        assert_eq!(count(&t), 2, "socket 2's entries stay");
    }
}
