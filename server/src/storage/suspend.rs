//! A quiet loaded object's connection, closed and opened again.
//!
//! An object that has had no event for a while but stays loaded (its Yjs
//! document, its sockets) does not need its connection: ~55 KiB of a
//! document's ~80 (the mapped WAL index, SQLite's schema, statements and
//! pages). `suspend` closes it once nothing is open in it — no batch, no
//! transaction, nothing the log holds that the file misses — and `resume`
//! opens it again, with the same settings and change capture, before the
//! actor lets anything reach it. What the storage knows besides the
//! connection (`seq`, limits, the checkpointer's registration, the cached
//! alarm row) stays: no one else writes the file meanwhile.
//!
//! Closing keeps the WAL (no checkpoint on close, `open.rs`) unless it is
//! larger than `WAL_KEEP_BYTES`, as when the object is evicted.

use super::open::connect;
use super::{Storage, StorageError};
use crate::commitlog::changeset::Mark;

/// A suspending object with a larger WAL file folds it into the database
/// first (the size `runtime::lifecycle` keeps when it closes an object).
pub(crate) const WAL_KEEP_BYTES: u64 = 1024 * 1024;

impl Storage {
    /// Closes the connection if nothing is open in it; returns whether it
    /// did (or already was). Blocking when it checkpoints a large WAL.
    pub(crate) fn suspend(&mut self) -> bool {
        let Some(conn) = &self.conn else {
            return true;
        };
        if self.batch_open || self.lost.is_some() || !conn.is_autocommit() {
            return false;
        }
        if self.wal_file_bytes() > WAL_KEEP_BYTES {
            if let Err(e) = self.checkpoint_wal() {
                tracing::warn!(error = %e, "WAL checkpoint before suspending failed");
            }
        }
        self.conn = None;
        self.event_mark = Mark::default();
        true
    }

    /// Opens the connection again if it was closed by `suspend`.
    pub(crate) fn resume(&mut self) -> Result<(), StorageError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let (conn, _) = connect(&self.path, &self.limits)?;
        if self.read_only {
            conn.execute_batch("PRAGMA query_only=1;")?;
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Whether the connection is closed (`suspend`).
    pub(crate) fn is_suspended(&self) -> bool {
        self.conn.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageLimits;

    type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

    fn fresh() -> Result<(tempfile::TempDir, Storage)> {
        let dir = tempfile::tempdir()?;
        let s = Storage::open(&dir.path().join("o.sqlite"), StorageLimits::default())?;
        s.sql().execute_batch("CREATE TABLE t(x INTEGER)")?;
        Ok((dir, s))
    }

    fn open_fds_to(path: &std::path::Path) -> Result<usize> {
        let mut n = 0;
        for entry in std::fs::read_dir("/proc/self/fd")? {
            if let Ok(target) = std::fs::read_link(entry?.path()) {
                n += usize::from(target.starts_with(path));
            }
        }
        Ok(n)
    }

    /// One batch inserting `x`, committed to the file; its changeset.
    fn write_batch(s: &mut Storage, x: i64) -> Result<Vec<u8>> {
        s.begin_batch()?;
        s.begin_event()?;
        s.db().execute("INSERT INTO t VALUES(?1)", [x])?;
        s.end_event(true)?;
        let changes = s.finish_batch()?.ok_or("the batch wrote nothing")?;
        s.end_batch(true)?;
        s.flush()?;
        Ok(changes.changeset)
    }

    fn int(s: &Storage, sql: &str) -> Result<i64> {
        Ok(s.sql().query_row(sql, [], |r| r.get(0))?)
    }

    #[test]
    fn a_suspended_storage_holds_no_file_and_resumes_where_it_was() -> Result {
        let (dir, mut s) = fresh()?;
        write_batch(&mut s, 1)?;
        let seq = s.commit_seq();
        assert!(open_fds_to(dir.path())? > 0);
        assert!(s.suspend());
        assert!(s.is_suspended());
        assert_eq!(open_fds_to(dir.path())?, 0, "the file stays open");
        s.flush()?;
        s.resume()?;
        assert!(!s.is_suspended());
        assert_eq!(s.commit_seq(), seq);
        // The capture works on the new connection: the batch has a
        // changeset, and the file has its row and its stamp.
        assert!(!write_batch(&mut s, 2)?.is_empty());
        assert_eq!(s.commit_seq(), seq + 1);
        assert_eq!(int(&s, "SELECT sum(x) FROM t")?, 3);
        let stamp = int(&s, "SELECT v FROM _roost_meta WHERE k='commit_seq'")?;
        assert_eq!(u64::try_from(stamp)?, seq + 1);
        Ok(())
    }

    #[test]
    fn an_open_transaction_or_batch_is_never_suspended() -> Result {
        let (_dir, mut s) = fresh()?;
        s.begin_batch()?;
        assert!(!s.suspend(), "suspended inside a batch");
        s.begin_event()?;
        s.db().execute("INSERT INTO t VALUES(1)", [])?;
        s.end_event(true)?;
        s.finish_batch()?;
        s.end_batch(true)?;
        assert!(!s.suspend(), "suspended with the transaction open");
        s.flush()?;
        assert!(s.suspend());
        Ok(())
    }

    #[test]
    fn read_only_survives_a_suspension() -> Result {
        let (_dir, mut s) = fresh()?;
        s.set_read_only(true)?;
        assert!(s.suspend());
        s.resume()?;
        assert!(s.sql().execute("INSERT INTO t VALUES(1)", []).is_err());
        s.set_read_only(false)?;
        s.sql().execute("INSERT INTO t VALUES(1)", [])?;
        Ok(())
    }
}
