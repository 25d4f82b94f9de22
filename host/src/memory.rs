//! Giving memory back to the system: after a flood of connections, and once
//! start-up is over.
//!
//! glibc's allocator keeps what its arenas once held: after a thousand
//! connections with stuck answers close, the process would stay at the
//! flood's size for good. `malloc_trim` returns the free pages. musl's
//! allocator (the static release binary) returns freed memory by itself, so
//! there this does nothing.
//!
//! Start-up touches code and heap that serving never needs again: parsing the
//! config, connecting, compiling components with Cranelift when they are not
//! cached, and reading whole cache entries to check their digests. Once it is
//! over, [`release_startup`] returns the heap that compiling freed and pages
//! out the read-only file mappings (the executable, cached components), so
//! only the pages the serving path touches again come back (from the page
//! cache, as minor faults). Mapped pages count in the working set the kubelet sees, so
//! this is memory a pod really gives back, not only a smaller RSS figure.

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

/// Once start-up is over: give back the heap it freed and the pages of
/// read-only file mappings it touched. Best effort: a kernel without
/// `MADV_PAGEOUT` (before Linux 5.4) keeps the pages, and pages another
/// process maps too (a shared library's) are left alone by the kernel.
pub fn release_startup() {
    trim();
    #[cfg(target_os = "linux")]
    page_out_file_mappings();
}

/// `MADV_PAGEOUT` on every read-only mapping of a file: code, read-only data
/// and unwind tables of the executable, and cached components. Never a
/// writable or anonymous one.
#[cfg(target_os = "linux")]
fn page_out_file_mappings() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for (start, end) in maps.lines().filter_map(read_only_file_mapping) {
        #[allow(unsafe_code)]
        // SAFETY: the range is a whole mapping of this process, read-only and
        // backed by a file; MADV_PAGEOUT only reclaims its pages, which fault
        // back in from the file with the same contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
        }
    }
}

/// The address range of a `/proc/self/maps` line if it maps a file read-only.
#[cfg(target_os = "linux")]
fn read_only_file_mapping(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    // Then offset, device and inode, and the path, which may hold spaces.
    let path = line
        .splitn(6, char::is_whitespace)
        .nth(5)
        .map_or("", str::trim_start);
    // `[heap]`, `[stack]`, `[vdso]` and anonymous mappings have no file.
    if perms.contains('w') || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some((
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_paged_out() {
        let line = |perms: &str, path: &str| {
            format!("5654efb1e000-5654f013e000 {perms} 00000000 fe:01 1234     {path}")
        };
        assert_eq!(
            read_only_file_mapping(&line("r-xp", "/usr/bin/probe host")),
            Some((0x5654efb1e000, 0x5654f013e000))
        );
        assert!(read_only_file_mapping(&line("r--p", "/var/cache/probehost/a.cwasm")).is_some());
        assert_eq!(
            read_only_file_mapping(&line("rw-p", "/usr/bin/probehost")),
            None
        );
        assert_eq!(read_only_file_mapping(&line("r-xp", "[vdso]")), None);
        assert_eq!(read_only_file_mapping(&line("r--p", "")), None);
        assert_eq!(read_only_file_mapping(&line("rw-p", "[heap]")), None);
    }

    #[test]
    fn this_process_finds_its_own_code() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(maps.lines().any(|l| {
            read_only_file_mapping(l).is_some() && l.ends_with(exe.to_str().unwrap())
        }));
        release_startup();
    }
}
