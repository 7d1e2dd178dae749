//! The log's segment files, `<data>/log/<n:016x>.log`, and the spare
//! thread that makes the next one ahead of the writer.
//!
//! The next segment is always made ahead of time (created, stamped with the
//! magic, zero-filled to twice what the last sealed segment held — 256 KiB
//! to 4 MiB —, fsynced with its directory entry), so sealing is a swap of
//! file handles: creating a file and fsyncing a directory on a busy disk
//! took up to hundreds of milliseconds, and every object's commits waited
//! behind it. Group commits then overwrite allocated blocks, so `fdatasync`
//! need not write the inode; a segment that outgrows its room is appended
//! to. Zeros after the last record are unused room, not damage (`record.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::record::SEGMENT_MAGIC;

/// The path of segment `n` in the log directory `dir`.
pub(crate) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016x}.log"))
}

/// Segment numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".log") {
            if let Ok(n) = u64::from_str_radix(hex, 16) {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Most room written as zeros into a new segment. Overwriting blocks that
/// are already allocated and on disk lets `fdatasync` skip the inode (the
/// file's size does not change): measured ~25% faster per group commit
/// (measured: git log -p docs/BENCHMARKS.md). A segment that outgrows its room is appended to.
pub(super) const PREALLOCATED_BYTES: usize = 4 * 1024 * 1024;

/// Room is written in chunks of this size, and never less than one.
pub(super) const ROOM_CHUNK: usize = 256 * 1024;

/// The room for the next segment: twice what the last sealed one held
/// (within [`ROOM_CHUNK`] and [`PREALLOCATED_BYTES`]). A server sealing a
/// trickle of writes every few seconds would otherwise write 4 MiB of
/// zeros, and fsync them, at every seal (about 70 GB a day at one seal
/// every 5 s), and a log group waited behind each of those writes.
pub(super) fn room_after(sealed_bytes: u64) -> usize {
    let want = usize::try_from(sealed_bytes.saturating_mul(2)).unwrap_or(PREALLOCATED_BYTES);
    want.div_ceil(ROOM_CHUNK)
        .saturating_mul(ROOM_CHUNK)
        .clamp(ROOM_CHUNK, PREALLOCATED_BYTES)
}

/// Creates segment `n`: the magic, then `room` bytes of zeros (rounded to
/// [`ROOM_CHUNK`]), all fsynced with the directory entry. The returned file
/// is positioned right after the magic. If that fails (a full disk), the
/// half-made file is removed, so a later attempt can make it again.
pub(super) fn open_segment(dir: &Path, n: u64, room: usize) -> std::io::Result<File> {
    let path = segment_path(dir, n);
    let made = make_segment(dir, &path, room);
    if made.is_err() {
        let _ = fs::remove_file(&path);
    }
    made
}

fn make_segment(dir: &Path, path: &Path, room: usize) -> std::io::Result<File> {
    let mut file = OpenOptions::new().create_new(true).write(true).open(path)?;
    file.write_all(SEGMENT_MAGIC)?;
    let zeros = vec![0u8; ROOM_CHUNK];
    for _ in 0..room.div_ceil(ROOM_CHUNK).max(1) {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    file.seek(SeekFrom::Start(SEGMENT_MAGIC.len() as u64))?;
    Ok(file)
}

/// Makes segments `n`, `n + 1`, … ahead of the writer, one at a time (each
/// with the `room` the writer asked for when it took the one before), until
/// the writer is gone; a spare it never took is removed.
pub(super) fn make_spares(
    dir: &Path,
    mut n: u64,
    tx: mpsc::SyncSender<(u64, File)>,
    room: &AtomicUsize,
) {
    loop {
        let file = match open_segment(dir, n, room.load(Ordering::Acquire)) {
            Ok(file) => file,
            Err(e) => {
                tracing::error!(error = %e, segment = n, "cannot make the next commit log segment ahead; the writer will make it");
                return;
            }
        };
        if tx.send((n, file)).is_err() {
            let _ = fs::remove_file(segment_path(dir, n));
            return;
        }
        n += 1;
    }
}
