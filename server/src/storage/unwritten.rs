//! The unwritten mark: whether only constructors ever wrote to an object's
//! file. Such a file holds nothing a fresh start would not make again (the
//! constructor runs on an empty file), so it can be removed when its object
//! stops; `runtime/unwritten.rs` decides when.
//!
//! The mark is `_roost_meta('constructor_seq', s)`: the `commit_seq` stamp
//! up to which every write came from a constructor. A new database gets it
//! (`s` = 0) in the transaction that creates it (`open.rs`, a synchronous
//! commit); a constructor's commit that writes moves it along with the
//! stamp, in the same transaction (fsynced with the constructor's writes),
//! if the file was unwritten and the constructor left no alarm and emitted
//! no feed event. No batch touches it. So a file is unwritten exactly while
//! its mark equals its stamp: a batch that wrote anything (a row, an alarm,
//! a feed event, a Yjs update) took a larger `seq` — in memory at once, in
//! the file with its commit or with recovery's replay of its record. A
//! file made before the mark existed has none and counts as written.
//!
//! Not here: when an object is removed (stopped, no socket left, not in
//! cluster mode) and its catalog row.

use super::{Storage, StorageError};

impl Storage {
    /// Whether only constructors ever wrote to the file, with nothing
    /// pending in the open transaction and nothing lost.
    pub(crate) fn is_unwritten(&self) -> bool {
        self.lost.is_none() && self.pending_from.is_none() && self.constructor_seq == Some(self.seq)
    }

    /// Commits a constructor's batch ([`commit`](Self::commit)). If the file
    /// was unwritten and `keeps_unwritten` (the constructor left no alarm
    /// and emitted nothing), the mark follows the `seq` the batch takes, in
    /// the same transaction; otherwise a batch that wrote leaves it behind
    /// for good. On failure the caller rolls back, the mark's update with it.
    pub(crate) fn commit_constructor(
        &mut self,
        wrote: bool,
        keeps_unwritten: bool,
    ) -> Result<(), StorageError> {
        let follow = wrote && keeps_unwritten && self.is_unwritten();
        if follow {
            let next = i64::try_from(self.seq + 1).unwrap_or(i64::MAX);
            self.conn()
                .prepare_cached("UPDATE _roost_meta SET v = ?1 WHERE k = 'constructor_seq'")?
                .execute([next])?;
        }
        self.commit(wrote)?;
        if follow {
            self.constructor_seq = Some(self.seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::StorageLimits;
    use super::*;

    fn open(path: &Path) -> Storage {
        Storage::open(path, StorageLimits::default()).expect("open")
    }

    /// A constructor's batch, as `lifecycle::start` runs it.
    fn construct(s: &mut Storage, sql: &str, keeps: bool) {
        s.begin_batch().expect("begin");
        s.sql().execute_batch(sql).expect("constructor's SQL");
        let wrote = s.finish_batch().expect("finish").is_some();
        s.commit_constructor(wrote, keeps).expect("commit");
    }

    fn batch(s: &mut Storage, sql: &str) {
        s.begin_batch().expect("begin");
        s.sql().execute_batch(sql).expect("batch's SQL");
        let wrote = s.finish_batch().expect("finish").is_some();
        s.end_batch(wrote).expect("end");
    }

    const MIGRATE: &str = "CREATE TABLE IF NOT EXISTS t(x INTEGER PRIMARY KEY);";

    /// A new file is unwritten through its constructors' migrations, in
    /// memory and once reopened; the first batch that writes ends it, for
    /// good, before and after its file commit.
    #[test]
    fn only_constructors_keep_a_file_unwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.sqlite");
        let mut s = open(&path);
        assert!(s.is_unwritten());
        construct(&mut s, MIGRATE, true);
        assert_eq!(s.commit_seq(), 1, "the migration took a seq");
        assert!(s.is_unwritten());
        drop(s);
        let mut s = open(&path);
        assert!(s.is_unwritten(), "the mark is in the file");
        construct(&mut s, MIGRATE, true);
        assert_eq!(s.commit_seq(), 1, "nothing to migrate: no write");
        batch(&mut s, "INSERT INTO t VALUES(1)");
        assert!(!s.is_unwritten(), "pending in the open transaction");
        s.flush().expect("flush");
        assert!(!s.is_unwritten());
        drop(s);
        let mut s = open(&path);
        assert!(!s.is_unwritten());
        // A later constructor's migration does not make it unwritten again.
        construct(&mut s, "CREATE TABLE u(y);", true);
        assert!(!s.is_unwritten());
    }

    /// A constructor that leaves an alarm or a feed event behind writes
    /// the object for good.
    #[test]
    fn a_constructor_that_keeps_something_writes_the_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.sqlite");
        let mut s = open(&path);
        construct(&mut s, MIGRATE, false);
        assert!(!s.is_unwritten());
        drop(s);
        assert!(!open(&path).is_unwritten());
    }

    /// A file made before the mark existed counts as written.
    #[test]
    fn a_file_without_the_mark_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.sqlite");
        rusqlite::Connection::open(&path)
            .expect("old file")
            .execute_batch(
                "CREATE TABLE _roost_meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
                 INSERT INTO _roost_meta VALUES('commit_seq', 0);",
            )
            .expect("old schema");
        assert!(!open(&path).is_unwritten());
    }

    /// Replaying a logged batch into the file (recovery) moves its stamp
    /// past the mark.
    #[test]
    fn a_replayed_batch_writes_the_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.sqlite");
        drop(open(&path));
        let id = crate::id::ObjectId::derive("t", "o");
        let record = crate::commitlog::record::Record {
            class: "t".into(),
            id,
            seq: 1,
            changeset: Vec::new(),
        };
        crate::commitlog::recovery::replay_records(&path, id, &[record]).expect("replay");
        assert!(!open(&path).is_unwritten());
    }
}
