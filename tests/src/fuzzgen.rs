//! Structured generators for fuzzing the decoders of client bytes on stable
//! Rust (proptest): Yjs v1 updates built struct by struct (deep `Any`
//! and JSON nesting, edge-case clocks, every content kind, ids that point
//! anywhere), honest updates from real yrs documents, y-websocket frames,
//! awareness updates, JSON envelopes and commit-log segments — plus a
//! byte-level mutator that turns each into many near misses.
//!
//! Deep values are encoded here with loops: the generator must not be the
//! thing that overflows its stack.
//!
//! Case counts: `FUZZ_CASES` (proptest cases per target) and
//! `FUZZ_MUTATIONS` (mutants per case) raise the in-suite defaults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::Config;
use yrs::encoding::write::Write;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayPrelim, ClientID, Doc, GetString, Map, MapPrelim, Number, OffsetKind, Options,
    ReadTxn, StateVector, Text, TextPrelim, Transact, Xml, XmlElementPrelim, XmlFragment,
};

/// A proptest configuration with `FUZZ_CASES` cases (or `default`), no
/// regression files (failures print their input) and a short shrink.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    }
}

/// Mutants derived from each generated input (`FUZZ_MUTATIONS`, or `default`).
pub fn mutations(default: usize) -> usize {
    std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts inputs fed to a target; prints the count when dropped.
pub struct Tally {
    pub name: &'static str,
    pub inputs: AtomicU64,
}

impl Tally {
    pub const fn new(name: &'static str) -> Tally {
        Tally {
            name,
            inputs: AtomicU64::new(0),
        }
    }

    pub fn add(&self, n: u64) {
        self.inputs.fetch_add(n, Ordering::Relaxed);
    }

    pub fn report(&self) -> u64 {
        let n = self.inputs.load(Ordering::Relaxed);
        eprintln!("fuzz target {}: {n} inputs, 0 crashes", self.name);
        n
    }
}

/// xorshift64*, for mutations (seeded by the generated case).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One byte-level near miss of `bytes`: truncated, a byte flipped or
/// replaced by an edge value, bytes inserted, removed or duplicated, or a
/// huge varint spliced in.
pub fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 => out.truncate(at),
            1 if at < out.len() => out[at] ^= 1 << rng.below(8),
            2 if at < out.len() => out[at] = [0x00, 0x7f, 0x80, 0xff, 0x75, 0x76][rng.below(6)],
            3 => out.insert(at, rng.next_u64() as u8),
            4 if at < out.len() => {
                out.remove(at);
            }
            5 => {
                let len = rng.below(16).min(out.len() - at.min(out.len()));
                let piece = out[at..at + len].to_vec();
                let repeat = 1 + rng.below(8);
                for _ in 0..repeat {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            6 => {
                let huge: &[u8] = match rng.below(3) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    1 => &[0x80, 0x80, 0x80, 0x80, 0x08],
                    _ => &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                };
                out.splice(at..at, huge.iter().copied());
            }
            _ => {
                // Nest: splice `0x75 0x01` (a one-element Any array) many times.
                let n = 1 + rng.below(200);
                for _ in 0..n {
                    out.splice(at..at, [0x75, 0x01]);
                }
            }
        }
    }
    out
}

fn var(out: &mut Vec<u8>, v: u64) {
    out.write_var(v);
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.write_string(s);
}

/// A shallow `Any` value (at most `depth` levels).
pub fn any_value(depth: u32) -> BoxedStrategy<Any> {
    let leaf = prop_oneof![
        Just(Any::Null),
        Just(Any::Undefined),
        any::<bool>().prop_map(Any::Bool),
        any::<i64>().prop_map(|i| Any::Number(Number::Int(i))),
        (-1000i64..1000).prop_map(|i| Any::Number(Number::Int(i))),
        any::<f64>().prop_map(|f| Any::Number(Number::Float(f))),
        ".{0,12}".prop_map(|s| Any::String(Arc::from(s.as_str()))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Any::Buffer(Arc::from(b))),
    ];
    leaf.prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| Any::Array(Arc::from(v))),
            prop::collection::hash_map("[a-z]{0,4}", inner, 0..4)
                .prop_map(|m| Any::Map(Arc::new(m))),
        ]
    })
    .boxed()
}

