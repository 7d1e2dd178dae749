//! Backups of a running server (`POST /v1/admin/backup`) and their restore
//! (`roost restore`).
//!
//! A backup is a tar archive of a data directory: `FORMAT`, `catalog.sqlite`,
//! `objects/<class>/<xx>/<id>.sqlite`, and last `BACKUP.json` (when it began,
//! what it holds). Its guarantee: every write acknowledged before the backup
//! began is in it. Each object is copied after its actor has committed every
//! batch acknowledged so far to its file (`Runtime::flush_file`, the admin
//! console's path), with `VACUUM INTO` on a read-only connection of its own:
//! a consistent copy of that object at one moment after the start. Objects
//! are copied one after another while the server keeps serving, so two
//! objects' copies are not from the same instant (objects are independent:
//! no write spans two). The commit log is not needed: everything it holds
//! for an object is in the object's file once flushed.
//!
//! A backup that fails part-way breaks off the HTTP response, and an archive
//! without its closing `BACKUP.json` is refused by `restore`.
//!
//! The copying connection makes a WAL and WAL index beside a file that had
//! none and cannot remove them (it must not checkpoint the actor's WAL):
//! each copied file is handed to the tidier, as an evicted object's is.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::{Body, Bytes};
use rusqlite::{Connection, OpenFlags};
use serde_json::json;

use crate::id::{object_files, ObjectId};
use crate::runtime::Runtime;

/// Bytes handed to the HTTP body at a time.
const CHUNK: usize = 256 * 1024;
/// The manifest, written last: an archive without it is incomplete.
pub(crate) const MANIFEST: &str = "BACKUP.json";
const STAGING_PREFIX: &str = ".backup-";

/// One backup at a time per server.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Held while a backup runs; `None` when one already does.
pub(crate) struct BackupSlot(());

impl BackupSlot {
    pub(crate) fn take() -> Option<BackupSlot> {
        if RUNNING.swap(true, Ordering::AcqRel) {
            // No slot made here: dropped, it would free the running one's.
            return None;
        }
        Some(BackupSlot(()))
    }
}

