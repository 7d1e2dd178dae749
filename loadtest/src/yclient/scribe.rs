//! Writers of fan-out updates other than appends: `prepend` (each update one
//! item inserted at the start of the shared text) and `random` (after a
//! random character the client knows of). A real client would apply every
//! update it receives to its own `Doc` to know where the start is; at
//! fan-out rates that costs the generator more than the server, so a
//! `Scribe` only notes the ids of the items it receives (a scan of the
//! update's header) and encodes its own one-item updates by hand, with the
//! origins a real client would send:
//!
//! - `prepend`: no left origin, the right origin the document's first
//!   character as its `Mirror` last saw it (without one: the first
//!   character of the newest item it knows of) — what a client at
//!   position 0 sends;
//! - `random`: the left origin a random character of one of its 4096 most
//!   recent known items, the right origin the next character of the same
//!   item (none after its last: YATA then places it after the run that
//!   follows, a bounded scan).
//!
//! Either is a valid Yjs update of one string item: `tests` apply them from
//! several clients to a yrs `Doc` and check the text.

use std::sync::atomic::Ordering;

use yrs::encoding::read::{Cursor, Read as _};
use yrs::encoding::write::Write as _;

use super::mirror::{FirstChar, NONE};
use crate::yjs::TEXT_NAME;

/// What fan-out clients write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Each client appends to its own run of text (the cheapest CRDT work).
    #[default]
    Append,
    /// Each update inserts at the start of the shared text.
    Prepend,
    /// Each update inserts after a random known character.
    Random,
}

/// An item's or character's id: (client, clock).
type Id = (u64, u32);

/// Known items kept for `random` picks.
const KNOWN: usize = 4096;

/// A hand-encoding writer of one client (see the module doc).
pub(crate) struct Scribe {
    client: u64,
    clock: u32,
    random: bool,
    /// `prepend`: the document's first character, kept by its `Mirror`.
    first: Option<FirstChar>,
    /// Recent items: (client, first clock, length); `newest` indexes the last noted.
    known: Vec<(u64, u32, u32)>,
    newest: usize,
    rng: u64,
    buf: Vec<u8>,
}

impl Scribe {
    pub(crate) fn new(client: u64, workload: Workload, first: Option<FirstChar>) -> Scribe {
        Scribe {
            client,
            clock: 0,
            random: workload == Workload::Random,
            first,
            known: Vec::new(),
            newest: 0,
            rng: client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            buf: Vec::with_capacity(64),
        }
    }

    /// The clock after our last item (our state vector's entry).
    pub(crate) fn clock(&self) -> u32 {
        self.clock
    }

