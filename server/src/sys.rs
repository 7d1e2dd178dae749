//! Thin wrappers over the Linux calls std does not offer: raising the
//! open-file limit (each live object holds three descriptors — database,
//! WAL, shared-memory index —, each socket one) and glibc's `malloc_trim`.
#![allow(unsafe_code)]

use std::io;

/// Raises the soft limit on open files to the hard limit; returns the new limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
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

/// Hands free heap pages back to the OS, including pages inside glibc's
/// arenas that a plain `free` keeps (they sit between live allocations, such
/// as the sockets of objects that woke up and went back to sleep). Returns
/// whether memory was released; does nothing off glibc.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Runs blocking work (an fsync, a checkpoint) without stalling the other
/// tasks of this worker thread, where the runtime allows it.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
