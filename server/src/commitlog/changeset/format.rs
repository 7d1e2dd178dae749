//! The changeset byte format: the constants and encoders the capture writes
//! with (`capture/hook.rs`), and the decoder replay reads with. Decoding
//! never panics: garbage, truncation and huge claimed lengths are errors.
//!
//! ```text
//! changeset := 0xA1 change*                  (empty when nothing changed)
//! change    := op:u8 table:bytes ncol:varint body
//!   INSERT (1): new_rowid:int new_value{ncol}
//!   UPDATE (2): old_rowid:int new_rowid:int (new_value old_value){ncol}
//!   DELETE (3): old_rowid:int old_value{ncol}
//! value     := 0 | 1 int | 2 f64-le | 3 bytes | 4 bytes   (NULL INTEGER REAL TEXT BLOB)
//! old_value := value | 5                                   (5: same as the new value)
//! bytes     := len:varint byte{len}
//! int       := zigzag varint; varint := LEB128 (at most 10 bytes)
//! ```
//! Values are in table column order (`cid`); rowids are meaningless for
//! `WITHOUT ROWID` tables; virtual generated columns are recorded as NULL.

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::CaptureError;

pub(super) const FORMAT_V1: u8 = 0xA1;

pub(super) const OP_INSERT: u8 = 1;
pub(super) const OP_UPDATE: u8 = 2;
pub(super) const OP_DELETE: u8 = 3;

pub(super) const T_NULL: u8 = 0;
pub(super) const T_INTEGER: u8 = 1;
pub(super) const T_REAL: u8 = 2;
pub(super) const T_TEXT: u8 = 3;
pub(super) const T_BLOB: u8 = 4;
pub(super) const T_SAME: u8 = 5;

/// SQLite's hard upper bound on the columns of a table.
pub(super) const MAX_COLUMNS: usize = 32767;

// ---------------------------------------------------------------------------
// Encoding (the capture)
// ---------------------------------------------------------------------------

pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(super) fn put_int(buf: &mut Vec<u8>, v: i64) {
    put_varint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

pub(super) fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

// ---------------------------------------------------------------------------
// Decoding (the replay)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Val<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl<'a> Val<'a> {
    pub(super) fn to_sql(self) -> ToSqlOutput<'a> {
        ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Integer(i) => ValueRef::Integer(i),
            Val::Real(f) => ValueRef::Real(f),
            Val::Text(t) => ValueRef::Text(t),
            Val::Blob(b) => ValueRef::Blob(b),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Debug)]
pub(super) struct Change<'a> {
    pub(super) op: Op,
    pub(super) table: &'a str,
    pub(super) old_rowid: i64,
    pub(super) new_rowid: i64,
    /// Empty for an INSERT.
    pub(super) old: Vec<Val<'a>>,
    /// Empty for a DELETE.
    pub(super) new: Vec<Val<'a>>,
}

impl Change<'_> {
    pub(super) fn ncol(&self) -> usize {
        self.old.len().max(self.new.len())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn malformed<T>(&self, what: &'static str) -> Result<T, CaptureError> {
        Err(CaptureError::Malformed {
            offset: self.pos,
            what,
        })
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, CaptureError> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => self.malformed("unexpected end"),
        }
    }

    fn varint(&mut self) -> Result<u64, CaptureError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return self.malformed("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.malformed("varint too long")
    }

    fn int(&mut self) -> Result<i64, CaptureError> {
        let u = self.varint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, CaptureError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => self.malformed("length runs past the end"),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], CaptureError> {
        let n = self.count()?;
        let start = self.pos;
        match self.bytes.get(start..start + n) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => self.malformed("length runs past the end"),
        }
    }

    fn value(&mut self) -> Result<Val<'a>, CaptureError> {
        match self.u8()? {
            T_NULL => Ok(Val::Null),
            T_INTEGER => Ok(Val::Integer(self.int()?)),
            T_REAL => {
                let start = self.pos;
                let Some(raw) = self.bytes.get(start..start + 8) else {
                    return self.malformed("unexpected end");
                };
                let mut le = [0u8; 8];
                le.copy_from_slice(raw);
                self.pos += 8;
                Ok(Val::Real(f64::from_bits(u64::from_le_bytes(le))))
            }
            T_TEXT => Ok(Val::Text(self.bytes()?)),
            T_BLOB => Ok(Val::Blob(self.bytes()?)),
            _ => self.malformed("unknown value type"),
        }
    }

    fn change(&mut self) -> Result<Change<'a>, CaptureError> {
        let op = match self.u8()? {
            OP_INSERT => Op::Insert,
            OP_UPDATE => Op::Update,
            OP_DELETE => Op::Delete,
            _ => return self.malformed("unknown operation"),
        };
        let table = self.bytes()?;
        let Ok(table) = std::str::from_utf8(table) else {
            return self.malformed("table name is not UTF-8");
        };
        if table.is_empty() {
            return self.malformed("empty table name");
        }
        let ncol = self.count()?;
        if ncol == 0 || ncol > MAX_COLUMNS {
            return self.malformed("bad column count");
        }
        let mut change = Change {
            op,
            table,
            old_rowid: 0,
            new_rowid: 0,
            old: Vec::new(),
            new: Vec::new(),
        };
        match op {
            Op::Insert => {
                change.new_rowid = self.int()?;
                change.new = (0..ncol).map(|_| self.value()).collect::<Result<_, _>>()?;
            }
            Op::Delete => {
                change.old_rowid = self.int()?;
                change.old = (0..ncol).map(|_| self.value()).collect::<Result<_, _>>()?;
            }
            Op::Update => {
                change.old_rowid = self.int()?;
                change.new_rowid = self.int()?;
                change.old.reserve(ncol);
                change.new.reserve(ncol);
                for _ in 0..ncol {
                    let new = self.value()?;
                    let old = if self.bytes.get(self.pos) == Some(&T_SAME) {
                        self.pos += 1;
                        new
                    } else {
                        self.value()?
                    };
                    change.new.push(new);
                    change.old.push(old);
                }
            }
        }
        Ok(change)
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Change<'_>>, CaptureError> {
    let mut reader = Reader { bytes, pos: 0 };
    if reader.u8()? != FORMAT_V1 {
        return Err(CaptureError::Malformed {
            offset: 0,
            what: "not a roost changeset",
        });
    }
    let mut changes = Vec::new();
    while reader.remaining() > 0 {
        changes.push(reader.change()?);
    }
    Ok(changes)
}
