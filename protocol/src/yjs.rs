//! Yjs bytes from clients, read without trusting them: y-websocket frames
//! (`read_frame`), Yjs v1 updates (`check_update`), state vectors and
//! awareness updates. Everything here walks the bytes with a loop and an
//! explicit bound — no recursion, no allocation sized by a declared length,
//! no panic — so it can run on any input *before* a recursive decoder (yrs
//! decodes `Any` values and JSON by recursion: a 10 KB update nested 5,000
//! deep overflows a thread's stack) sees it.
//!
//! `check_update` follows yrs 0.28's v1 decoder byte for byte, so what it
//! accepts is exactly what yrs will read: where yrs and Yjs disagree or a
//! feature is unused by Yjs clients (legacy JSON content, which yrs reads
//! one string too far; weak links), it refuses. It is stricter than yrs in a
//! few places no honest encoder reaches: a client's structs in two runs,
//! varints longer than their type,
//! clocks past 2^31 − 1 (yrs adds `clock + len` in `u32` and `i32`), unknown
//! parent-info values, and bytes after the delete set.
//!
//! What it does not do: build a document, or judge whether an update can be
//! applied to one (that needs the document; see the `ydoc` class).

use std::fmt;

/// Deepest nesting of arrays and objects in one `Any` value or JSON text
/// (1 = a flat array) unless configured otherwise.
pub const DEFAULT_MAX_NESTING: u32 = 64;

/// Largest clock (plus length) a struct or deletion may reach: yrs does
/// clock arithmetic in `u32` and `i32`.
pub const MAX_CLOCK: u64 = i32::MAX as u64;

/// Largest client id: Yjs ids are JavaScript safe integers, and yrs
/// asserts (in debug builds) that an id fits 53 bits.
pub const MAX_CLIENT: u64 = (1 << 53) - 1;

/// Why client bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YjsError {
    /// The bytes end inside the named part.
    #[error("truncated: the bytes end inside {0}")]
    Truncated(&'static str),
    /// The named part is not what the format allows (or what Roost takes).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// An `Any` value or JSON text nests deeper than the bound.
    #[error("values nested deeper than {0} levels")]
    TooDeep(u32),
    /// A clock plus length passes `MAX_CLOCK`.
    #[error("a clock passes 2^31 - 1")]
    ClockTooLarge,
    /// A client id passes `MAX_CLIENT`.
    #[error("a client id passes 2^53 - 1")]
    ClientTooLarge,
    /// Bytes follow the end of the message or update.
    #[error("{0} bytes after the end")]
    Trailing(usize),
}

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

