//! Thin wrappers over the Linux calls std does not offer: raising the
//! open-file limit (each live object holds three descriptors — database,
//! WAL, shared-memory index —, each socket one), glibc's `malloc_trim`, and
//! the `sysconf` values the `process_*` metrics need, and SQLite's own heap
//! (`sqlite_heap`).
#![allow(unsafe_code)]

use std::io;

mod sqlite_heap;

/// Raises the soft limit on open files to the hard limit; returns the new limit.
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above; we only raise the soft limit up to the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Clock ticks per second, the unit of CPU times in `/proc` (`_SC_CLK_TCK`).
pub(crate) fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf only reads a system constant.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|n| *n > 0)
}

/// The memory page size, the unit of resident memory in `/proc`.
pub(crate) fn page_size() -> Option<u64> {
    // SAFETY: sysconf only reads a system constant.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|n| *n > 0)
}

/// Hands free heap pages back to the OS, including pages inside glibc's
/// arenas that a plain `free` keeps (they sit between live allocations, such
/// as the sockets of objects that woke up and went back to sleep). Returns
/// whether memory was released; does nothing off glibc.
pub(crate) fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        sqlite_heap::trim();
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Caps glibc's malloc arenas at `n`, unless `MALLOC_ARENA_MAX` is set (then
/// glibc already applied it). Call before other threads start. Returns
/// whether the cap was set; does nothing off glibc.
///
/// glibc gives each thread that allocates while another holds its arena a
/// new arena, up to 8 per core. The object actors run their SQLite work
/// through `block_in_place`, which hands the async worker to another thread,
/// so socket tasks end up allocated in every one of those arenas, each with
/// its own partly used pages: idle sockets cost ~0.5 KiB more each.
pub(crate) fn limit_malloc_arenas(n: usize) -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let n = libc::c_int::try_from(n.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes a malloc parameter.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = n;
        false
    }
}

/// Runs blocking work (an fsync, a checkpoint) without stalling the other
/// tasks of this worker thread, where the runtime allows it.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Gives SQLite a heap of its own (`sqlite_heap`), apart from glibc's that
/// the sockets live in. Call before SQLite is first used, while the
/// process has one thread (`sqlite3_config` is not thread-safe); returns
/// whether SQLite took it (it refuses once initialized).
pub(crate) fn sqlite_heap_apart() -> bool {
    use rusqlite::ffi;
    use std::os::raw::{c_int, c_void};
    fn len(n: c_int) -> usize {
        usize::try_from(n).unwrap_or(0)
    }
    fn int(n: usize) -> c_int {
        c_int::try_from(n).unwrap_or(c_int::MAX)
    }
    unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
        sqlite_heap::alloc(len(n)).cast()
    }
    unsafe extern "C" fn x_free(p: *mut c_void) {
        sqlite_heap::free(p.cast());
    }
    unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
        sqlite_heap::realloc(p.cast(), len(n)).cast()
    }
    unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
        int(sqlite_heap::size(p.cast()))
    }
    unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
        int(sqlite_heap::rounded(len(n)))
    }
    unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
        ffi::SQLITE_OK
    }
    unsafe extern "C" fn x_shutdown(_: *mut c_void) {}
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(x_malloc),
        xFree: Some(x_free),
        xRealloc: Some(x_realloc),
        xSize: Some(x_size),
        xRoundup: Some(x_roundup),
        xInit: Some(x_init),
        xShutdown: Some(x_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to a methods struct,
    // which SQLite copies; the functions only touch `sqlite_heap`'s blocks.
    unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) == ffi::SQLITE_OK }
}
