//! How deep an update would nest shared types (a map in a map in …), known
//! before it meets the document.
//!
//! yrs deletes and garbage-collects a nested type by recursion into its
//! children: deleting the top of a chain of 20,000 maps overflowed a worker
//! thread's stack and aborted the process. Depth only grows through an item
//! that names its parent by id, and only an update holding one (or any
//! update while the document holds pending structs) is checked, before it
//! is applied: each item's level comes from the update's own items (with
//! the document's pending ones), else from the document, walked up one type
//! at a time. So no apply ever recurses deeper than twice the bound.
//!
//! Architecture Invariant: no level is computed by recursion; a cycle of
//! references (which yrs could never integrate) counts from 0.
//!
//! What it does not do: bound documents stored before the check existed;
//! bound the time of a lookup in the document. yrs offers no public way
//! from an item to its parent but `StickyIndex::get_offset`, which walks
//! the item's left siblings, so an update that hangs new types under many
//! items of a long branch costs one walk per item (only those are looked
//! up: an item's siblings and root items are not).

use std::collections::HashMap;

use roost_protocol::yjs::{ItemLink, ItemParent};
use yrs::{Assoc, BranchID, ClientID, IndexScope, ReadTxn, StickyIndex, ID};

/// The deepest level an item of `links` reaches by naming its parent by id
/// (1: a root type's own items; 0: no such item), or `Err(level)` as soon
/// as one passes `max`. Items whose references
/// are in neither `links` nor the document (they will wait as pending
/// structs) count from 0; they are checked again with the update that
/// brings what they wait for.
pub(super) fn deepest<T: ReadTxn>(txn: &T, links: &[ItemLink], max: u32) -> Result<u32, u32> {
    deepest_counting(txn, links, max).0
}

/// [`deepest`], and how many of the document's items it looked up (each
/// lookup walks the item's left siblings in yrs, so only the items a
/// deeper level hangs from are looked up).
fn deepest_counting<T: ReadTxn>(
    txn: &T,
    links: &[ItemLink],
    max: u32,
) -> (Result<u32, u32>, usize) {
    let mut by_client: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, link) in links.iter().enumerate() {
        by_client.entry(link.client).or_default().push(i);
    }
    for items in by_client.values_mut() {
        items.sort_unstable_by_key(|&i| links[i].clock);
    }
    let find = |client: u64, clock: u32| -> Option<usize> {
        let items = by_client.get(&client)?;
        let at = items.partition_point(|&i| links[i].clock <= clock);
        let i = *items.get(at.checked_sub(1)?)?;
        (clock < links[i].clock.saturating_add(links[i].len)).then_some(i)
    };
    let mut levels: Vec<Option<u32>> = vec![None; links.len()];
    let mut on_stack = vec![false; links.len()];
    let mut in_doc: HashMap<ID, u32> = HashMap::new();
    let mut deepest = 0;
    let mut lookups = 0;
    // Only an item that names its parent by id is deeper than what it
    // hangs from: an item hung by a root is at level 1, and a sibling of a
    // document item is at that item's level, which the document already
    // holds. So levels are worked out from those items only, and only what
    // they hang from is looked up.
    for start in 0..links.len() {
        if levels[start].is_some() || !matches!(links[start].parent, ItemParent::Item(..)) {
            continue;
        }
        let mut stack = vec![start];
        on_stack[start] = true;
        while let Some(&top) = stack.last() {
            // The item it hangs by, and the levels it adds below it.
            let (target, below) = match links[top].parent {
                ItemParent::Root => (None, 1),
                ItemParent::Item(c, k) => (Some((c, k)), 1),
                ItemParent::SiblingOf(c, k) => (Some((c, k)), 0),
            };
            let level = match target.map(|(c, k)| (c, k, find(c, k))) {
                None => Some(below),
                Some((c, k, None)) => {
                    let id = ID::new(ClientID::new(c), k);
                    lookups += 1;
                    Some(doc_level(txn, &id, max, &mut in_doc).saturating_add(below))
                }
                Some((_, _, Some(j))) => match levels[j] {
                    Some(l) => Some(l.saturating_add(below)),
                    // A cycle: never integrated, counts from 0.
                    None if on_stack[j] => Some(below),
                    None => {
                        on_stack[j] = true;
                        stack.push(j);
                        None
                    }
                },
            };
            if let Some(level) = level {
                if level > max {
                    return (Err(level), lookups);
                }
                deepest = deepest.max(level);
                levels[top] = Some(level);
                on_stack[top] = false;
                stack.pop();
            }
        }
    }
    (Ok(deepest), lookups)
}

