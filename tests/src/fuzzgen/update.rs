//! Raw Yjs v1 updates, built struct by struct: mostly well-formed, with
//! hostile values (edge clocks, ids pointing anywhere, odd parent info,
//! every content kind and raw content bytes), and their encoding.

use proptest::prelude::*;
use yrs::encoding::write::Write;
use yrs::Any;

use super::values::{any_value, client, clock, deep_any, json_text, DeepAny};
use super::{string, var};

#[derive(Debug, Clone)]
pub enum RawParent {
    Named(String),
    Id(u64, u32),
    /// A parent-info value other than 0 and 1.
    Odd(u32),
}

#[derive(Debug, Clone)]
pub enum RawContent {
    Deleted(u32),
    Json(Vec<String>),
    Binary(Vec<u8>),
    Str(String),
    Embed(String),
    Format(String, String),
    Type(u8, String),
    Any(Vec<Any>),
    Deep(DeepAny),
    Doc(String, Any),
    /// Any content kind (0..16) followed by raw bytes.
    Raw(u8, Vec<u8>),
}

#[derive(Debug, Clone)]
pub enum RawStruct {
    Gc(u32),
    Skip(u32),
    Item {
        origin: Option<(u64, u32)>,
        right: Option<(u64, u32)>,
        parent: RawParent,
        sub: Option<String>,
        content: RawContent,
    },
}

/// A Yjs v1 update as a list of structs per client and a delete set,
/// valid or not.
#[derive(Debug, Clone)]
pub struct RawUpdate {
    pub clients: Vec<(u64, u32, Vec<RawStruct>)>,
    pub deletes: Vec<(u64, Vec<(u32, u32)>)>,
}

impl RawUpdate {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        var(&mut out, self.clients.len() as u64);
        for (client, clock, structs) in &self.clients {
            var(&mut out, structs.len() as u64);
            var(&mut out, *client);
            var(&mut out, u64::from(*clock));
            for s in structs {
                s.encode(&mut out);
            }
        }
        var(&mut out, self.deletes.len() as u64);
        for (client, ranges) in &self.deletes {
            var(&mut out, *client);
            var(&mut out, ranges.len() as u64);
            for (clock, len) in ranges {
                var(&mut out, u64::from(*clock));
                var(&mut out, u64::from(*len));
            }
        }
        out
    }
}

impl RawStruct {
    /// The struct as Yjs v1 writes it: a GC or skip (tag and length), or an
    /// item: info byte, origins or parent, then the content.
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RawStruct::Gc(len) => {
                out.push(0);
                var(out, u64::from(*len));
            }
            RawStruct::Skip(len) => {
                out.push(10);
                var(out, u64::from(*len));
            }
            RawStruct::Item {
                origin,
                right,
                parent,
                sub,
                content,
            } => {
                let mut info = content.kind();
                if origin.is_some() {
                    info |= 0x80;
                }
                if right.is_some() {
                    info |= 0x40;
                }
                if sub.is_some() {
                    info |= 0x20;
                }
                out.push(info);
                for (c, k) in origin.iter().chain(right.iter()) {
                    var(out, *c);
                    var(out, u64::from(*k));
                }
                // The parent is written only for an item with neither origin.
                if origin.is_none() && right.is_none() {
                    parent.encode(out);
                    if let Some(sub) = sub {
                        string(out, sub);
                    }
                }
                content.encode(out);
            }
        }
    }
}

impl RawParent {
    /// Parent info: 1 and a root name, 0 and an id, or any other value bare.
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RawParent::Named(name) => {
                var(out, 1);
                string(out, name);
            }
            RawParent::Id(c, k) => {
                var(out, 0);
                var(out, *c);
                var(out, u64::from(*k));
            }
            RawParent::Odd(v) => var(out, u64::from(*v)),
        }
    }
}

