//! Honest updates: edits a real client makes, applied to a real yrs
//! document and encoded by yrs.

use std::sync::Arc;

use proptest::prelude::*;
use yrs::{
    Any, Array, ArrayPrelim, ClientID, Doc, GetString, Map, MapPrelim, OffsetKind, Options,
    ReadTxn, StateVector, Text, TextPrelim, Transact, Xml, XmlElementPrelim, XmlFragment,
};

use super::values::any_value;

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
