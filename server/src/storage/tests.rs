//! Tests of the batch transaction: lazy file commits, a lost transaction,
//! a failed commit.

use std::path::Path;

use super::*;

fn fresh() -> (tempfile::TempDir, PathBuf, Storage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("o.sqlite");
    let mut s = Storage::open(&path, StorageLimits::default()).expect("open");
    s.begin_batch().expect("begin");
    s.sql()
        .execute_batch(
            "CREATE TABLE p(id INTEGER PRIMARY KEY);
             CREATE TABLE c(x INTEGER PRIMARY KEY,
               p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .expect("schema");
    s.finish_batch().expect("finish");
    s.commit(true).expect("commit");
    (dir, path, s)
}

fn batch(s: &mut Storage, sql: &str) -> Result<(), StorageError> {
    s.begin_batch()?;
    let ran = s.sql().execute_batch(sql).map_err(StorageError::from);
    let ended = ran
        .and_then(|()| s.finish_batch())
        .and_then(|c| s.end_batch(c.is_some()));
    if ended.is_err() {
        s.rollback();
    }
    ended
}

fn rows(path: &Path) -> i64 {
    let other = Connection::open(path).expect("second connection");
    other
        .query_row("SELECT count(*) FROM p", [], |r| r.get(0))
        .expect("count")
}

/// Ended batches wait in one open transaction: listed as unflushed from
/// the first, invisible to other connections, kept when a later batch
/// is undone, and in the file once flushed.
#[test]
fn batches_wait_in_the_open_transaction_until_flushed() {
    let (_dir, path, mut s) = fresh();
    let registry = Arc::new(Unflushed::default());
    let id = ObjectId::derive("t", "lazy");
    s.track_unflushed(registry.clone(), id);
    let seq0 = s.commit_seq();
    batch(&mut s, "INSERT INTO p VALUES(1)").expect("first");
    batch(&mut s, "INSERT INTO p VALUES(2)").expect("second");
    assert_eq!(s.commit_seq(), seq0 + 2);
    assert!(registry.holds(id, seq0 + 1) && registry.holds(id, seq0 + 2));
    assert!(!registry.holds(id, seq0), "earlier batches are in the file");
    assert!(s.open_for().is_some());
    assert_eq!(rows(&path), 0, "not committed to the file yet");
    // A failing batch is undone alone.
    let failed = batch(&mut s, "INSERT INTO p VALUES(3); INSERT INTO p VALUES(1)");
    assert!(failed.is_err());
    assert_eq!(s.commit_seq(), seq0 + 2);
    // A deferred foreign key is checked when the batch ends, not at the
    // (later) commit: the batch fails and the transaction stays good.
    let dangling = batch(&mut s, "INSERT INTO c VALUES(1, 99)");
    assert!(
        dangling.is_err(),
        "a dangling deferred reference fails its batch"
    );
    s.flush().expect("flush");
    assert!(!registry.holds(id, seq0 + 2));
    assert!(s.open_for().is_none());
    assert_eq!(rows(&path), 2);
    let n: i64 = s
        .sql()
        .query_row("SELECT count(*) FROM c", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 0);
    // The file's stamp is the last batch's.
    drop(s);
    let reopened = Storage::open(&path, StorageLimits::default()).expect("reopen");
    assert_eq!(reopened.commit_seq(), seq0 + 2);
}

/// If the open transaction is lost (here: rolled back behind the
/// storage's back), the pending batches stay listed, so the log keeps
/// them, and the storage refuses every later batch with `Lost`.
#[test]
fn a_lost_transaction_refuses_later_batches() {
    let (_dir, path, mut s) = fresh();
    let registry = Arc::new(Unflushed::default());
    let id = ObjectId::derive("t", "lost");
    s.track_unflushed(registry.clone(), id);
    batch(&mut s, "INSERT INTO p VALUES(1)").expect("batch");
    let seq = s.commit_seq();
    s.sql().execute_batch("ROLLBACK").expect("rollback");
    assert!(matches!(s.flush(), Err(StorageError::Lost(_))));
    assert!(s.lost().is_some());
    assert!(
        s.open_for().is_none(),
        "nothing left for the actor to commit"
    );
    assert!(registry.holds(id, seq), "the log must keep the batch");
    assert!(matches!(s.begin_batch(), Err(StorageError::Lost(_))));
    assert!(matches!(s.flush(), Err(StorageError::Lost(_))));
    assert_eq!(rows(&path), 0);
}

/// With `commit`, a batch that fails to commit is undone and forgotten:
/// its `seq` is not used, nothing stays listed, no transaction stays
/// open, and the next batch commits as usual.
#[test]
fn commit_forgets_a_batch_it_could_not_commit() {
    let (_dir, path, mut s) = fresh();
    let registry = Arc::new(Unflushed::default());
    let id = ObjectId::derive("t", "now");
    s.track_unflushed(registry.clone(), id);
    let seq0 = s.commit_seq();
    let commit_one = |s: &mut Storage, sql: &str| {
        s.begin_batch()?;
        s.sql().execute_batch(sql)?;
        let wrote = s.finish_batch()?.is_some();
        s.commit(wrote)
    };
    // A commit hook that vetoes turns the COMMIT into a rollback.
    s.sql().commit_hook(Some(|| true));
    assert!(commit_one(&mut s, "INSERT INTO p VALUES(1)").is_err());
    assert_eq!(s.commit_seq(), seq0, "the failed batch's seq is unused");
    assert!(!registry.holds(id, seq0 + 1), "nothing stays listed");
    assert!(s.open_for().is_none());
    assert!(s.lost().is_none(), "only this batch was at stake");
    assert_eq!(rows(&path), 0);
    s.sql().commit_hook(None::<fn() -> bool>);
    commit_one(&mut s, "INSERT INTO p VALUES(2)").expect("next batch");
    assert_eq!(s.commit_seq(), seq0 + 1);
    assert!(!registry.holds(id, seq0 + 1));
    assert_eq!(rows(&path), 1);
}

/// A new file gets 2 KiB pages and incremental auto-vacuum; reopening an
/// existing file writes nothing (setting the pragma again would write the
/// header: a WAL frame, and an fsync, at every object start). Deleted rows'
/// pages go back to the filesystem once `reclaim_free_pages` runs.
#[test]
fn new_files_auto_vacuum_and_reopening_writes_nothing() {
    let (_dir, path, mut s) = fresh();
    let pragma = |s: &Storage, name: &str| -> i64 {
        s.sql()
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .expect("pragma")
    };
    assert_eq!(pragma(&s, "page_size"), 2048);
    assert_eq!(pragma(&s, "auto_vacuum"), 2, "incremental");
    batch(
        &mut s,
        "CREATE TABLE b(x BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO b SELECT randomblob(500) FROM n;",
    )
    .expect("insert");
    s.flush().expect("flush");
    let full = pragma(&s, "page_count");
    s.begin_batch().expect("begin");
    s.sql().execute("DELETE FROM b", []).expect("delete");
    assert!(s.reclaim_free_pages().expect("reclaim") > 0);
    s.finish_batch().expect("finish");
    s.commit(true).expect("commit");
    assert!(pragma(&s, "page_count") < full / 2);
    assert_eq!(pragma(&s, "freelist_count"), 0);
    drop(s);
    let wal = std::fs::metadata(files::wal_path(&path)).map_or(0, |m| m.len());
    let s = Storage::open(&path, StorageLimits::default()).expect("reopen");
    drop(s);
    let after = std::fs::metadata(files::wal_path(&path)).map_or(0, |m| m.len());
    assert_eq!(wal, after, "reopening wrote to the WAL");
}
