//! CPU scheduling hints for the two runtimes sharing the machine's cores.
//! Under a full-speed send the engine's threads keep every core busy, and
//! an API request's thread, once woken, waits for the running one's time
//! slice to end. Linux's EEVDF scheduler (6.12 and later) takes a slice
//! length per thread (`sched_attr.sched_runtime` under SCHED_OTHER, no
//! privilege needed): a thread with a shorter slice has an earlier virtual
//! deadline and preempts on wake-up. The API's threads ask for 0.2 ms.
//! Measured side by side (BENCHMARKS.md, API latency): p99 of GET, pause
//! and resume 4.7 / 13.3 / 14.3 ms with the hint against 6.9 / 15.2 /
//! 15.1 ms without (0.5 ms slices: 4.5 / 10.6 / 10.0 against 6.3 / 15.3 /
//! 14.4 in another pair of runs); what was left of a write's p99, its
//! own commit after the engine's, went with group commit
//! (`Redb::write_riding`). CPU *shares* stay equal (nice is untouched: at nice +10 the
//! engine lost 90% of the CPU to a flood of cheap public requests). Older
//! kernels refuse or ignore the hint, which changes nothing.

/// What a thread is for.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Serves requests someone waits on: short slices, early wake-up.
    Interactive,
    /// The engine's delivery work: the kernel's default slice.
    Bulk,
}

impl Role {
    /// The slice hint in ns; 0 is the kernel's default. The interactive
    /// slice is `POSTA_API_SLICE_US` (µs, default 200; 0 turns the hint
    /// off), for measuring with and without it side by side.
    fn slice_ns(self) -> u64 {
        match self {
            Role::Interactive => std::env::var("POSTA_API_SLICE_US")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(200)
                .saturating_mul(1000),
            Role::Bulk => 0,
        }
    }
}

/// Applies `role`'s slice to the calling thread (best effort). A slice of
/// 0 is the kernel's default: threads inherit their creator's hint, so the
/// engine's threads (started from the API's) must reset theirs.
pub fn set_thread_role(role: Role) {
    let slice = role.slice_ns();
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_attr` (linux/sched/types.h), first version.
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
        }
        let mut nice = 0;
        // SAFETY: getpriority has no memory effects; errno tells failure
        // apart from a nice of -1, which then just stays as read.
        unsafe {
            *libc::__errno_location() = 0;
            let n = libc::getpriority(libc::PRIO_PROCESS, 0);
            if *libc::__errno_location() == 0 {
                nice = n;
            }
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime: slice,
            deadline: 0,
            period: 0,
        };
        // SAFETY: the kernel reads `size` bytes of a valid, initialized
        // sched_attr for the calling thread (pid 0).
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            tracing::debug!("sched_setattr slice hint refused: {}", std::io::Error::last_os_error());
        }
    }
}