impl RawContent {
    /// The content kind in an item's info byte (its low 5 bits).
    fn kind(&self) -> u8 {
        match self {
            RawContent::Deleted(_) => 1,
            RawContent::Json(_) => 2,
            RawContent::Binary(_) => 3,
            RawContent::Str(_) => 4,
            RawContent::Embed(_) => 5,
            RawContent::Format(..) => 6,
            RawContent::Type(..) => 7,
            RawContent::Any(_) | RawContent::Deep(_) => 8,
            RawContent::Doc(..) => 9,
            RawContent::Raw(k, _) => k & 0x1f,
        }
    }

    /// The content's bytes after the item header.
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RawContent::Deleted(len) => var(out, u64::from(*len)),
            RawContent::Json(items) => {
                var(out, items.len() as u64);
                for i in items {
                    string(out, i);
                }
            }
            RawContent::Binary(b) => out.write_buf(b),
            RawContent::Str(s) | RawContent::Embed(s) => string(out, s),
            RawContent::Format(k, v) => {
                string(out, k);
                string(out, v);
            }
            RawContent::Type(t, name) => {
                out.push(*t);
                if *t == 3 {
                    string(out, name);
                }
            }
            RawContent::Any(values) => {
                var(out, values.len() as u64);
                for v in values {
                    v.encode(out);
                }
            }
            RawContent::Deep(deep) => {
                var(out, 1);
                deep.encode(out);
            }
            RawContent::Doc(guid, opts) => {
                string(out, guid);
                opts.encode(out);
            }
            RawContent::Raw(_, bytes) => out.extend_from_slice(bytes),
        }
    }
}

fn id() -> impl Strategy<Value = (u64, u32)> {
    (client(), clock())
}

fn raw_content() -> impl Strategy<Value = RawContent> {
    prop_oneof![
        1 => clock().prop_map(RawContent::Deleted),
        1 => prop::collection::vec(json_text(), 0..3).prop_map(RawContent::Json),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(RawContent::Binary),
        3 => "\\PC{0,8}".prop_map(RawContent::Str),
        1 => json_text().prop_map(RawContent::Embed),
        1 => ("[a-z]{1,4}", json_text()).prop_map(|(k, v)| RawContent::Format(k, v)),
        1 => (prop_oneof![0u8..10, Just(15u8), any::<u8>()], "[a-z]{0,4}")
            .prop_map(|(t, n)| RawContent::Type(t, n)),
        2 => prop::collection::vec(any_value(4), 0..4).prop_map(RawContent::Any),
        2 => deep_any().prop_map(RawContent::Deep),
        1 => ("[a-z0-9-]{0,8}", any_value(2)).prop_map(|(g, o)| RawContent::Doc(g, o)),
        1 => (0u8..32, prop::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(k, b)| RawContent::Raw(k, b)),
    ]
}

fn raw_struct() -> impl Strategy<Value = RawStruct> {
    let parent = prop_oneof![
        3 => prop_oneof![Just("t".to_owned()), Just("m".to_owned()), "[a-z]{0,3}".prop_map(|s| s)]
            .prop_map(RawParent::Named),
        2 => id().prop_map(|(c, k)| RawParent::Id(c, k)),
        1 => (2u32..1000).prop_map(RawParent::Odd),
    ];
    prop_oneof![
        1 => clock().prop_map(RawStruct::Gc),
        1 => clock().prop_map(RawStruct::Skip),
        8 => (
            prop::option::weighted(0.4, id()),
            prop::option::weighted(0.3, id()),
            parent,
            prop::option::weighted(0.2, "[a-z]{0,3}"),
            raw_content(),
        )
            .prop_map(|(origin, right, parent, sub, content)| RawStruct::Item {
                origin,
                right,
                parent,
                sub,
                content,
            }),
    ]
}

/// A structured update: mostly well-formed structs, with hostile values.
pub fn raw_update() -> impl Strategy<Value = RawUpdate> {
    (
        prop::collection::vec(
            (client(), clock(), prop::collection::vec(raw_struct(), 0..5)),
            0..3,
        ),
        prop::collection::vec(
            (client(), prop::collection::vec((clock(), clock()), 0..3)),
            0..2,
        ),
    )
        .prop_map(|(clients, deletes)| RawUpdate { clients, deletes })
}
