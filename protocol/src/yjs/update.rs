//! Yjs v1 updates, state vectors and awareness updates from clients,
//! checked before yrs decodes them.
//!
//! `check_update` follows yrs 0.28's v1 decoder byte for byte, so what it
//! accepts is exactly what yrs will read: where yrs and Yjs disagree or a
//! feature is unused by Yjs clients (legacy JSON content, which yrs reads
//! one string too far; weak links), it refuses. It is stricter than yrs in a
//! few places no honest encoder reaches: a client's structs in two runs,
//! varints longer than their type, clocks past 2^31 − 1 (yrs adds
//! `clock + len` in `u32` and `i32`), unknown parent-info values, and bytes
//! after the delete set.
//!
//! Invariant: nesting (`Any` values, JSON texts) is walked with an explicit
//! stack and bounded by `UpdateLimits::max_nesting`; nothing recurses.
//!
//! `item_links` lists where each item of an accepted update hangs; the
//! server bounds how deep shared types nest from it and the document.
//!
//! What it does not do: build a document, or judge whether an update can be
//! applied to one (that needs the document; see the server's `ydoc` class).

use super::reader::Reader;
use super::{YjsError, DEFAULT_MAX_NESTING, MAX_CLOCK};

/// Bounds for `check_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateLimits {
    /// Deepest nesting of arrays and objects in an `Any` value or JSON text.
    pub max_nesting: u32,
}

impl Default for UpdateLimits {
    fn default() -> Self {
        UpdateLimits {
            max_nesting: DEFAULT_MAX_NESTING,
        }
    }
}

/// What `check_update` learned about an update it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateShape {
    /// Structs (items, GC and skip ranges) in the update.
    pub structs: u64,
    /// Whether some item names its parent by id (a nested type). Only such
    /// an item can fail to apply (yrs: its parent must be a type or
    /// deleted); an update without one always applies.
    pub parent_by_id: bool,
    /// A client whose structs include a skip range (a gap in its clocks),
    /// if any.
    pub skip_of: Option<u64>,
    /// Each client's run of structs: (client, first clock, clock after the
    /// last), in the update's order.
    pub runs: Vec<(u64, u32, u32)>,
}

/// Where an item of an update hangs, as yrs integrates it: an item with a
/// left origin has its origin's parent, else one with a right origin has
/// that one's, else it names its parent (a root type, or an item by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemParent {
    /// A root type: the item is one level deep.
    Root,
    /// The type held by this item (client, clock): one level below it.
    Item(u64, u32),
    /// The same parent as this item (client, clock): the same level.
    SiblingOf(u64, u32),
}

/// One item of an update (`item_links`): its id, length, and parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemLink {
    /// The item's client.
    pub client: u64,
    /// Its first clock.
    pub clock: u32,
    /// Its length in clock units: it covers `clock..clock + len`.
    pub len: u32,
    /// Where it hangs.
    pub parent: ItemParent,
}

/// Every item of an update that `check_update` accepted, in the update's
/// order (GC and skip ranges left out): what the server needs to bound how
/// deep shared types nest, which needs the document too.
pub fn item_links(bytes: &[u8]) -> Result<Vec<ItemLink>, YjsError> {
    let limits = UpdateLimits::default();
    let mut shape = UpdateShape::default();
    let mut r = Reader::new(bytes);
    let mut links = Vec::new();
    let clients = r.count("an update", 3)?;
    for _ in 0..clients {
        let structs = r.count("a client's structs", 2)?;
        let client = r.client()?;
        let mut clock = u64::from(r.var_u32("a clock")?);
        for _ in 0..structs {
            let (len, parent) = read_struct(&mut r, &limits, &mut shape)?;
            if clock + len > MAX_CLOCK {
                return Err(YjsError::ClockTooLarge);
            }
            if let Some(parent) = parent {
                // Both fit a u32: checked against MAX_CLOCK above.
                links.push(ItemLink {
                    client,
                    clock: clock as u32,
                    len: len as u32,
                    parent,
                });
            }
            clock += len;
        }
    }
    Ok(links)
}

/// Checks a state vector (`varUint(n)`, then `n` × client, clock).
pub fn check_state_vector(bytes: &[u8]) -> Result<(), YjsError> {
    let mut r = Reader::new(bytes);
    let n = r.count("a state vector", 2)?;
    for _ in 0..n {
        r.client()?;
        r.var_u32("a clock")?;
    }
    r.end()
}

/// Checks an awareness update (`varUint(n)`, then `n` × client, clock,
/// JSON state as a string). The JSON is relayed, never parsed here.
pub fn check_awareness(bytes: &[u8]) -> Result<(), YjsError> {
    let mut r = Reader::new(bytes);
    let n = r.count("an awareness update", 3)?;
    for _ in 0..n {
        r.client()?;
        r.var_u32("a clock")?;
        r.string("an awareness state")?;
    }
    r.end()
}

