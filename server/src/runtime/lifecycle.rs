//! Starting an object (storage opened, constructor run) and closing it when
//! its actor stops.
//!
//! Decision: constructors commit durably in the object's own file, not
//! through the log — they run rarely and usually migrate (DDL, which the
//! log does not carry). A constructor that only read needs no fsync.
//! A new object file is counted against `--max-objects` before it exists
//! (refused with 507 past the cap) and registered in the catalog, durably,
//! before it exists (`Catalog::register_durably`); an unwritten one is
//! registered again at each start (a file from before rows were durable,
//! or one a power loss brought back after its removal: `unwritten.rs`). A file
//! that cannot be opened for want of disk room or of a file descriptor is
//! refused as such (507, 503), not as a broken object: both pass.

use std::panic::AssertUnwindSafe;

use roost_protocol::{ErrorCode, ErrorDetail};

use super::output::Output;
use super::state::Live;
use super::{error, Runtime};
use crate::ctx::Ctx;
use crate::id::{object_path, ObjectKey};
use crate::object::DurableObject;
use crate::storage::{Storage, StorageError, WAL_KEEP_BYTES};

/// Why an object could not open or set up its file, as the caller sees
/// it: a full disk is 507 `insufficient_storage` (as for any write) and no
/// free file descriptor is 503 `overloaded` — both pass without a restart,
/// and the next command tries again; anything else is `object_broken`.
fn broken(e: StorageError) -> ErrorDetail {
    if is_disk_full(&e) {
        return error(
            ErrorCode::InsufficientStorage,
            format!(
                "the disk has no room for the object's file; it starts once there is room ({e})"
            ),
        );
    }
    if is_out_of_descriptors(&e) {
        return error(
            ErrorCode::Overloaded,
            format!(
                "the server has no file descriptor free to open the object's file \
                 (its open-file limit); try again ({e})"
            ),
        );
    }
    error(
        ErrorCode::ObjectBroken,
        format!("cannot open object storage: {e}"),
    )
}

/// SQLite's "database or disk is full", or ENOSPC / EDQUOT from the file
/// system.
fn is_disk_full(e: &StorageError) -> bool {
    match e {
        StorageError::DatabaseFull { .. } | StorageError::Full => true,
        StorageError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::DiskFull
        }
        StorageError::Io(io) => matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
        _ => false,
    }
}

/// Descriptors asked for to tell a full table from another failed open.
const DESCRIPTOR_PROBES: usize = 8;

/// EMFILE / ENFILE. SQLite reports a failed `open` only as "unable to open
/// database file" (`SQLITE_CANTOPEN`, without its errno), after closing what
/// it had opened (the database, WAL, shared memory): so as many descriptors
/// as an object takes, and a few more, are asked for here, and refused for
/// the same reason if that was it.
fn is_out_of_descriptors(e: &StorageError) -> bool {
    let exhausted =
        |io: &std::io::Error| matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    match e {
        StorageError::Io(io) => exhausted(io),
        StorageError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::CannotOpen =>
        {
            let mut held = Vec::with_capacity(DESCRIPTOR_PROBES);
            for _ in 0..DESCRIPTOR_PROBES {
                match std::fs::File::open("/") {
                    Ok(f) => held.push(f),
                    Err(io) => return exhausted(&io),
                }
            }
            false
        }
        _ => false,
    }
}