impl Drop for BackupSlot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Streams a backup of every object and the catalog as a tar archive.
pub(crate) fn stream(runtime: Runtime, slot: BackupSlot) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match write_archive(&handle, &runtime, out) {
            Ok(summary) => tracing::info!("backup done: {summary}"),
            Err(e) => {
                tracing::error!("backup failed: {e:#}");
                let _ =
                    tx.blocking_send(Err(io::Error::other("backup failed (see the server log)")));
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

/// A `Write` that hands full chunks to the response body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Removes its directory when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_archive(
    handle: &tokio::runtime::Handle,
    runtime: &Runtime,
    out: impl Write,
) -> anyhow::Result<String> {
    let started_ms = crate::catalog::now_ms();
    let data = runtime.config().data_dir.clone();
    remove_stale_staging(&data);
    let staging = Staging(data.join(format!("{STAGING_PREFIX}{started_ms}")));
    fs::create_dir(&staging.0).context("cannot create the backup's staging directory")?;
    let mut tar = tar::Builder::new(out);
    let format = format!("roost-data {}\n", crate::data_dir::DATA_FORMAT);
    append_bytes(&mut tar, "FORMAT", format.as_bytes())?;
    let catalog = staging.0.join("catalog.sqlite");
    vacuum_into(&data.join("catalog.sqlite"), &catalog)?;
    tar.append_path_with_name(&catalog, "catalog.sqlite")?;
    fs::remove_file(&catalog)?;
    let (mut copied, mut gone, mut aside) = (0u64, 0u64, 0u64);
    for (rel, id) in object_files(&data)? {
        // An object set aside at start-up (its file damaged) cannot be
        // copied whole; the others still are.
        if crate::commitlog::recovery::quarantine_path(&data, id).exists() {
            tracing::warn!(object = %id, "backup leaves out an object set aside at start-up (its file is damaged)");
            aside += 1;
            continue;
        }
        if let Err(e) = handle.block_on(flush(runtime, id)) {
            bail!("object {id} did not commit to its file: {}", e.message);
        }
        let copy = staging.0.join("object.sqlite");
        let source = data.join(&rel);
        if !source.exists() {
            gone += 1; // deleted since the listing
            continue;
        }
        if let Err(e) = vacuum_into(&source, &copy) {
            // Deleted, or removed unwritten (`runtime/unwritten.rs`), since.
            if !source.exists() {
                let _ = fs::remove_file(&copy);
                gone += 1;
                continue;
            }
            return Err(e);
        }
        // A read-only connection to a file without a WAL makes one (and
        // its 32 KiB index), and may not remove them on close: each backup
        // left two more files beside every idle object, for good.
        runtime.tidy_later(source.clone());
        tar.append_path_with_name(&copy, &rel)?;
        fs::remove_file(&copy)?;
        copied += 1;
    }
    let manifest = json!({
        "started_ms": started_ms,
        "finished_ms": crate::catalog::now_ms(),
        "objects": copied,
        "data_format": crate::data_dir::DATA_FORMAT,
        "roost_version": env!("CARGO_PKG_VERSION"),
    });
    append_bytes(&mut tar, MANIFEST, manifest.to_string().as_bytes())?;
    tar.into_inner()?.flush()?;
    Ok(format!(
        "{copied} objects ({gone} deleted meanwhile, {aside} set aside and left out) in {} ms",
        crate::catalog::now_ms() - started_ms
    ))
}

/// Commits the object's acknowledged batches to its file; a full mailbox is
/// waited out (for up to ~10 s), not failed.
async fn flush(runtime: &Runtime, id: ObjectId) -> Result<(), roost_protocol::ErrorDetail> {
    let mut tries = 0;
    loop {
        match runtime.flush_file(id).await {
            Err(e) if e.code == roost_protocol::ErrorCode::Overloaded && tries < 500 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Staging directories left by a backup that a crash interrupted.
fn remove_stale_staging(data: &Path) {
    let Ok(entries) = fs::read_dir(data) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A consistent copy of the database at `source` (read through its WAL
/// without checkpointing it), compacted.
fn vacuum_into(source: &Path, copy: &Path) -> anyhow::Result<()> {
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", source.display()))?;
    // Closing must never checkpoint or remove the actor's WAL.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let target = copy.to_str().context("staging path is not UTF-8")?;
    conn.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("cannot copy {}", source.display()))?;
    Ok(())
}

fn append_bytes(tar: &mut tar::Builder<impl Write>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(crate::catalog::now_ms().max(0) as u64 / 1000);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
}

/// `roost restore`: unpacks the backup at `from` into `data`, which must not
/// exist or be empty, checks it and makes it durable. Returns a summary.
pub(crate) fn restore(from: &Path, data: &Path) -> anyhow::Result<String> {
    if fs::read_dir(data).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty: restore into a new directory",
            data.display()
        );
    }
    let parent = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = data
        .file_name()
        .context("--data must name a directory")?
        .to_string_lossy();
    let work = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let result = unpack_and_check(from, &work);
    if result.is_err() {
        let _ = fs::remove_dir_all(&work);
    }
    let (objects, manifest) = result?;
    if data.exists() {
        fs::remove_dir(data)?; // empty, checked above
    }
    fs::rename(&work, data)
        .with_context(|| format!("cannot move the restored data to {}", data.display()))?;
    fs::File::open(&parent)?.sync_all()?;
    Ok(format!(
        "restored {objects} objects into {} (backup begun at {} ms since the epoch)",
        data.display(),
        manifest["started_ms"]
    ))
}

fn unpack_and_check(from: &Path, work: &Path) -> anyhow::Result<(u64, serde_json::Value)> {
    let file = fs::File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
    fs::create_dir(work)?;
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    // `unpack` refuses entries that would land outside `work`.
    archive
        .unpack(work)
        .with_context(|| format!("{} is not a readable backup archive", from.display()))?;
    let manifest: serde_json::Value = fs::read(work.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .with_context(|| {
            format!(
                "{} is incomplete: it has no {MANIFEST} (the backup broke off)",
                from.display()
            )
        })?;
    crate::data_dir::check_format(work)?;
    let mut objects = 0;
    for (rel, _) in object_files(work)? {
        quick_check(&work.join(&rel))?;
        objects += 1;
    }
    quick_check(&work.join("catalog.sqlite"))?;
    if Some(objects) != manifest["objects"].as_u64() {
        bail!(
            "{} holds {objects} objects, its {MANIFEST} says {}",
            from.display(),
            manifest["objects"]
        );
    }
    fs::remove_file(work.join(MANIFEST))?;
    sync_tree(work)?;
    Ok((objects, manifest))
}

fn quick_check(path: &Path) -> anyhow::Result<()> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        bail!("{} is damaged: {verdict}", path.display());
    }
    Ok(())
}

/// Fsyncs every file and directory under `dir`, then `dir`.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path)?.sync_all()?;
        }
    }
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::BackupSlot;

    /// A request refused while a backup runs leaves that backup the only
    /// one: the refusal must not free the slot. (It did: the slot it made
    /// and dropped freed it, so the next request ran a second backup at
    /// once, whose removal of stale staging folders broke the first.)
    #[test]
    fn a_refused_backup_leaves_the_running_one_alone() {
        let running = BackupSlot::take().expect("the first backup runs");
        assert!(BackupSlot::take().is_none(), "a second is refused");
        assert!(BackupSlot::take().is_none(), "and so is a third");
        drop(running);
        assert!(BackupSlot::take().is_some(), "free once it ends");
    }
}
