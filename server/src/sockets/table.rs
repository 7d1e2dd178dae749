//! The socket tables: [`SocketHub`] maps each object with open sockets to
//! its [`ObjectSockets`] — one [`SocketEntry`] per socket (tags,
//! attachment, read-only flag, outbox), the document's awareness, the
//! auto-response — and broadcasts to them.
//!
//! Architecture Invariant: the tables live in the hub, not in the actor, so
//! sockets, tags and attachments survive hibernation. Each table is behind
//! a `std::sync::Mutex` shared by the actor and the socket tasks (critical
//! sections are a few map operations, never an await). This module runs no
//! object code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Message;
use dashmap::DashMap;

use super::awareness;
use super::{OutFrame, Outbox, SocketId, Staged};
use crate::id::{ObjectId, ObjectKey};

/// One socket's row in its object's table: 24 bytes, because an idle
/// socket's cost is mostly per-socket rows like this one. What many sockets
/// never have — tags, an attachment, awareness ids — is in one optional box.
pub(crate) struct SocketEntry {
    pub outbox: Arc<Outbox>,
    extra: Option<Box<SocketExtra>>,
    pub read_only: bool,
    /// Set once `on_connect` accepted the socket.
    pub accepted: bool,
    /// Another node relays it (cluster mode): its relay is told its state.
    pub relayed: bool,
}

/// The rarely-set parts of a [`SocketEntry`].
#[derive(Default)]
struct SocketExtra {
    tags: Box<[String]>,
    attachment: Option<Box<[u8]>>,
    /// Yjs awareness client ids this socket announced.
    awareness_clients: Vec<u64>,
    /// Who holds the socket's token (`None`: anonymous).
    identity: Option<Arc<crate::auth::Identity>>,
    /// Which server secret signed that token (`Access::signed_by`).
    signed_by: u64,
    /// Its token was revoked: a close is on its way.
    revoked: bool,
}

impl SocketEntry {
    pub(crate) fn new(outbox: Arc<Outbox>, read_only: bool) -> SocketEntry {
        SocketEntry {
            outbox,
            extra: None,
            read_only,
            accepted: false,
            relayed: false,
        }
    }

    /// Whether broadcasts to `tag` (to everyone if `None`) reach this socket.
    fn listens(&self, tag: Option<&str>) -> bool {
        self.accepted && tag.is_none_or(|tag| self.tags().iter().any(|t| t == tag))
    }

    pub(crate) fn tags(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |x| &x.tags)
    }

    pub(crate) fn attachment(&self) -> Option<&[u8]> {
        self.extra.as_ref().and_then(|x| x.attachment.as_deref())
    }

    pub(crate) fn awareness_clients(&self) -> &[u64] {
        self.extra.as_ref().map_or(&[], |x| &x.awareness_clients)
    }

    fn extra_mut(&mut self) -> &mut SocketExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drops the box once nothing is left in it.
    fn tidy(&mut self) {
        if self.extra.as_ref().is_some_and(|x| {
            x.tags.is_empty()
                && x.attachment.is_none()
                && x.awareness_clients.is_empty()
                && x.identity.is_none()
        }) {
            self.extra = None;
        }
    }

    /// Who holds the socket's token.
    pub(crate) fn identity(&self) -> Option<&Arc<crate::auth::Identity>> {
        self.extra.as_ref().and_then(|x| x.identity.as_ref())
    }

    /// Who holds the socket's token, and which secret signed it.
    pub(crate) fn set_holder(&mut self, access: &crate::auth::Access) {
        let extra = self.extra_mut();
        extra.identity = access.identity.clone();
        extra.signed_by = access.signed_by;
        self.tidy();
    }

    pub(crate) fn set_tags(&mut self, tags: Vec<String>) {
        self.extra_mut().tags = tags.into_boxed_slice();
        self.tidy();
    }

    pub(crate) fn set_attachment(&mut self, bytes: Vec<u8>) {
        self.extra_mut().attachment = Some(bytes.into_boxed_slice());
    }

    /// Records an awareness client id this socket announced.
    pub(crate) fn add_awareness_client(&mut self, id: u64) {
        if !self.awareness_clients().contains(&id) {
            self.extra_mut().awareness_clients.push(id);
        }
    }

    pub(crate) fn remove_awareness_client(&mut self, id: u64) {
        if let Some(x) = self.extra.as_mut() {
            x.awareness_clients.retain(|c| *c != id);
        }
        self.tidy();
    }

    pub(crate) fn take_awareness_clients(&mut self) -> Vec<u64> {
        let ids = self
            .extra
            .as_mut()
            .map(|x| std::mem::take(&mut x.awareness_clients))
            .unwrap_or_default();
        self.tidy();
        ids
    }
}

