//! SQLite's own heap, apart from glibc's (`SQLITE_CONFIG_MALLOC`).
//!
//! A loaded object's SQLite connection holds ~35 KiB in a few hundred
//! blocks (schema, prepared statements, page cache, lookaside). In glibc's
//! heap they sat between the long-lived allocations of the sockets that
//! connected while the object was loaded; freed at eviction, they left
//! holes of a few hundred bytes that glibc could neither fill with sockets
//! nor hand back (`trim_heap` releases whole free pages only): after 1,000
//! documents hibernated with 10,000 sockets, ~40 MB of such holes stayed
//! resident. Here every block lives in a 64 KiB *slab* of blocks of one
//! size class, mapped for SQLite alone; a slab whose last block is freed is
//! unmapped, so once the objects are evicted their SQLite memory is gone.
//!
//! A block's slab is its address rounded down to 64 KiB (slabs are mapped
//! 64 KiB-aligned); the slab's header says its block size. Size classes
//! are multiples of 16 up to 128 bytes, then four per doubling (at most a
//! quarter wasted) up to 16 KiB; a larger block gets a mapping of its own
//! with the same header (eight freed ones are kept for reuse, until
//! `trim`). Never-used blocks are handed out from a bump
//! offset, so a slab's untouched pages cost nothing. One lock for all:
//! SQLite allocates little per statement (lookaside takes the small ones).

use std::ptr;
use std::sync::Mutex;

const SLAB: usize = 64 * 1024;
/// Bytes before the first block: the header, rounded to keep blocks 16-aligned.
const HEADER: usize = 64;
/// Largest block kept in slabs; larger ones are mapped alone.
const MAX_SMALL: usize = 16 * 1024;
/// Size classes: multiples of 16 up to 128, then four per doubling.
const CLASSES: usize = 8 + 4 * 7;
/// Empty slabs kept mapped for reuse instead of unmapped at once.
const SPARE_SLABS: usize = 4;
/// Freed large blocks kept mapped for reuse: SQLite takes one of ~20 KiB
/// or more for most commits (B-tree balancing), and mapping it afresh
/// each time cost half the durable-RPC throughput in syscalls and page
/// faults.
const SPARE_LARGE: usize = 8;

/// The start of every slab and of every large block's mapping.
#[repr(C)]
struct Slab {
    /// Size of each block; 0 for a large block's own mapping.
    block: usize,
    /// Length of the mapping.
    len: usize,
    /// Blocks handed out and not freed.
    used: usize,
    /// Offset of the first never-used byte.
    bump: usize,
    /// Freed blocks, linked through their first word.
    free: *mut u8,
    /// Links of its class's list of slabs with room.
    next: *mut Slab,
    prev: *mut Slab,
    /// Whether it is in that list.
    listed: bool,
}

const _: () = assert!(std::mem::size_of::<Slab>() <= HEADER);

struct Heap {
    /// Per class, the slabs with a free block.
    room: [*mut Slab; CLASSES],
    spare: Vec<*mut Slab>,
    /// Freed large blocks' mappings (header intact, `len` set).
    spare_large: Vec<*mut Slab>,
    /// Slabs and large blocks mapped now.
    mapped: usize,
}

// SAFETY: the raw pointers are to mappings only this module touches, and
// always under the lock.
unsafe impl Send for Heap {}

static HEAP: Mutex<Heap> = Mutex::new(Heap {
    room: [ptr::null_mut(); CLASSES],
    spare: Vec::new(),
    spare_large: Vec::new(),
    mapped: 0,
});

fn lock() -> std::sync::MutexGuard<'static, Heap> {
    HEAP.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The class of a request of `n` bytes (`1..=MAX_SMALL`) and its block size.
fn class_of(n: usize) -> (usize, usize) {
    let n = n.max(1);
    if n <= 128 {
        let size = n.div_ceil(16) * 16;
        return (size / 16 - 1, size);
    }
    // 129..=256 is doubling 0, in steps of 32; and so on.
    let doubling = (usize::BITS - (n - 1).leading_zeros()) as usize - 8;
    let step = 32 << doubling;
    let size = n.div_ceil(step) * step;
    let index = (size - (128 << doubling)) / step - 1;
    (8 + doubling * 4 + index, size)
}

/// The block size SQLite gets for a request of `n` bytes.
pub(super) fn rounded(n: usize) -> usize {
    if n > MAX_SMALL {
        (HEADER + n).next_multiple_of(page()) - HEADER
    } else {
        class_of(n).1
    }
}

fn page() -> usize {
    super::page_size()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}