/// Opens storage and runs the constructor in a durable transaction of its own.
pub(super) fn start<T: DurableObject>(
    key: &ObjectKey,
    runtime: &Runtime,
) -> Result<Live<T>, ErrorDetail> {
    if !runtime.may_run(&key.id) {
        return Err(error(
            ErrorCode::ObjectMoved,
            "another node owns the object now; retry",
        ));
    }
    let data_dir = &runtime.config().data_dir;
    let aside = crate::commitlog::recovery::quarantine_path(data_dir, key.id);
    if aside.exists() {
        return Err(error(
            ErrorCode::ObjectBroken,
            format!(
                "at start-up the object's file {} could not take its logged writes; they are \
                 kept in the data directory's quarantine folder ({}). Put a good copy of the file in place (from a backup) and restart \
                 Roost to replay them into it, or delete the object (DELETE /v1/admin/objects/{}/{}) to give it up",
                object_path(data_dir, &key.class, key.id).display(),
                aside.display(),
                key.class,
                key.name
            ),
        ));
    }
    let created = !object_path(data_dir, &key.class, key.id).exists();
    let mut ctx = open(key, runtime)?;
    runtime
        .metrics()
        .constructions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let object = match std::panic::catch_unwind(AssertUnwindSafe(|| T::new(&mut ctx))) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            ctx.storage.rollback();
            return Err(error(
                ErrorCode::ObjectBroken,
                format!("constructor failed: {e}"),
            ));
        }
        Err(_) => {
            ctx.storage.rollback();
            return Err(error(ErrorCode::ObjectBroken, "constructor panicked"));
        }
    };
    let wrote = commit_constructor(&mut ctx)?;
    if let Some(cluster) = runtime.cluster().filter(|_| wrote || created) {
        // The new object's file, or what its constructor changed, is the
        // log's starting point: the constructor's writes are not replayable.
        let path = object_path(&runtime.config().data_dir, &key.class, key.id);
        if let Err(e) = cluster.snapshot_blocking(key, ctx.storage.commit_seq(), &path) {
            return Err(error(ErrorCode::ObjectMoved, format!("{e}")));
        }
    }
    ctx.storage.release_memory();
    Ok(Live { object, ctx })
}

/// Opens the object's file (counting and registering a new one) and begins
/// the constructor's batch.
fn open(key: &ObjectKey, runtime: &Runtime) -> Result<Ctx, ErrorDetail> {
    let config = runtime.config();
    let path = object_path(&config.data_dir, &key.class, key.id);
    let created = !path.exists();
    if created {
        runtime.admit_new_object()?;
        // Listed before the file exists: the catalog never misses a file.
        if let Err(e) = runtime
            .catalog()
            .register_durably(key, crate::catalog::now_ms())
        {
            runtime.object_removed();
            return Err(match e {
                crate::catalog::CatalogError::Full => broken(StorageError::Full),
                e => error(
                    ErrorCode::Storage,
                    format!("cannot list the new object in the catalog: {e}"),
                ),
            });
        }
    }
    let mut storage = match Storage::open(&path, config.storage.clone()) {
        Ok(storage) => storage,
        Err(e) => {
            if created && !path.exists() {
                runtime.object_removed();
                runtime.catalog().forget(key.id);
            }
            return Err(broken(e));
        }
    };
    storage.track_unflushed(runtime.log().unflushed(), key.id);
    // An unwritten file whose row went (a power loss undid its removal's
    // unlink, or a data directory from before rows were durable): the
    // upsert lists it again.
    if !created && storage.is_unwritten() {
        runtime.catalog().register(key, crate::catalog::now_ms());
    }
    storage.begin_batch().map_err(broken)?;
    Ok(Ctx::new(key.clone(), storage, runtime.clone()))
}

/// Commits what the constructor wrote and fsyncs the object's own files.
/// Returns whether it wrote. An unwritten file stays so (its mark follows)
/// unless the constructor left an alarm or emitted a feed event: those are
/// kept as any batch's are (`storage/unwritten.rs`).
fn commit_constructor(ctx: &mut Ctx) -> Result<bool, ErrorDetail> {
    let commit = ctx.storage.finish_batch().and_then(|changes| {
        let wrote = changes.is_some();
        let emitted = ctx.outputs.iter().any(|o| matches!(o, Output::Feed(_)));
        let keeps_unwritten = !emitted && ctx.storage.alarm()?.is_none();
        ctx.storage.commit_constructor(wrote, keeps_unwritten)?;
        if wrote {
            crate::sys::blocking(|| ctx.storage.sync_files())?;
        }
        Ok(wrote)
    });
    commit.map_err(|e| {
        ctx.storage.rollback();
        broken(e)
    })
}

/// Closes a stopping actor's object, off the async worker: its WAL stays in
/// place (no fsync), unless it is large — then it is folded into the
/// database first. A lost storage is dropped as it is (SQLite drops the
/// refused transaction). The open transaction is committed before this.
pub(super) fn close<T>(live: Option<Live<T>>) {
    let mut live = live;
    crate::sys::blocking(|| {
        if let Some(l) = live
            .as_mut()
            .filter(|l| l.ctx.storage.lost().is_none() && !l.ctx.storage.is_suspended())
            .filter(|l| l.ctx.storage.wal_file_bytes() > WAL_KEEP_BYTES)
        {
            if let Err(e) = l.ctx.storage.checkpoint_wal() {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
        drop(live)
    });
}
