//! The cursor every Yjs reader in this crate walks client bytes with.
//!
//! Invariant: no read panics or allocates; every read names what it reads
//! (for the error), varints are no longer than their type, and a count is
//! never more than the bytes left can hold (`count`), so no caller reserves
//! room for a lie.

use std::fmt;

use super::{YjsError, MAX_CLIENT};

/// A cursor over client bytes.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader({}/{})", self.pos, self.buf.len())
    }
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn is_empty(&self) -> bool {
        self.left() == 0
    }

    /// The next byte, not consumed.
    pub(super) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Errors unless every byte was read.
    pub(super) fn end(&self) -> Result<(), YjsError> {
        match self.left() {
            0 => Ok(()),
            n => Err(YjsError::Trailing(n)),
        }
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, YjsError> {
        let b = self.peek().ok_or(YjsError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], YjsError> {
        if n > self.left() {
            return Err(YjsError::Truncated(what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// An unsigned varint of at most 64 bits (10 bytes).
    pub(super) fn var_u64(&mut self, what: &'static str) -> Result<u64, YjsError> {
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
    pub(super) fn client(&mut self) -> Result<u64, YjsError> {
        let id = self.var_u64("a client id")?;
        if id > MAX_CLIENT {
            return Err(YjsError::ClientTooLarge);
        }
        Ok(id)
    }

    /// An unsigned varint that fits 32 bits (at most 5 bytes).
    pub(super) fn var_u32(&mut self, what: &'static str) -> Result<u32, YjsError> {
        let start = self.pos;
        let v = self.var_u64(what)?;
        if self.pos - start > 5 {
            return Err(YjsError::Malformed("a varint past 32 bits"));
        }
        u32::try_from(v).map_err(|_| YjsError::Malformed("a varint past 32 bits"))
    }

    pub(super) fn var_u8(&mut self, what: &'static str) -> Result<u8, YjsError> {
        u8::try_from(self.var_u32(what)?)
            .map_err(|_| YjsError::Malformed("a message type past 255"))
    }

    /// lib0's signed varint (sign in the first byte's bit 6), skipped.
    pub(super) fn var_i64(&mut self, what: &'static str) -> Result<(), YjsError> {
        for _ in 0..10 {
            if self.u8(what)? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(YjsError::Malformed("a varint past 64 bits"))
    }

    /// A count of things that take at least `min_bytes` each: never more
    /// than the bytes left can hold.
    pub(super) fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<u64, YjsError> {
        let n = self.var_u64(what)?;
        if n > (self.left() / min_bytes) as u64 {
            return Err(YjsError::Truncated(what));
        }
        Ok(n)
    }

    /// lib0's `varUint8Array`: a length, then that many bytes.
    pub(super) fn buf(&mut self, what: &'static str) -> Result<&'a [u8], YjsError> {
        let len = self.var_u32(what)? as usize;
        self.take(len, what)
    }

    /// lib0's `varString`: a `varUint8Array` of UTF-8.
    pub(super) fn string(&mut self, what: &'static str) -> Result<&'a str, YjsError> {
        std::str::from_utf8(self.buf(what)?)
            .map_err(|_| YjsError::Malformed("a string that is not UTF-8"))
    }
}

/// Appends lib0's `varUint` encoding of `v` (7 bits a byte, low first).
pub(super) fn write_var_u64(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