/// The sockets of one object. Survives the object's hibernation.
pub(crate) struct ObjectSockets {
    /// The object's key, kept here once rather than by each socket's task.
    key: ObjectKey,
    table: Mutex<HashMap<SocketId, SocketEntry>>,
    awareness: Mutex<awareness::AwarenessStore>,
    auto_response: RwLock<Option<(String, String)>>,
}

impl ObjectSockets {
    fn new(key: ObjectKey) -> ObjectSockets {
        ObjectSockets {
            key,
            table: Mutex::new(HashMap::new()),
            awareness: Mutex::new(awareness::AwarenessStore::default()),
            auto_response: RwLock::new(None),
        }
    }

    pub(crate) fn key(&self) -> &ObjectKey {
        &self.key
    }

    pub(crate) fn with_table<R>(
        &self,
        f: impl FnOnce(&mut HashMap<SocketId, SocketEntry>) -> R,
    ) -> R {
        match self.table.lock() {
            Ok(mut t) => f(&mut t),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub(crate) fn with_awareness<R>(
        &self,
        f: impl FnOnce(&mut awareness::AwarenessStore) -> R,
    ) -> R {
        match self.awareness.lock() {
            Ok(mut a) => f(&mut a),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub(crate) fn auto_response(&self) -> Option<(String, String)> {
        self.auto_response.read().ok().and_then(|a| a.clone())
    }

    pub(crate) fn set_auto_response(&self, pair: Option<(String, String)>) {
        if let Ok(mut a) = self.auto_response.write() {
            *a = pair;
        }
    }

    /// Accepted sockets with `tag` (all accepted sockets if `None`), by id.
    pub(crate) fn ids(&self, tag: Option<&str>) -> Vec<SocketId> {
        let mut ids: Vec<SocketId> = self.with_table(|t| {
            t.iter()
                .filter(|(_, e)| e.listens(tag))
                .map(|(id, _)| *id)
                .collect()
        });
        ids.sort_unstable();
        ids
    }

    pub(crate) fn outbox(&self, id: SocketId) -> Option<Arc<Outbox>> {
        self.with_table(|t| t.get(&id).map(|e| e.outbox.clone()))
    }

    /// Stages `msg` for every accepted socket with `tag`, except `except`;
    /// nothing is queued until `staged.flush()`.
    pub(crate) fn stage_broadcast(
        &self,
        tag: Option<&str>,
        msg: &Message,
        except: Option<SocketId>,
        staged: &mut Staged,
    ) {
        self.with_table(|t| {
            for (id, e) in t.iter() {
                if Some(*id) != except && e.listens(tag) {
                    staged.add(*id, &e.outbox, OutFrame::Msg(msg.clone()));
                }
            }
        });
    }

    /// Stages one frame for one socket, if it is still listed.
    pub(crate) fn stage(&self, id: SocketId, frame: OutFrame, staged: &mut Staged) {
        self.with_table(|t| {
            if let Some(e) = t.get(&id) {
                staged.add(id, &e.outbox, frame);
            }
        });
    }

    /// Pushes `msg` to every accepted socket with `tag`, except `except`.
    pub(crate) fn broadcast(
        &self,
        tag: Option<&str>,
        msg: &Message,
        except: Option<SocketId>,
    ) -> usize {
        let targets: Vec<Arc<Outbox>> = self.with_table(|t| {
            t.iter()
                .filter(|(id, e)| Some(**id) != except && e.listens(tag))
                .map(|(_, e)| e.outbox.clone())
                .collect()
        });
        let mut sent = 0;
        for outbox in targets {
            if outbox.push(OutFrame::Msg(msg.clone())) {
                sent += 1;
            }
        }
        sent
    }
}

/// Every object's socket table, by object id.
#[derive(Default)]
pub(crate) struct SocketHub {
    objects: DashMap<ObjectId, Arc<ObjectSockets>>,
    next_id: AtomicU64,
    pub open: AtomicU64,
}

impl SocketHub {
    pub(crate) fn next_id(&self) -> SocketId {
        SocketId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Keeps the ids this hub hands out above `id` (a socket resumed here
    /// with an id another node gave it).
    pub(crate) fn skip_past(&self, id: SocketId) {
        self.next_id.fetch_max(id.0, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, id: &ObjectId) -> Option<Arc<ObjectSockets>> {
        self.objects.get(id).map(|e| e.clone())
    }

    /// Adds a socket to the object's table (creating it) if the object has
    /// fewer than `max` sockets. Done under the map's shard lock so that a
    /// concurrent removal of an empty table cannot orphan the socket.
    pub(crate) fn insert(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        entry: SocketEntry,
        max: usize,
    ) -> Option<Arc<ObjectSockets>> {
        let table = self
            .objects
            .entry(key.id)
            .or_insert_with(|| Arc::new(ObjectSockets::new(key.clone())));
        let added = table.with_table(|t| {
            if t.len() >= max {
                return false;
            }
            match t.entry(socket) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(entry);
                    true
                }
                // Only a resumed socket's id can be taken (`resume`).
                std::collections::hash_map::Entry::Occupied(_) => false,
            }
        });
        let table = table.clone();
        if added {
            self.open.fetch_add(1, Ordering::Relaxed);
            Some(table)
        } else {
            None
        }
    }

    /// Removes a socket; drops the object's table when it is empty.
    pub(crate) fn remove(&self, object: &ObjectId, socket: SocketId) {
        let removed = self
            .objects
            .get(object)
            .is_some_and(|t| t.with_table(|t| t.remove(&socket).is_some()));
        if removed {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        self.objects
            .remove_if(object, |_, t| t.with_table(|t| t.is_empty()));
    }

    /// The outboxes of every accepted socket of every object.
    pub(crate) fn accepted_outboxes(&self) -> Vec<Arc<Outbox>> {
        self.objects
            .iter()
            .flat_map(|entry| {
                entry.with_table(|t| {
                    t.values()
                        .filter(|e| e.accepted)
                        .map(|e| e.outbox.clone())
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    }

    /// Queues a close frame on every socket of every object.
    pub(crate) fn close_all(&self, code: u16, reason: &str) {
        for entry in self.objects.iter() {
            let outboxes: Vec<Arc<Outbox>> =
                entry.with_table(|t| t.values().map(|e| e.outbox.clone()).collect());
            for o in outboxes {
                o.push(OutFrame::Close(code, reason.to_owned()));
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Removes an object's whole socket table (the object was deleted) and
    /// returns the outboxes of its sockets.
    /// Closes every open socket whose token `revoked` matches (its holder,
    /// and which secret signed it), with `code` and `reason`; returns how
    /// many.
    pub(crate) fn close_where(
        &self,
        revoked: impl Fn(&crate::auth::Identity, u64) -> bool,
        code: u16,
        reason: &str,
    ) -> usize {
        let mut closed = 0;
        for object in self.objects.iter() {
            object.with_table(|t| {
                for entry in t.values_mut() {
                    let Some(extra) = entry.extra.as_mut() else {
                        continue;
                    };
                    let signed_by = extra.signed_by;
                    let matches = extra
                        .identity
                        .as_deref()
                        .is_some_and(|i| revoked(i, signed_by));
                    if !extra.revoked && matches {
                        extra.revoked = true;
                        entry.outbox.push(OutFrame::Close(code, reason.into()));
                        closed += 1;
                    }
                }
            });
        }
        closed
    }

    pub(crate) fn remove_object(&self, object: &ObjectId) -> Vec<Arc<Outbox>> {
        let outboxes: Vec<Arc<Outbox>> = match self.objects.remove(object) {
            Some((_, t)) => t.with_table(|t| t.drain().map(|(_, e)| e.outbox).collect()),
            None => Vec::new(),
        };
        // Their `remove` finds no table later: count them out here, or
        // `open` grows by every socket a deleted object had.
        self.open
            .fetch_sub(outboxes.len() as u64, Ordering::Relaxed);
        outboxes
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
