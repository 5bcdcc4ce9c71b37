//! Giving freed memory back to the OS. The server binary allocates with
//! jemalloc (`main.rs`), which keeps freed pages in its arenas for a while
//! so the next allocations find them: compiling the components at start
//! allocates a few hundred MiB in small pieces, and imports and sends on
//! several threads leave freed pages in every arena. `release` hands them
//! back; the server calls it after loading the plugins and then once a
//! second (it costs well under a millisecond).
//!
//! Measured on the 1M-subscriber send (`bench --only million`, alternating
//! binaries): glibc's malloc with `malloc_trim` here peaked at 68 MiB and
//! sent 33.6k–37.4k msg/s; jemalloc with this purge 71–72 MiB (75–79
//! without it; 45 MiB idle against 37) and 37.1k–44.1k msg/s, with SMTP
//! +8–13% and webhook +15% (#35). Tried and left: MALLOC_ARENA_MAX=4
//! (−24% throughput) and mimalloc (+12–14% on the log path, but 110 MiB at
//! that send's peak).

/// Returns freed heap memory to the OS now: jemalloc's arenas, and glibc's
/// heap, which C code still uses.
pub fn release() {
    purge_jemalloc();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Purges every jemalloc arena; mallctl's answer (0, or an errno).
fn purge_jemalloc() -> i32 {
    // `MALLCTL_ARENAS_ALL` is 4096 in jemalloc 5.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: this control takes and returns nothing (null pointers, zero
    // length); it only discards unused dirty pages. jemalloc is linked in
    // (tikv-jemalloc-sys) whether or not it is the global allocator (test
    // binaries use the system's), in which case there is nothing to purge.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purging_all_arenas_is_a_control_jemalloc_knows() {
        // mallctl answers ENOENT for a name it does not know.
        assert_eq!(super::purge_jemalloc(), 0);
    }
}