/// Maps `len` bytes (a multiple of the page size) at a 64 KiB boundary.
fn map_aligned(len: usize) -> *mut Slab {
    // SAFETY: an anonymous private mapping; the parts outside the aligned
    // range are unmapped again, and only that range is used.
    unsafe {
        let raw = libc::mmap(
            ptr::null_mut(),
            len + SLAB,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return ptr::null_mut();
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(SLAB);
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = SLAB - (aligned - start);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        aligned as *mut Slab
    }
}

fn unmap(slab: *mut Slab, len: usize) {
    // SAFETY: `slab` is a mapping of `len` bytes from `map_aligned`, no
    // longer referenced.
    unsafe {
        libc::munmap(slab.cast(), len);
    }
}

/// A block of at least `n` bytes, 16-aligned; null if out of memory.
pub(super) fn alloc(n: usize) -> *mut u8 {
    if n > MAX_SMALL {
        let len = HEADER + rounded(n);
        let reused = {
            let mut heap = lock();
            // SAFETY: spare large mappings are live, under the lock.
            let fit = heap
                .spare_large
                .iter()
                .position(|s| unsafe { (**s).len } == len);
            fit.map(|i| heap.spare_large.swap_remove(i))
        };
        if let Some(slab) = reused {
            return slab.cast::<u8>().wrapping_add(HEADER);
        }
        let slab = map_aligned(len);
        if slab.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a fresh mapping of `len` bytes, header at its start.
        unsafe {
            slab.write(Slab {
                block: 0,
                len,
                used: 1,
                bump: len,
                free: ptr::null_mut(),
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                listed: false,
            });
        }
        lock().mapped += 1;
        return slab.cast::<u8>().wrapping_add(HEADER);
    }
    let (class, size) = class_of(n);
    let mut heap = lock();
    let mut slab = heap.room[class];
    if slab.is_null() {
        slab = heap.new_slab(size);
        if slab.is_null() {
            return ptr::null_mut();
        }
        heap.link(class, slab);
    }
    // SAFETY: `slab` is a live slab of this class with room, under the lock.
    unsafe {
        let s = &mut *slab;
        let block = if s.free.is_null() {
            let b = slab.cast::<u8>().add(s.bump);
            s.bump += size;
            b
        } else {
            let b = s.free;
            s.free = b.cast::<*mut u8>().read();
            b
        };
        s.used += 1;
        if s.free.is_null() && s.bump + size > SLAB {
            heap.unlink(class, slab);
        }
        block
    }
}

/// Frees a block from `alloc`.
pub(super) fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    let slab = slab_of(p);
    // SAFETY: `p` came from `alloc`, so its slab's header is live; the
    // slab's fields change only under the lock.
    unsafe {
        if (*slab).block == 0 {
            let mut heap = lock();
            if heap.spare_large.len() < SPARE_LARGE {
                heap.spare_large.push(slab);
                return;
            }
            heap.mapped -= 1;
            drop(heap);
            unmap(slab, (*slab).len);
            return;
        }
        let mut heap = lock();
        let s = &mut *slab;
        p.cast::<*mut u8>().write(s.free);
        s.free = p;
        s.used -= 1;
        let (class, _) = class_of(s.block);
        if s.used == 0 {
            if s.listed {
                heap.unlink(class, slab);
            }
            heap.retire(slab);
        } else if !s.listed {
            heap.link(class, slab);
        }
    }
}

/// The usable size of a block from `alloc`.
pub(super) fn size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    let slab = slab_of(p);
    // SAFETY: as in `free`; `block` and `len` never change while it is used.
    unsafe {
        match (*slab).block {
            0 => (*slab).len - HEADER,
            block => block,
        }
    }
}

/// Resizes a block from `alloc`, moving it unless it already fits.
pub(super) fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    if p.is_null() {
        return alloc(n);
    }
    let old = size(p);
    if n <= old && rounded(n) == old {
        return p;
    }
    let q = alloc(n);
    if !q.is_null() {
        // SAFETY: both blocks are live and at least min(old, n) long.
        unsafe { ptr::copy_nonoverlapping(p, q, old.min(n)) };
        free(p);
    }
    q
}

fn slab_of(p: *mut u8) -> *mut Slab {
    ((p as usize) & !(SLAB - 1)) as *mut Slab
}

impl Heap {
    fn new_slab(&mut self, block: usize) -> *mut Slab {
        let slab = match self.spare.pop() {
            Some(s) => s,
            None => {
                let s = map_aligned(SLAB);
                if s.is_null() {
                    return s;
                }
                self.mapped += 1;
                s
            }
        };
        // SAFETY: a slab no block lives in, header at its start.
        unsafe {
            slab.write(Slab {
                block,
                len: SLAB,
                used: 0,
                bump: HEADER,
                free: ptr::null_mut(),
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                listed: false,
            });
        }
        slab
    }