/// A chain of `depth` nested arrays or maps around a leaf, as lib0 `Any`
/// bytes, encoded with a loop.
#[derive(Debug, Clone)]
pub struct DeepAny {
    /// Container kinds from the outside in (true = map).
    pub maps: Vec<bool>,
}

impl DeepAny {
    pub fn encode(&self, out: &mut Vec<u8>) {
        for &map in &self.maps {
            if map {
                out.extend_from_slice(&[118, 1]);
                string(out, "k");
            } else {
                out.extend_from_slice(&[117, 1]);
            }
        }
        out.extend_from_slice(&[119, 1, b'x']);
    }
}

pub fn deep_any() -> impl Strategy<Value = DeepAny> {
    prop_oneof![
        prop::collection::vec(any::<bool>(), 0..70),
        prop::collection::vec(any::<bool>(), 60..400),
        (2000usize..6000).prop_map(|n| vec![false; n]),
    ]
    .prop_map(|maps| DeepAny { maps })
}

/// JSON text for embeds and formats: shallow values, or brackets nested deep.
pub fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any_value(3).prop_map(|a| {
            let mut s = String::new();
            a.to_json(&mut s);
            s
        }),
        (0usize..300, any::<bool>()).prop_map(|(n, obj)| {
            if obj {
                format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
            } else {
                format!("{}1{}", "[".repeat(n), "]".repeat(n))
            }
        }),
        ".{0,16}",
    ]
}

/// A clock: usually small, sometimes at the edges of `u32` and `i32`.
pub fn clock() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..20,
        1 => Just(i32::MAX as u32),
        1 => Just(u32::MAX),
        1 => (i32::MAX as u32 - 8)..=(i32::MAX as u32 + 8),
        1 => any::<u32>(),
    ]
}

/// A client id for raw bytes: usually small, sometimes past 53 bits.
pub fn client() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..4, 1 => 0u64..(1 << 53), 1 => any::<u64>()]
}

/// A client id yrs itself can hold (53 bits; yrs asserts it).
pub fn yrs_client() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..4, 1 => 0u64..(1 << 53)]
}

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
                let kind = match content {
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
                };
                let mut info = kind;
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
                if origin.is_none() && right.is_none() {
                    match parent {
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
                    if let Some(sub) = sub {
                        string(out, sub);
                    }
                }
                match content {
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

/// An edit an honest client makes.
#[derive(Debug, Clone)]
pub enum Op {
    TextInsert(u32, String),
    TextDelete(u32, u32),
    TextFormat(u32, u32, String, Any),
    TextEmbed(u32, Any),
    MapSet(String, Any),
    MapDelete(String),
    ArrayInsert(u32, Vec<Any>),
    ArrayDelete(u32, u32),
    NestedMap(String, String, Any),
    NestedArrayText(String),
    Xml(String, String),
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..40, "[a-zA-Z0-9 éüß]{1,6}").prop_map(|(i, s)| Op::TextInsert(i, s)),
        2 => (0u32..40, 1u32..5).prop_map(|(i, n)| Op::TextDelete(i, n)),
        1 => (0u32..40, 1u32..5, "[a-z]{1,3}", any_value(2))
            .prop_map(|(i, n, k, v)| Op::TextFormat(i, n, k, v)),
        1 => (0u32..40, any_value(2)).prop_map(|(i, v)| Op::TextEmbed(i, v)),
        2 => ("[a-z]{1,3}", any_value(5)).prop_map(|(k, v)| Op::MapSet(k, v)),
        1 => "[a-z]{1,3}".prop_map(Op::MapDelete),
        2 => (0u32..20, prop::collection::vec(any_value(4), 1..4))
            .prop_map(|(i, v)| Op::ArrayInsert(i, v)),
        1 => (0u32..20, 1u32..4).prop_map(|(i, n)| Op::ArrayDelete(i, n)),
        1 => ("[a-z]{1,3}", "[a-z]{1,3}", any_value(3))
            .prop_map(|(a, b, v)| Op::NestedMap(a, b, v)),
        1 => "[a-zA-Z0-9 éüß]{1,6}".prop_map(Op::NestedArrayText),
        1 => ("[a-z]{1,6}", "[a-z]{0,6}").prop_map(|(t, s)| Op::Xml(t, s)),
    ]
}

