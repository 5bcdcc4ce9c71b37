//! Giving freed memory back to the OS. glibc keeps what the program frees
//! in per-thread arenas: compiling the components at start allocates a few
//! hundred MiB in small pieces, and imports and sends on several threads
//! leave freed pages in every arena. `release` hands them back; the server
//! calls it after loading the plugins and then once a second (it costs
//! well under a millisecond).
//!
//! Measured on the 1M-subscriber send (BENCHMARKS.md): peak RSS 202 MiB
//! without it, 157 MiB with it (then with a 32 MiB database cache). Tried and
//! left: MALLOC_ARENA_MAX=4 (128 MiB, but −24% throughput) and mimalloc
//! (faster, but 191 MiB idle untuned; its tuning options are not exposed
//! by name in libmimalloc-sys).

/// Returns freed heap memory to the OS now.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
