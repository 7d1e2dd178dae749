//! The data directory: one server at a time (`<data>/LOCK`), its format
//! (`<data>/FORMAT`), and the local state cluster mode starts without.
//!
//! One server per data directory: `<data>/LOCK`, held with an exclusive
//! `flock` for as long as the server runs.
//!
//! Two servers on one directory would each run a live instance of the same
//! object and append to the same commit log, and acknowledged writes would
//! be lost. The lock goes with the process (a kill -9 releases it), so a
//! crash never leaves a stale lock to clean up. It does not guard against
//! two hosts sharing a directory over a network file system whose `flock`
//! is local only.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use anyhow::Context as _;

/// The held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub(crate) struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock of `data_dir` (which exists), or says which directory
    /// another process holds.
    pub(crate) fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "another Roost is serving {} (it holds {}): stop it, or give this one another --data",
                data_dir.display(),
                path.display()
            ),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// The data directory's format: `<data>/FORMAT` holds `roost-data N`.
/// Written on first start; a directory of a newer format is refused (this
/// binary cannot read it); an older one would be upgraded here
/// (CHANGELOG.md lists each format).
pub(crate) const DATA_FORMAT: u32 = 1;

pub(crate) fn check_format(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join("FORMAT");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: u32 = text
                .trim()
                .strip_prefix("roost-data ")
                .and_then(|n| n.parse().ok())
                .with_context(|| {
                    format!(
                        "{} is not a Roost format file (`roost-data N`)",
                        path.display()
                    )
                })?;
            if found > DATA_FORMAT {
                anyhow::bail!(
                    "{} holds data format {found}, newer than this Roost reads ({DATA_FORMAT}): run a newer Roost (see CHANGELOG.md)",
                    data_dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new directory, or one from before the format was recorded
            // (the same format 1).
            let text = format!("roost-data {DATA_FORMAT}\n");
            crate::storage::write_file_durably(&path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Cluster mode: local object files are a cache of the replicated log, and
/// an object is rebuilt from the log whenever this node takes it, so a
/// node starts with none (nor the catalog that indexes them).
pub(crate) fn forget_local_state(data_dir: &Path) -> anyhow::Result<()> {
    let objects = data_dir.join("objects");
    if objects.exists() {
        std::fs::remove_dir_all(&objects)
            .with_context(|| format!("cannot clear {}", objects.display()))?;
    }
    for name in ["catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"] {
        let _ = std::fs::remove_file(data_dir.join(name));
    }
    Ok(())
}