/// Applies `op` to `doc` as a local edit (indexes are clamped).
pub fn apply_op(doc: &Doc, op: &Op) {
    let text = doc.get_or_insert_text("t");
    let map = doc.get_or_insert_map("m");
    let array = doc.get_or_insert_array("a");
    let xml = doc.get_or_insert_xml_fragment("x");
    let mut txn = doc.transact_mut();
    let tlen = text.len(&txn);
    let alen = array.len(&txn);
    match op {
        Op::TextInsert(i, s) => text.insert(&mut txn, (*i).min(tlen), s),
        Op::TextDelete(i, n) => {
            let i = (*i).min(tlen);
            text.remove_range(&mut txn, i, (*n).min(tlen - i));
        }
        Op::TextFormat(i, n, k, v) => {
            let i = (*i).min(tlen);
            let attrs = std::collections::HashMap::from([(Arc::from(k.as_str()), v.clone())]);
            text.format(&mut txn, i, (*n).min(tlen - i), attrs);
        }
        Op::TextEmbed(i, v) => {
            text.insert_embed(&mut txn, (*i).min(tlen), v.clone());
        }
        Op::MapSet(k, v) => {
            map.insert(&mut txn, k.as_str(), v.clone());
        }
        Op::MapDelete(k) => {
            map.remove(&mut txn, k);
        }
        Op::ArrayInsert(i, v) => {
            array.insert_range(&mut txn, (*i).min(alen), v.clone());
        }
        Op::ArrayDelete(i, n) => {
            let i = (*i).min(alen);
            array.remove_range(&mut txn, i, (*n).min(alen - i));
        }
        Op::NestedMap(a, b, v) => {
            let inner = map.insert(&mut txn, a.as_str(), MapPrelim::default());
            inner.insert(&mut txn, b.as_str(), v.clone());
        }
        Op::NestedArrayText(s) => {
            let inner = array.push_back(&mut txn, ArrayPrelim::default());
            inner.push_back(&mut txn, TextPrelim::new(s.as_str()));
        }
        Op::Xml(tag, s) => {
            let el = xml.push_back(&mut txn, XmlElementPrelim::empty(tag.as_str()));
            el.insert_attribute(&mut txn, "k", s.as_str());
        }
    }
}

/// Honest updates: a document edited by `ops`, as one incremental update
/// per op, and its whole state.
pub fn honest_updates(ops: &[Op], client: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
    // UTF-16 offsets, and text of one UTF-16 unit per character: the
    // clamped indexes below always fall between characters.
    let mut options = Options::with_client_id(ClientID::new(client.max(1)));
    options.offset_kind = OffsetKind::Utf16;
    let doc = Doc::with_options(options);
    let mut updates = Vec::new();
    for op in ops {
        let before = doc.transact().state_vector();
        apply_op(&doc, op);
        updates.push(doc.transact().encode_state_as_update_v1(&before));
    }
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    (updates, state)
}

/// A text's string (for tests that compare documents).
pub fn text_of(doc: &Doc, name: &str) -> String {
    let t = doc.get_or_insert_text(name);
    t.get_string(&doc.transact())
}