    fn note(&mut self, item: (u64, u32, u32)) {
        if self.known.len() < KNOWN {
            self.known.push(item);
            self.newest = self.known.len() - 1;
        } else {
            self.newest = (self.newest + 1) % KNOWN;
            self.known[self.newest] = item;
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: not for security.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// (left origin, right origin) of our next item.
    fn origins(&mut self) -> (Option<Id>, Option<Id>) {
        if self.known.is_empty() {
            return (None, None);
        }
        if !self.random {
            let seen = self
                .first
                .as_ref()
                .map_or(NONE, |f| f.load(Ordering::Relaxed));
            if seen != NONE {
                return (None, Some((seen >> 32, seen as u32)));
            }
            let (c, clk, _) = self.known[self.newest];
            return (None, Some((c, clk)));
        }
        let r = self.next_random();
        let (c, clk, len) = self.known[(r as usize) % self.known.len()];
        let off = ((r >> 32) as u32) % len.max(1);
        let right = (off + 1 < len).then_some((c, clk + off + 1));
        (Some((c, clk + off)), right)
    }

    /// Our next update: one item holding `text` (ASCII); it is noted as known.
    pub(crate) fn insert(&mut self, text: &str) -> &[u8] {
        let (left, right) = self.origins();
        let b = &mut self.buf;
        b.clear();
        b.write_var(1u32); // clients
        b.write_var(1u32); // structs
        b.write_var(self.client);
        b.write_var(self.clock);
        let info =
            4u8 | if left.is_some() { 0x80 } else { 0 } | if right.is_some() { 0x40 } else { 0 };
        b.write_u8(info);
        for (c, clk) in left.iter().chain(right.iter()) {
            b.write_var(*c);
            b.write_var(*clk);
        }
        if left.is_none() && right.is_none() {
            b.write_var(1u32); // parent named by its root key
            b.write_string(TEXT_NAME);
        }
        b.write_string(text);
        b.write_var(0u32); // no deletions
        let len = text.len() as u32;
        let item = (self.client, self.clock, len);
        self.clock += len;
        self.note(item);
        &self.buf
    }

    /// Notes the string items of a received update (others are skipped: a
    /// content it cannot size ends the scan). Never panics.
    pub(crate) fn learn(&mut self, update: &[u8]) {
        let mut c = Cursor::new(update);
        let mut items = Vec::new();
        let _ = scan_items(&mut c, &mut items);
        for it in items {
            self.note(it);
        }
    }
}

/// The string items of a v1 update: (client, clock, length).
fn scan_items(c: &mut Cursor<'_>, out: &mut Vec<(u64, u32, u32)>) -> Option<()> {
    let groups: u32 = c.read_var().ok()?;
    for _ in 0..groups {
        let structs: u32 = c.read_var().ok()?;
        let client: u64 = c.read_var().ok()?;
        let mut clock: u32 = c.read_var().ok()?;
        for _ in 0..structs {
            let info = c.read_u8().ok()?;
            let len: u32 = match info & 0x1f {
                // GC and Skip: a length only.
                0 | 10 => c.read_var().ok()?,
                content => {
                    skip_item_header(c, info)?;
                    match content {
                        1 => c.read_var().ok()?,
                        4 => {
                            let s = c.read_string().ok()?;
                            let n = s.encode_utf16().count() as u32;
                            out.push((client, clock, n));
                            n
                        }
                        _ => return None,
                    }
                }
            };
            clock = clock.checked_add(len)?;
        }
    }
    Some(())
}

/// Skips an item's origins and parent.
fn skip_item_header(c: &mut Cursor<'_>, info: u8) -> Option<()> {
    let origins = u32::from(info & 0x80 != 0) + u32::from(info & 0x40 != 0);
    for _ in 0..origins * 2 {
        let _: u64 = c.read_var().ok()?;
    }
    if info & 0xc0 == 0 {
        let by_key: u32 = c.read_var().ok()?;
        if by_key == 1 {
            c.read_string().ok()?;
        } else {
            let _: u64 = c.read_var().ok()?;
            let _: u64 = c.read_var().ok()?;
        }
        if info & 0x20 != 0 {
            c.read_string().ok()?;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode as _;
    use yrs::{Doc, GetString as _, ReadTxn as _, Transact as _, Update};

    /// Clients exchange their updates in a seeded random order; every one
    /// applies to a yrs `Doc` (nothing left pending) and the text is as
    /// long as everything written (prepends: the newest first).
    fn exchange(workload: Workload, seed: u64) {
        let mut scribes: Vec<Scribe> = (0..4)
            .map(|i| Scribe::new(100 + i, workload, None))
            .collect();
        let doc = Doc::new();
        let text = doc.get_or_insert_text(TEXT_NAME);
        let mut rng = seed | 1;
        let mut written = Vec::new();
        for n in 0..200 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let who = (rng % 4) as usize;
            let word = format!("<{who}:{n:03}>");
            let update = scribes[who].insert(&word).to_vec();
            for (i, s) in scribes.iter_mut().enumerate() {
                if i != who {
                    s.learn(&update);
                }
            }
            let mut txn = doc.transact_mut();
            txn.apply_update(Update::decode_v1(&update).expect("decodes"))
                .expect("applies");
            assert!(
                txn.store().pending_update().is_none(),
                "seed {seed}: pending after {n}"
            );
            written.push(word);
        }
        let s = text.get_string(&doc.transact());
        assert_eq!(
            s.len(),
            written.iter().map(String::len).sum::<usize>(),
            "seed {seed}"
        );
        if workload == Workload::Prepend {
            // In order of arrival, each went before all the others.
            assert!(
                s.starts_with(written.last().expect("written").as_str()),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn prepends_apply_and_go_first() {
        for seed in [1, 7, 42] {
            exchange(Workload::Prepend, seed);
        }
    }

    #[test]
    fn random_inserts_apply_and_keep_every_word() {
        for seed in [1, 7, 42, 1234] {
            exchange(Workload::Random, seed);
        }
    }

    #[test]
    fn learning_never_panics_on_garbage() {
        let mut s = Scribe::new(1, Workload::Random, None);
        for len in 0..8 {
            for seed in 0..500u32 {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| (seed.wrapping_mul(97) >> (i % 5)) as u8)
                    .collect();
                s.learn(&bytes);
            }
        }
    }
}