/// Walks a Yjs v1 update the way yrs's decoder will, bounding nesting,
/// counts (never more than the bytes left can hold) and clocks. `Ok` means
/// yrs's `Update::decode_v1` reads exactly these bytes without recursing
/// deeper than `limits.max_nesting` levels.
pub fn check_update(bytes: &[u8], limits: &UpdateLimits) -> Result<UpdateShape, YjsError> {
    let mut r = Reader::new(bytes);
    let mut shape = UpdateShape::default();
    let clients = r.count("an update", 3)?;
    // yrs appends a client's second run to its first, out of order, and
    // its binary searches then panic: each client once.
    let mut seen = Vec::with_capacity(clients as usize);
    for _ in 0..clients {
        let structs = r.count("a client's structs", 2)?;
        let client = r.client()?;
        seen.push(client);
        let start = r.var_u32("a clock")?;
        let mut clock = u64::from(start);
        for _ in 0..structs {
            if r.peek() == Some(SKIP) {
                shape.skip_of.get_or_insert(client);
            }
            clock += read_struct(&mut r, limits, &mut shape)?.0;
            if clock > MAX_CLOCK {
                return Err(YjsError::ClockTooLarge);
            }
        }
        shape.structs += structs;
        // `clock` is at most MAX_CLOCK, which fits a u32.
        shape.runs.push((client, start, clock as u32));
    }
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(YjsError::Malformed("a client's structs in two runs"));
    }
    delete_set(&mut r)?;
    r.end()?;
    Ok(shape)
}

/// Reads the delete set: clients, each with ranges of (clock, len).
fn delete_set(r: &mut Reader<'_>) -> Result<(), YjsError> {
    let clients = r.count("a delete set", 2)?;
    for _ in 0..clients {
        r.client()?;
        let ranges = r.count("a delete set's ranges", 2)?;
        for _ in 0..ranges {
            let clock = u64::from(r.var_u32("a deleted clock")?);
            let len = u64::from(r.var_u32("a deleted length")?);
            if clock + len > MAX_CLOCK {
                return Err(YjsError::ClockTooLarge);
            }
        }
    }
    Ok(())
}

// Struct info byte (yrs `block.rs`).
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const GC: u8 = 0;
const SKIP: u8 = 10;

/// Reads one struct; returns its length in clock units and, for an item,
/// where it hangs.
fn read_struct(
    r: &mut Reader<'_>,
    limits: &UpdateLimits,
    shape: &mut UpdateShape,
) -> Result<(u64, Option<ItemParent>), YjsError> {
    let info = r.u8("a struct")?;
    if info == GC || info == SKIP {
        let len = r.var_u32("a range's length")?;
        if len == 0 {
            return Err(YjsError::Malformed("an empty range"));
        }
        return Ok((u64::from(len), None));
    }
    // yrs reads the content kind from the low four bits; Yjs from five.
    // Bit 4 is set by no encoder: refuse it rather than read it two ways.
    if info & 0b1_0000 != 0 {
        return Err(YjsError::Malformed("unknown content kind"));
    }
    let mut parent = None;
    if info & HAS_ORIGIN != 0 {
        let (client, clock) = id(r)?;
        parent = Some(ItemParent::SiblingOf(client, clock));
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        let (client, clock) = id(r)?;
        parent.get_or_insert(ItemParent::SiblingOf(client, clock));
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        match r.var_u32("a parent")? {
            1 => {
                r.string("a root type's name")?;
                parent = Some(ItemParent::Root);
            }
            0 => {
                let (client, clock) = id(r)?;
                parent = Some(ItemParent::Item(client, clock));
                shape.parent_by_id = true;
            }
            _ => return Err(YjsError::Malformed("unknown parent kind")),
        }
        if info & HAS_PARENT_SUB != 0 {
            r.string("a map key")?;
        }
    }
    Ok((content_len(r, info, limits)?, parent))
}