/// One message of a y-websocket frame, borrowing the frame's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YMessage<'a> {
    /// Sync step 1: the sender's state vector (unchecked; see
    /// `check_state_vector`).
    SyncStep1(&'a [u8]),
    /// Sync step 2: an update (unchecked; see `check_update`).
    SyncStep2(&'a [u8]),
    /// A sync update (unchecked).
    Update(&'a [u8]),
    /// An awareness update (unchecked; see `check_awareness`).
    Awareness(&'a [u8]),
    /// Auth: `Some(reason)` for permission denied.
    Auth(Option<&'a str>),
    /// Query awareness.
    QueryAwareness,
    /// Roost extension, heartbeat: `[MSG_PING]`, no payload (see `MSG_PING`).
    Ping,
    /// Any other message type with its payload (Roost's 100 and 101 among them).
    Other(u8, &'a [u8]),
}

const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_QUERY_AWARENESS: u8 = 3;

/// Roost extension, heartbeat: the one-byte frame `[102]`, the same in both
/// directions. Browsers cannot see WebSocket ping frames, so a client that
/// wants to notice a frozen or vanished server sends `[102]` when the socket
/// has been quiet, and the server's socket layer answers `[102]` at once
/// (never through the document, so a busy document does not look dead).
/// 102 follows Roost's `saved` (100) and `refresh` (101), clear of
/// y-protocols' 0–3 and the small numbers other providers extend with.
pub const MSG_PING: u8 = 102;

/// Reads a whole y-websocket frame: one or more messages that end exactly
/// at the frame's end. A truncated message, an unknown sync type or an
/// empty frame is an error (the socket closes with 1008); nothing of the
/// frame is used then.
pub fn read_frame(frame: &[u8]) -> Result<Vec<YMessage<'_>>, YjsError> {
    let mut r = Reader::new(frame);
    if r.is_empty() {
        return Err(YjsError::Truncated("an empty frame"));
    }
    let mut out = Vec::new();
    while !r.is_empty() {
        let tag = r.var_u8("a message type")?;
        out.push(match tag {
            MSG_SYNC => match r.var_u8("a sync message type")? {
                0 => YMessage::SyncStep1(r.buf("a state vector")?),
                1 => YMessage::SyncStep2(r.buf("an update")?),
                2 => YMessage::Update(r.buf("an update")?),
                _ => return Err(YjsError::Malformed("unknown sync message type")),
            },
            MSG_AWARENESS => YMessage::Awareness(r.buf("an awareness update")?),
            MSG_AUTH => {
                if r.var_u8("an auth message")? == 0 {
                    YMessage::Auth(Some(r.string("an auth reason")?))
                } else {
                    YMessage::Auth(None)
                }
            }
            MSG_QUERY_AWARENESS => YMessage::QueryAwareness,
            MSG_PING => YMessage::Ping,
            other => YMessage::Other(other, r.buf("a message")?),
        });
    }
    Ok(out)
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
            if r.buf.get(r.pos) == Some(&SKIP) {
                shape.skip_of.get_or_insert(client);
            }
            clock += struct_len(&mut r, limits, &mut shape)?;
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
    // The delete set: clients, each with ranges of (clock, len).
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
    r.end()?;
    Ok(shape)
}

// Struct info byte (yrs `block.rs`).
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const GC: u8 = 0;
const SKIP: u8 = 10;

/// Reads one struct; returns its length in clock units.
fn struct_len(
    r: &mut Reader<'_>,
    limits: &UpdateLimits,
    shape: &mut UpdateShape,
) -> Result<u64, YjsError> {
    let info = r.u8("a struct")?;
    if info == GC || info == SKIP {
        let len = r.var_u32("a range's length")?;
        if len == 0 {
            return Err(YjsError::Malformed("an empty range"));
        }
        return Ok(u64::from(len));
    }
    // yrs reads the content kind from the low four bits; Yjs from five.
    // Bit 4 is set by no encoder: refuse it rather than read it two ways.
    if info & 0b1_0000 != 0 {
        return Err(YjsError::Malformed("unknown content kind"));
    }
    if info & HAS_ORIGIN != 0 {
        id(r)?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        id(r)?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        match r.var_u32("a parent")? {
            1 => {
                r.string("a root type's name")?;
            }
            0 => {
                id(r)?;
                shape.parent_by_id = true;
            }
            _ => return Err(YjsError::Malformed("unknown parent kind")),
        }
        if info & HAS_PARENT_SUB != 0 {
            r.string("a map key")?;
        }
    }
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

fn id(r: &mut Reader<'_>) -> Result<(), YjsError> {
    r.client()?;
    if u64::from(r.var_u32("an id's clock")?) > MAX_CLOCK {
        return Err(YjsError::ClockTooLarge);
    }
    Ok(())
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

/// A cursor over client bytes. Every read names what it reads, for errors.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader({}/{})", self.pos, self.buf.len())
    }
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.left() == 0
    }

    fn end(&self) -> Result<(), YjsError> {
        match self.left() {
            0 => Ok(()),
            n => Err(YjsError::Trailing(n)),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, YjsError> {
        let b = *self.buf.get(self.pos).ok_or(YjsError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], YjsError> {
        if n > self.left() {
            return Err(YjsError::Truncated(what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// An unsigned varint of at most 64 bits (10 bytes).
    fn var_u64(&mut self, what: &'static str) -> Result<u64, YjsError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(YjsError::Malformed("a varint past 64 bits"));
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(YjsError::Malformed("a varint past 64 bits"))
    }

    /// A client id (at most `MAX_CLIENT`).
    fn client(&mut self) -> Result<u64, YjsError> {
        let id = self.var_u64("a client id")?;
        if id > MAX_CLIENT {
            return Err(YjsError::ClientTooLarge);
        }
        Ok(id)
    }

    /// An unsigned varint that fits 32 bits (at most 5 bytes).
    fn var_u32(&mut self, what: &'static str) -> Result<u32, YjsError> {
        let start = self.pos;
        let v = self.var_u64(what)?;
        if self.pos - start > 5 {
            return Err(YjsError::Malformed("a varint past 32 bits"));
        }
        u32::try_from(v).map_err(|_| YjsError::Malformed("a varint past 32 bits"))
    }

    fn var_u8(&mut self, what: &'static str) -> Result<u8, YjsError> {
        u8::try_from(self.var_u32(what)?)
            .map_err(|_| YjsError::Malformed("a message type past 255"))
    }

    /// lib0's signed varint (sign in the first byte's bit 6), skipped.
    fn var_i64(&mut self, what: &'static str) -> Result<(), YjsError> {
        for _ in 0..10 {
            if self.u8(what)? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(YjsError::Malformed("a varint past 64 bits"))
    }

    /// A count of things that take at least `min_bytes` each: never more
    /// than the bytes left can hold, so no one reserves room for a lie.
    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<u64, YjsError> {
        let n = self.var_u64(what)?;
        if n > (self.left() / min_bytes) as u64 {
            return Err(YjsError::Truncated(what));
        }
        Ok(n)
    }

    fn buf(&mut self, what: &'static str) -> Result<&'a [u8], YjsError> {
        let len = self.var_u32(what)? as usize;
        self.take(len, what)
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str, YjsError> {
        std::str::from_utf8(self.buf(what)?)
            .map_err(|_| YjsError::Malformed("a string that is not UTF-8"))
    }
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
    fn frames_must_end_where_their_last_message_ends() {
        let update = [0, 2, 2, 0, 0];
        assert_eq!(read_frame(&update), Ok(vec![YMessage::Update(&[0, 0])]));
        assert!(read_frame(&[0, 2, 2, 0, 0, 0]).is_err());
        assert!(read_frame(&[0, 2, 5, 0, 0]).is_err());
        assert!(read_frame(&[]).is_err());
        assert_eq!(
            read_frame(&[3, 1, 1, 7]),
            Ok(vec![YMessage::QueryAwareness, YMessage::Awareness(&[7])])
        );
    }

    #[test]
    fn a_ping_is_one_byte_with_no_payload() {
        assert_eq!(read_frame(&[MSG_PING]), Ok(vec![YMessage::Ping]));
        assert_eq!(
            read_frame(&[MSG_PING, 3]),
            Ok(vec![YMessage::Ping, YMessage::QueryAwareness])
        );
        // Other Roost and unknown types still carry a varUint8Array payload.
        assert_eq!(
            read_frame(&[101, 1, 7]),
            Ok(vec![YMessage::Other(101, &[7])])
        );
        assert_eq!(read_frame(&[103, 0]), Ok(vec![YMessage::Other(103, &[])]));
        assert!(read_frame(&[103]).is_err());
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
