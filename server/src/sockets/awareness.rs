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

/// Awareness states of one document: client id → (clock, JSON state).
#[derive(Default)]
pub(crate) struct AwarenessStore {
    clients: HashMap<u64, (u32, Arc<str>)>,
}

fn encode(entries: HashMap<ClientID, AwarenessUpdateEntry>) -> Message {
    let msg = YMessage::Awareness(AwarenessUpdate { clients: entries });
    Message::Binary(msg.encode_v1().into())
}

impl ObjectSockets {
    /// Applies an awareness message (a whole frame) from `socket` and relays
    /// it to the document's other sockets. Errors if it does not decode.
    pub(crate) fn apply_awareness(&self, socket: SocketId, frame: &[u8]) -> Result<usize, String> {
        // Read whole and bounded first: one awareness message, nothing
        // truncated or trailing, no count larger than its bytes.
        let body = match wire::read_frame(frame).map_err(|e| e.to_string())?[..] {
            [wire::YMessage::Awareness(body)] => body,
            _ => return Err("not one awareness message".into()),
        };
        wire::check_awareness(body).map_err(|e| e.to_string())?;
        let update = AwarenessUpdate::decode_v1(body).map_err(|e| e.to_string())?;
        let mut announced = Vec::new();
        self.with_awareness(|store| {
            for (id, entry) in &update.clients {
                let id = id.get();
                let newer = store
                    .clients
                    .get(&id)
                    .is_none_or(|(clock, _)| entry.clock >= *clock);
                if !newer {
                    continue;
                }
                if &*entry.json == "null" {
                    store.clients.remove(&id);
                } else {
                    store.clients.insert(id, (entry.clock, entry.json.clone()));
                    announced.push(id);
                }
            }
        });
        self.with_table(|t| {
            if let Some(e) = t.get_mut(&socket) {
                for id in announced {
                    e.add_awareness_client(id);
                }
            }
        });
        let relay = Message::Binary(frame.to_vec().into());
        Ok(self.broadcast(None, &relay, Some(socket)))
    }

    /// Every known awareness state as one message, if there are any.
    pub(crate) fn awareness_state(&self) -> Option<Message> {
        let entries: HashMap<ClientID, AwarenessUpdateEntry> = self.with_awareness(|store| {
            store
                .clients
                .iter()
                .map(|(id, (clock, json))| {
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
            ids.iter()
                .filter_map(|id| {
                    store.clients.remove(id).map(|(clock, _)| {
                        (
                            ClientID::new(*id),
                            AwarenessUpdateEntry {
                                clock: clock + 1,
                                json: Arc::from("null"),
                            },
                        )
                    })
                })
                .collect()
        });
        if !removed.is_empty() {
            self.broadcast(None, &encode(removed), Some(socket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::{Outbox, SocketEntry, SocketHub};
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

    #[test]
    fn relays_merges_and_removes_on_close() {
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
            t.apply_awareness(SocketId(1), &frame(7, 1, r#"{"user":"a"}"#)),
            Ok(1)
        );
        // An older clock does not overwrite a newer state.
        t.apply_awareness(SocketId(1), &frame(7, 3, r#"{"user":"b"}"#))
            .expect("apply");
        t.apply_awareness(SocketId(1), &frame(7, 2, r#"{"user":"old"}"#))
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
            t.apply_awareness(SocketId(1), &[1, 200, 1]).is_err(),
            "garbage is refused"
        );
    }
}