/// Reads an item's content (its kind is `info`'s low four bits); returns
/// its length in clock units.
fn content_len(r: &mut Reader<'_>, info: u8, limits: &UpdateLimits) -> Result<u64, YjsError> {
    Ok(match info & 0b1111 {
        // Deleted
        1 => u64::from(r.var_u32("a deleted length")?),
        // JSON: legacy (Yjs < 13); yrs reads one string more than Yjs writes.
        2 => return Err(YjsError::Malformed("legacy JSON content is not supported")),
        // Binary
        3 => {
            r.buf("binary content")?;
            1
        }
        // String: its length is in UTF-16 units.
        4 => r
            .string("a string")?
            .chars()
            .map(|c| c.len_utf16() as u64)
            .sum(),
        // Embed: JSON text.
        5 => {
            json_nesting(r.string("an embed")?, limits.max_nesting)?;
            1
        }
        // Format: key, JSON text.
        6 => {
            r.string("a format key")?;
            json_nesting(r.string("a format value")?, limits.max_nesting)?;
            1
        }
        // Type: a type ref byte; an XML element's name.
        7 => {
            match r.u8("a type")? {
                3 => {
                    r.string("an XML element's name")?;
                }
                0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
                _ => return Err(YjsError::Malformed("unknown type")),
            }
            1
        }
        // Any: a count, then that many values.
        8 => {
            let n = r.count("Any content", 1)?;
            for _ in 0..n {
                any(r, limits.max_nesting)?;
            }
            n
        }
        // Doc: guid, options (an Any value).
        9 => {
            r.string("a subdocument's guid")?;
            any(r, limits.max_nesting)?;
            1
        }
        _ => return Err(YjsError::Malformed("unknown content kind")),
    })
}

fn id(r: &mut Reader<'_>) -> Result<(u64, u32), YjsError> {
    let client = r.client()?;
    let clock = r.var_u32("an id's clock")?;
    if u64::from(clock) > MAX_CLOCK {
        return Err(YjsError::ClockTooLarge);
    }
    Ok((client, clock))
}

/// Skips one lib0 `Any` value, with an explicit stack of open arrays and
/// maps (items left, is a map) instead of recursion.
fn any(r: &mut Reader<'_>, max_nesting: u32) -> Result<(), YjsError> {
    let mut open: Vec<(u64, bool)> = Vec::new();
    loop {
        if let Some(top) = open.last_mut() {
            if top.0 == 0 {
                open.pop();
                if open.is_empty() {
                    return Ok(());
                }
                continue;
            }
            top.0 -= 1;
            if top.1 {
                r.string("a map key")?;
            }
        }
        match r.u8("an Any value")? {
            // undefined, null, false, true
            127 | 126 | 121 | 120 => {}
            // integer (signed varint)
            125 => r.var_i64("an integer")?,
            // float32
            124 => {
                r.take(4, "a float")?;
            }
            // float64, bigint
            123 | 122 => {
                r.take(8, "a number")?;
            }
            119 => {
                r.string("a string")?;
            }
            116 => {
                r.buf("a buffer")?;
            }
            tag @ (118 | 117) => {
                let map = tag == 118;
                let n = r.count("an Any container", if map { 2 } else { 1 })?;
                if open.len() as u32 >= max_nesting {
                    return Err(YjsError::TooDeep(max_nesting));
                }
                open.push((n, map));
            }
            _ => return Err(YjsError::Malformed("unknown Any type")),
        }
        if open.is_empty() {
            return Ok(());
        }
    }
}

/// Bounds the nesting of a JSON text (brackets outside strings); the text
/// itself is left to the JSON parser.
fn json_nesting(text: &str, max_nesting: u32) -> Result<(), YjsError> {
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_nesting {
                    return Err(YjsError::TooDeep(max_nesting));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut u = vec![1, 1, 1, 0, 8, 1, 1, b'n', 1];
        for _ in 0..depth {
            u.extend_from_slice(&[0x75, 0x01]);
        }
        u.extend_from_slice(&[0x77, 0x01, b'x', 0]);
        u
    }

    #[test]
    fn nesting_is_bounded_not_banned() {
        let limits = UpdateLimits::default();
        assert!(check_update(&nested(64), &limits).is_ok());
        assert_eq!(
            check_update(&nested(65), &limits),
            Err(YjsError::TooDeep(64))
        );
        assert_eq!(
            check_update(&nested(5000), &limits),
            Err(YjsError::TooDeep(64))
        );
    }

    #[test]
    fn json_nesting_ignores_brackets_in_strings() {
        assert!(json_nesting(r#"{"a":"[[[[[[","b":[1,{"c":"\"]"}]}"#, 3).is_ok());
        assert_eq!(json_nesting("[[[1]]]", 2), Err(YjsError::TooDeep(2)));
    }

    #[test]
    fn a_parent_by_id_is_reported() {
        let abc = [1, 1, 1, 0, 4, 1, 1, b't', 3, b'a', b'b', b'c', 0];
        let child = [1, 1, 2, 0, 4, 0, 1, 0, 1, b'x', 0];
        let limits = UpdateLimits::default();
        assert!(!check_update(&abc, &limits).expect("abc").parent_by_id);
        assert!(check_update(&child, &limits).expect("child").parent_by_id);
    }

    #[test]
    fn clocks_stay_below_two_to_the_31() {
        // A deleted range of 2^31 at clock 0.
        let ds = [0, 1, 1, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x08];
        assert_eq!(
            check_update(&ds, &UpdateLimits::default()),
            Err(YjsError::ClockTooLarge)
        );
    }
}
