//! Starting an object (storage opened, constructor run) and closing it when
//! its actor stops.
//!
//! Decision: constructors commit durably in the object's own file, not
//! through the log — they run rarely and usually migrate (DDL, which the
//! log does not carry). A constructor that only read needs no fsync.
//! A new object file is counted against `--max-objects` before it exists
//! (refused with 507 past the cap) and registered in the catalog.

use std::panic::AssertUnwindSafe;

use roost_protocol::{ErrorCode, ErrorDetail};

use super::state::Live;
use super::{error, Runtime};
use crate::ctx::Ctx;
use crate::id::{object_path, ObjectKey};
use crate::object::DurableObject;
use crate::storage::{Storage, StorageError, WAL_KEEP_BYTES};

fn broken(e: StorageError) -> ErrorDetail {
    error(
        ErrorCode::ObjectBroken,
        format!("cannot open object storage: {e}"),
    )
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
    let created = !object_path(&runtime.config().data_dir, &key.class, key.id).exists();
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
    }
    let mut storage = match Storage::open(&path, config.storage.clone()) {
        Ok(storage) => storage,
        Err(e) => {
            if created && !path.exists() {
                runtime.object_removed();
            }
            return Err(broken(e));
        }
    };
    storage.track_unflushed(runtime.log().unflushed(), key.id);
    if created {
        runtime.catalog().register(key, crate::catalog::now_ms());
    }
    storage.begin_batch().map_err(broken)?;
    Ok(Ctx::new(key.clone(), storage, runtime.clone()))
}

/// Commits what the constructor wrote and fsyncs the object's own files.
/// Returns whether it wrote.
fn commit_constructor(ctx: &mut Ctx) -> Result<bool, ErrorDetail> {
    let commit = ctx.storage.finish_batch().and_then(|changes| {
        let wrote = changes.is_some();
        ctx.storage.commit(wrote)?;
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