/// One y-websocket message, encoded by `frame`.
#[derive(Debug, Clone)]
pub enum RawMessage {
    Step1(Vec<u8>),
    Step2(Vec<u8>),
    Update(Vec<u8>),
    Awareness(Vec<u8>),
    Auth(Option<String>),
    Query,
    /// Roost's heartbeat ping: `[102]`, no payload.
    Ping,
    /// Any other type, with a `varUint8Array` payload.
    Other(u8, Vec<u8>),
}

pub fn frame(messages: &[RawMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        match m {
            RawMessage::Step1(b) => {
                out.extend_from_slice(&[0, 0]);
                out.write_buf(b);
            }
            RawMessage::Step2(b) => {
                out.extend_from_slice(&[0, 1]);
                out.write_buf(b);
            }
            RawMessage::Update(b) => {
                out.extend_from_slice(&[0, 2]);
                out.write_buf(b);
            }
            RawMessage::Awareness(b) => {
                out.push(1);
                out.write_buf(b);
            }
            RawMessage::Auth(reason) => {
                out.push(2);
                match reason {
                    Some(r) => {
                        out.push(0);
                        string(&mut out, r);
                    }
                    None => out.push(1),
                }
            }
            RawMessage::Query => out.push(3),
            RawMessage::Ping => out.push(roost_protocol::yjs::MSG_PING),
            RawMessage::Other(tag, b) => {
                var(&mut out, u64::from(*tag));
                out.write_buf(b);
            }
        }
    }
    out
}

/// An awareness update as yrs encodes it.
pub fn awareness_update() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((yrs_client(), clock(), json_text()), 0..4).prop_map(|entries| {
        let clients = entries
            .into_iter()
            .map(|(c, clock, json)| {
                (
                    ClientID::new(c),
                    AwarenessUpdateEntry {
                        clock,
                        json: Arc::from(json.as_str()),
                    },
                )
            })
            .collect();
        AwarenessUpdate { clients }.encode_v1()
    })
}

/// A state vector as yrs encodes it.
pub fn state_vector() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((yrs_client(), clock()), 0..4).prop_map(|entries| {
        let mut sv = StateVector::default();
        for (c, k) in entries {
            sv.set_max(ClientID::new(c), k);
        }
        sv.encode_v1()
    })
}

/// An update for a frame: structured (often hostile) or honest.
pub fn any_update() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => raw_update().prop_map(|u| u.encode()),
        1 => (prop::collection::vec(op(), 1..4), yrs_client()).prop_map(|(ops, c)| honest_updates(&ops, c).1),
    ]
}

pub fn raw_message() -> impl Strategy<Value = RawMessage> {
    prop_oneof![
        2 => state_vector().prop_map(RawMessage::Step1),
        2 => any_update().prop_map(RawMessage::Step2),
        4 => any_update().prop_map(RawMessage::Update),
        2 => awareness_update().prop_map(RawMessage::Awareness),
        1 => prop::option::of(".{0,8}").prop_map(RawMessage::Auth),
        1 => Just(RawMessage::Query),
        1 => Just(RawMessage::Ping),
        // Any type but the ping's, which has no payload.
        1 => (4u8..=254, prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(t, b)| {
            let t = if t >= roost_protocol::yjs::MSG_PING { t + 1 } else { t };
            RawMessage::Other(t, b)
        }),
    ]
}

pub fn raw_frame() -> impl Strategy<Value = Vec<RawMessage>> {
    prop::collection::vec(raw_message(), 1..4)
}

/// JSON envelope text: calls and other frames, with args nested shallow or deep.
pub fn envelope_text() -> impl Strategy<Value = String> {
    let args = prop_oneof![
        any_value(3).prop_map(|a| {
            let mut s = String::new();
            a.to_json(&mut s);
            s
        }),
        json_text(),
    ];
    (
        prop_oneof![Just("call"), Just("auth"), Just("other"), Just("")],
        any::<u64>(),
        "[a-zA-Z_]{0,8}",
        args,
    )
        .prop_map(|(ty, id, method, args)| {
            format!(r#"{{"type":"{ty}","id":{id},"method":"{method}","token":"{method}","args":{args}}}"#)
        })
}