/// The level of the document's item `id` (0 if it has none: missing, or
/// garbage-collected), walking up at most `max` types, memoized in `known`.
fn doc_level<T: ReadTxn>(txn: &T, id: &ID, max: u32, known: &mut HashMap<ID, u32>) -> u32 {
    let mut path = Vec::new();
    let mut at = *id;
    let base;
    loop {
        if let Some(&l) = known.get(&at) {
            base = l;
            break;
        }
        if path.len() as u32 > max {
            base = max;
            break;
        }
        let offset = StickyIndex::new(IndexScope::Relative(at), Assoc::After).get_offset(txn);
        path.push(at);
        match offset.map(|o| o.branch.id()) {
            Some(BranchID::Nested(parent)) => at = parent,
            Some(BranchID::Root(_)) => {
                base = 1;
                // The root's own item: its level is 1, nothing above.
                let last = path.pop().expect("invariant: just pushed");
                known.insert(last, 1);
                break;
            }
            None => {
                path.pop();
                base = 0;
                break;
            }
        }
    }
    let mut level = base;
    for item in path.into_iter().rev() {
        level = level.saturating_add(1);
        known.insert(item, level);
    }
    known.get(id).copied().unwrap_or(level)
}

#[cfg(test)]
mod tests {
    use roost_protocol::yjs::item_links;
    use yrs::updates::decoder::Decode;
    use yrs::{Array, Doc, Map, MapPrelim, MapRef, Transact, Update};

    use super::*;

    /// Maps `depth` deep under the root map `m`; returns the deepest.
    fn chain(doc: &Doc, depth: u32) -> MapRef {
        let mut map = doc.get_or_insert_map("m");
        let mut txn = doc.transact_mut();
        for _ in 0..depth {
            map = map.insert(&mut txn, "a", MapPrelim::default());
        }
        map
    }

    /// A client (id 2) holding all of `server`, and its state vector then.
    fn copy_of(server: &Doc) -> (Doc, yrs::StateVector) {
        let state = server
            .transact()
            .encode_state_as_update_v1(&Default::default());
        let client = Doc::with_client_id(2);
        client
            .transact_mut()
            .apply_update(Update::decode_v1(&state).expect("decodes"))
            .expect("applies");
        let sv = client.transact().state_vector();
        (client, sv)
    }

    #[test]
    fn levels_add_up_across_the_document_and_the_update() {
        let server = Doc::with_client_id(1);
        chain(&server, 3);
        let (client, sv) = copy_of(&server);
        // The client's deepest map (level 3) gets a map of its own.
        let deepest_map = {
            let mut map = client.get_or_insert_map("m");
            let txn = client.transact();
            for _ in 0..3 {
                map = match map.get(&txn, "a") {
                    Some(yrs::Out::YMap(m)) => m,
                    other => panic!("not a map: {other:?}"),
                };
            }
            map
        };
        deepest_map.insert(&mut client.transact_mut(), "b", MapPrelim::default());
        let update = client.transact().encode_state_as_update_v1(&sv);
        let links = item_links(&update).expect("reads");
        assert_eq!(links.len(), 1);
        let txn = server.transact();
        assert_eq!(deepest(&txn, &links, 4), Ok(4));
        assert_eq!(deepest(&txn, &links, 3), Err(4));
        // The whole document in one update counts the same.
        let whole = client
            .transact()
            .encode_state_as_update_v1(&Default::default());
        let empty = Doc::new();
        let links = item_links(&whole).expect("reads");
        assert_eq!(deepest(&empty.transact(), &links, 4), Ok(4));
    }

    #[test]
    fn only_what_a_deeper_item_hangs_from_is_looked_up() {
        let server = Doc::with_client_id(1);
        let list = server.get_or_insert_array("list");
        server.get_or_insert_map("m");
        for i in 0..100 {
            // At the front: each its own item, none merged.
            list.insert(&mut server.transact_mut(), 0, i);
        }
        let (client, sv) = copy_of(&server);
        {
            let list = client.get_or_insert_array("list");
            let m = client.get_or_insert_map("m");
            let mut txn = client.transact_mut();
            // 50 values between the document's: siblings of its items.
            for i in 0..50 {
                list.insert(&mut txn, i * 2 + 1, 1000 + i);
            }
            // A map in a map: the inner one names the outer by id.
            let outer = m.insert(&mut txn, "outer", MapPrelim::default());
            outer.insert(&mut txn, "inner", MapPrelim::default());
        }
        let update = client.transact().encode_state_as_update_v1(&sv);
        let links = item_links(&update).expect("reads");
        assert!(links.len() >= 52, "{} links", links.len());
        let txn = server.transact();
        // Without the rule, each of the 50 values was looked up.
        assert_eq!(deepest_counting(&txn, &links, 8), (Ok(2), 0));
    }

    #[test]
    fn a_cycle_of_references_ends() {
        let links = [
            ItemLink {
                client: 5,
                clock: 0,
                len: 1,
                parent: ItemParent::Item(5, 1),
            },
            ItemLink {
                client: 5,
                clock: 1,
                len: 1,
                parent: ItemParent::SiblingOf(5, 0),
            },
        ];
        let doc = Doc::new();
        assert!(deepest(&doc.transact(), &links, 8).is_ok_and(|l| l <= 2));
    }
}
