//! Giving memory back to the system after a flood of connections.
//!
//! glibc's allocator keeps what its arenas once held: after a thousand
//! connections with stuck answers close, the process would stay at the
//! flood's size for good. `malloc_trim` returns the free pages. musl's
//! allocator (the static release binary) returns freed memory by itself, so
//! there this does nothing.

/// Return free heap pages to the system. Takes each arena's lock while it
/// walks it: call it after a flood, not per request.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: malloc_trim only walks and releases the allocator's own free
        // chunks under its locks; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
