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
