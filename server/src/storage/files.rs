//! Durability of an object's files: creating directories durably, fsyncing
//! an object's database, WAL and directory, and where those files are.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::{Storage, StorageError};

impl Storage {
    /// Commits the open transaction and fsyncs the object's database and WAL
    /// files, making every batch so far durable without the commit log.
    pub(crate) fn sync_files(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        File::open(&self.path)?.sync_all()?;
        let wal = wal_path(&self.path);
        if wal.exists() {
            File::open(&wal)?.sync_all()?;
        }
        Ok(())
    }
}

/// fsyncs an object's database and WAL (if present) and its directory.
pub(crate) fn sync_object_files(path: &Path) -> std::io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match File::open(PathBuf::from(wal)) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = parent_dir(path) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Removes a closed object's database, then its WAL and shared-memory
/// files (those that exist; a WAL left beside a missing database is deleted
/// by SQLite when the database is next opened). Returns whether the
/// database file was there.
///
/// Holds the process-wide turn of background checkpoints (`wal.rs`,
/// `tidy.rs`) meanwhile, so no such connection is open on the files: one
/// closing later, as the last on the removed file, would delete the WAL by
/// its name, which a new object of the same name may be using by then.
/// Blocks while a checkpoint runs: call it off the async workers
/// (`sys::blocking`).
pub(crate) fn remove_object_files(path: &Path) -> std::io::Result<bool> {
    let _turn = super::wal::one_at_a_time();
    let mut had_db = false;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match fs::remove_file(PathBuf::from(p)) {
            Ok(()) => had_db |= suffix.is_empty(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(had_db)
}

/// The WAL file of the database at `path`.
pub(super) fn wal_path(path: &Path) -> PathBuf {
    let mut os = path.as_os_str().to_owned();
    os.push("-wal");
    PathBuf::from(os)
}

/// `create_dir_all`, then fsync each directory whose entry it may have added.
pub(crate) fn create_dir_all_durable(dir: &Path) -> Result<(), std::io::Error> {
    if dir.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let mut cursor = Some(dir);
    // Sync the new directories and their parents, up to 4 levels (objects/<class>/<xx>).
    for _ in 0..4 {
        let Some(d) = cursor else { break };
        File::open(d)?.sync_all()?;
        cursor = parent_dir(d);
    }
    Ok(())
}

/// The directory holding `path`: `.` for a bare relative name (whose
/// `Path::parent` is the empty path, which cannot be opened).
pub(crate) fn parent_dir(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// fsyncs the directory holding `path`.
pub(super) fn sync_parent(path: &Path) -> Result<(), std::io::Error> {
    if let Some(parent) = parent_dir(path) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` so that, after a crash, the file holds all of
/// them or is as it was: a temporary file beside it, fsynced, renamed into
/// place, the directory fsynced.
pub(crate) fn write_file_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)
}