    /// An empty slab: kept as a spare, or unmapped.
    fn retire(&mut self, slab: *mut Slab) {
        if self.spare.len() < SPARE_SLABS {
            self.spare.push(slab);
        } else {
            unmap(slab, SLAB);
            self.mapped -= 1;
        }
    }

    fn link(&mut self, class: usize, slab: *mut Slab) {
        // SAFETY: live slabs, under the lock.
        unsafe {
            (*slab).prev = ptr::null_mut();
            (*slab).next = self.room[class];
            if let Some(head) = self.room[class].as_mut() {
                head.prev = slab;
            }
            (*slab).listed = true;
        }
        self.room[class] = slab;
    }

    fn unlink(&mut self, class: usize, slab: *mut Slab) {
        // SAFETY: live slabs in this class's list, under the lock.
        unsafe {
            let s = &mut *slab;
            match s.prev.as_mut() {
                Some(prev) => prev.next = s.next,
                None => self.room[class] = s.next,
            }
            if let Some(next) = s.next.as_mut() {
                next.prev = s.prev;
            }
            s.next = ptr::null_mut();
            s.prev = ptr::null_mut();
            s.listed = false;
        }
    }
}

/// Unmaps the spare slabs and large blocks (once objects were evicted).
pub(super) fn trim() {
    let (slabs, large) = {
        let mut heap = lock();
        let slabs = std::mem::take(&mut heap.spare);
        let large = std::mem::take(&mut heap.spare_large);
        heap.mapped -= slabs.len() + large.len();
        (slabs, large)
    };
    for slab in slabs {
        unmap(slab, SLAB);
    }
    for slab in large {
        // SAFETY: a spare large mapping, no longer listed anywhere.
        let len = unsafe { (*slab).len };
        unmap(slab, len);
    }
}

/// Slabs, spares and large blocks mapped now (for tests).
#[cfg(test)]
fn mapped() -> usize {
    lock().mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_with_at_most_a_quarter_wasted() {
        let mut last = class_of(1);
        for n in 1..=MAX_SMALL {
            let (class, size) = class_of(n);
            assert!(class < CLASSES, "{n}: class {class}");
            assert!(size >= n && size % 16 == 0, "{n}: {size}");
            assert!(n <= 16 || size - n <= n / 4 + 16, "{n}: {size}");
            assert!(class >= last.0 && (class > last.0 || size == last.1));
            assert_eq!(class_of(size), (class, size));
            last = (class, size);
        }
        assert_eq!(class_of(MAX_SMALL), (CLASSES - 1, MAX_SMALL));
    }

    /// Blocks keep what was written to them through frees and reallocs of
    /// others, and every slab is unmapped once every block is freed (but
    /// the spares). One test, as it counts the process-wide mappings.
    #[test]
    fn blocks_hold_their_bytes_and_freed_slabs_are_unmapped() {
        let before = mapped();
        let mut blocks: Vec<(*mut u8, usize, u8)> = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000u32 {
            let r = next();
            if r % 3 != 0 || blocks.is_empty() {
                let n = match r % 100 {
                    0 => 20_000 + (r >> 8) as usize % 60_000,
                    1..=30 => 1 + (r >> 8) as usize % 4096,
                    _ => 1 + (r >> 8) as usize % 300,
                };
                let p = alloc(n);
                assert!(!p.is_null());
                assert_eq!(p as usize % 16, 0);
                assert!(size(p) >= n);
                let fill = round as u8;
                // SAFETY: a live block of at least `n` bytes.
                unsafe { ptr::write_bytes(p, fill, n) };
                blocks.push((p, n, fill));
            } else {
                let i = (r >> 8) as usize % blocks.len();
                let (p, n, fill) = blocks.swap_remove(i);
                // SAFETY: a live block of `n` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(p, n) };
                assert!(bytes.iter().all(|b| *b == fill), "block of {n} overwritten");
                if r % 5 == 0 {
                    let m = 1 + (r >> 20) as usize % 3000;
                    let q = realloc(p, m);
                    // SAFETY: the moved block keeps its first min(n, m) bytes.
                    let kept = unsafe { std::slice::from_raw_parts(q, n.min(m)) };
                    assert!(kept.iter().all(|b| *b == fill));
                    // SAFETY: a live block of at least `m` bytes.
                    unsafe { ptr::write_bytes(q, fill, m) };
                    blocks.push((q, m, fill));
                } else {
                    free(p);
                }
            }
        }
        assert!(mapped() > before);
        for (p, _, _) in blocks {
            free(p);
        }
        assert!(
            mapped() <= before + SPARE_SLABS + SPARE_LARGE,
            "{} mappings left",
            mapped()
        );
        trim();
        assert!(mapped() <= before, "{} mappings left after trim", mapped());
    }
}
