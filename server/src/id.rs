//! Object identity: class and name validation, the id derived from them, and
//! the storage path derived from the id.
//!
//! The id — never the raw name — decides where an object's file lives, so no
//! name can reach outside the data directory. This module does no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Longest object name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 512;
/// Longest class name, in bytes.
pub(crate) const MAX_CLASS_BYTES: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("class name must match [a-z][a-z0-9_-]{{0,63}}")]
    BadClass,
    #[error("object name must be 1..=512 bytes of UTF-8, got {0} bytes")]
    BadName(usize),
    #[error(
        "`*` is not an object name: in an access token, `class/*` opens every object of the class"
    )]
    Wildcard,
}

/// Checks a class name: `[a-z][a-z0-9_-]{0,63}`.
pub(crate) fn validate_class(class: &str) -> Result<(), NameError> {
    let bytes = class.as_bytes();
    let first_ok = bytes.first().is_some_and(u8::is_ascii_lowercase);
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if first_ok && rest_ok && bytes.len() <= MAX_CLASS_BYTES {
        Ok(())
    } else {
        Err(NameError::BadClass)
    }
}

/// Checks an object name: any UTF-8 string of 1..=512 bytes but `*`, which
/// tokens read as every object of a class (an app that mints a token for
/// `room/{name}` would otherwise hand out all rooms for the name `*`).
pub(crate) fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        Err(NameError::BadName(name.len()))
    } else if name == "*" {
        Err(NameError::Wildcard)
    } else {
        Ok(())
    }
}

/// The first 128 bits of SHA-256(class, 0x00, name).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// The id of the object `name` of class `class`.
    pub fn derive(class: &str, name: &str) -> ObjectId {
        let mut hasher = Sha256::new();
        hasher.update(class.as_bytes());
        hasher.update([0u8]);
        hasher.update(name.as_bytes());
        let digest = hasher.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        ObjectId(id)
    }

    /// Parses 32 lowercase or uppercase hex digits.
    pub fn from_hex(text: &str) -> Option<ObjectId> {
        if text.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).ok()?;
            id[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(ObjectId(id))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// A validated `(class, name)` pair and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey {
    /// The class name.
    pub class: String,
    /// The object name.
    pub name: String,
    /// The id derived from both.
    pub id: ObjectId,
}

impl ObjectKey {
    /// Validates `class` and `name` and derives their id.
    pub fn new(class: &str, name: &str) -> Result<ObjectKey, NameError> {
        validate_class(class)?;
        validate_name(name)?;
        Ok(ObjectKey {
            class: class.to_owned(),
            name: name.to_owned(),
            id: ObjectId::derive(class, name),
        })
    }
}

/// `<data>/objects/<class>/<id[0..2]>/<id>.sqlite`. `class` must be valid.
pub fn object_path(data_dir: &Path, class: &str, id: ObjectId) -> PathBuf {
    let hex = id.to_string();
    data_dir
        .join("objects")
        .join(class)
        .join(&hex[..2])
        .join(format!("{hex}.sqlite"))
}

/// An object file's path relative to the data directory, and its id.
pub(crate) type ObjectFile = (PathBuf, ObjectId);

/// What one walk of `<data>/objects` found.
#[derive(Debug, Default)]
pub(crate) struct ObjectWalk {
    /// Every object file, sorted.
    pub files: Vec<ObjectFile>,
    /// Object files (absolute paths) with a WAL beside them.
    pub wals: Vec<PathBuf>,
    /// Object files (absolute paths) with a rollback journal beside them:
    /// a crash while the file was being created.
    pub journals: Vec<PathBuf>,
}

/// Walks `<data>/objects` once (files of other names are skipped).
pub(crate) fn walk_objects(data_dir: &Path) -> std::io::Result<ObjectWalk> {
    let mut found = ObjectWalk::default();
    let Ok(classes) = std::fs::read_dir(data_dir.join("objects")) else {
        return Ok(found); // no object yet
    };
    for class in classes {
        for shard in std::fs::read_dir(class?.path())? {
            for file in std::fs::read_dir(shard?.path())? {
                let path = file?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let is_object = |db: &str| {
                    db.strip_suffix(".sqlite")
                        .and_then(ObjectId::from_hex)
                        .is_some()
                };
                if let Some(db) = name.strip_suffix("-wal").filter(|db| is_object(db)) {
                    found.wals.push(path.with_file_name(db));
                } else if let Some(db) = name.strip_suffix("-journal").filter(|db| is_object(db)) {
                    found.journals.push(path.with_file_name(db));
                } else if let Some(id) = name.strip_suffix(".sqlite").and_then(ObjectId::from_hex) {
                    if let Ok(rel) = path.strip_prefix(data_dir) {
                        found.files.push((rel.to_owned(), id));
                    }
                }
            }
        }
    }
    found.files.sort();
    found.wals.sort();
    found.journals.sort();
    Ok(found)
}

/// Every object file under `<data>/objects`: its path relative to `data_dir`
/// and its id (files of other names are skipped).
pub(crate) fn object_files(data_dir: &Path) -> std::io::Result<Vec<ObjectFile>> {
    Ok(walk_objects(data_dir)?.files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names() {
        assert!(validate_class("counter").is_ok());
        assert!(validate_class("my-class_2").is_ok());
        assert!(validate_class("").is_err());
        assert!(validate_class("2x").is_err());
        assert!(validate_class("A").is_err());
        assert!(validate_class("../x").is_err());
        assert!(validate_class(&"a".repeat(64)).is_ok());
        assert!(validate_class(&"a".repeat(65)).is_err());
    }

    #[test]
    fn object_names() {
        assert!(validate_name("x").is_ok());
        assert!(validate_name("../../etc/passwd\0").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"é".repeat(256)).is_ok());
        assert!(validate_name(&"é".repeat(257)).is_err());
        // Tokens read `class/*` as every object of the class.
        assert_eq!(validate_name("*"), Err(NameError::Wildcard));
        assert!(validate_name("a*").is_ok() && validate_name("**").is_ok());
    }

    #[test]
    fn id_is_stable_and_separates_class_from_name() {
        let a = ObjectId::derive("counter", "x");
        assert_eq!(a, ObjectId::derive("counter", "x"));
        assert_ne!(a, ObjectId::derive("counte", "rx"));
        assert_eq!(ObjectId::from_hex(&a.to_string()), Some(a));
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(ObjectId::from_hex("zz"), None);
    }

    #[test]
    fn path_never_contains_the_name() {
        let dir = Path::new("/data");
        let key = ObjectKey::new("counter", "../../../etc/passwd").expect("valid");
        let path = object_path(dir, &key.class, key.id);
        assert!(path.starts_with("/data/objects/counter/"));
        assert!(!path.to_string_lossy().contains(".."));
    }
}
