//! Freed small blocks, kept per size class in front of the component's
//! allocator (talc).
//!
//! A component allocates the same few dozen small values for every message
//! (template values, header strings, MIME parts, reply lines) and frees
//! them before the call returns. talc finds a fit, splits and coalesces
//! each one: in a profile of SMTP sends its `allocate` and `deallocate`
//! were a quarter of the guests' time (7% of the server's CPU). Here a
//! freed block of at most `MAX_SMALL` bytes goes on its class's list and
//! the next allocation of that class takes it back: a pop and a push.
//!
//! Small blocks are not returned to talc, so a component holds at most
//! what it once had live of each class (16 classes); its memory limit
//! still bounds that, as it bounds everything the component allocates.
//! Only for single-threaded wasm: the lists are not synchronized.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Blocks are multiples of this many bytes, aligned to it.
const GRAIN: usize = 16;
const CLASSES: usize = 16;
/// Larger blocks, and any asking for more alignment, go to the inner
/// allocator as they are.
const MAX_SMALL: usize = GRAIN * CLASSES;

pub struct SizeClasses<A> {
    inner: A,
    /// Per class, the first free block; each free block holds the address
    /// of the next in its first bytes.
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

impl<A> SizeClasses<A> {
    pub const fn new(inner: A) -> SizeClasses<A> {
        SizeClasses {
            inner,
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }

    /// The class serving `layout`, if a small one does.
    fn class(layout: Layout) -> Option<usize> {
        let size = layout.size();
        (size != 0 && size <= MAX_SMALL && layout.align() <= GRAIN).then(|| (size - 1) / GRAIN)
    }

    /// What every block of class `c` is, as the inner allocator sees it.
    fn block(c: usize) -> Layout {
        // SAFETY: GRAIN is a power of two and (c + 1) * GRAIN <= MAX_SMALL.
        unsafe { Layout::from_size_align_unchecked((c + 1) * GRAIN, GRAIN) }
    }
}

// SAFETY: the caller's layouts decide the class, the same one at `alloc`
// and at `dealloc` (GlobalAlloc's contract: a block is freed with the
// layout it was allocated with), so a block goes back on the list of the
// class it was cut for, and every block of a class has that class's size
// and alignment. A free block is at least GRAIN bytes, room for the link.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = Self::class(layout) else {
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: single-threaded, and nothing below calls back into here
        // while the reference is live.
        let head = unsafe { (*self.free.get())[c] };
        if head.is_null() {
            return unsafe { self.inner.alloc(Self::block(c)) };
        }
        unsafe { (*self.free.get())[c] = head.cast::<*mut u8>().read() };
        head
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = Self::class(layout) else {
            return unsafe { self.inner.dealloc(block, layout) };
        };
        unsafe {
            block.cast::<*mut u8>().write((*self.free.get())[c]);
            (*self.free.get())[c] = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `new_size`, rounded up to the
        // alignment, does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new)) {
            (None, None) => unsafe { self.inner.realloc(block, layout, new_size) },
            // Same class: the block already has the room.
            (Some(a), Some(b)) if a == b => block,
            _ => {
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

// SAFETY: components without threads (wasm without atomics) only.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::collections::HashMap;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn a_freed_small_block_is_the_next_of_its_class() {
        let a = SizeClasses::new(System);
        unsafe {
            let first = a.alloc(layout(20, 4));
            a.dealloc(first, layout(20, 4));
            // 17..=32 bytes is one class, whatever the alignment up to 16.
            assert_eq!(a.alloc(layout(32, 16)), first);
            let other = a.alloc(layout(24, 8));
            assert_ne!(other, first, "taken: a new block");
            // Another class does not take it.
            a.dealloc(first, layout(32, 16));
            let bigger = a.alloc(layout(33, 1));
            assert_ne!(bigger, first);
            assert_eq!(a.alloc(layout(17, 1)), first);
            for (p, l) in [(first, layout(17, 1)), (other, layout(24, 8)), (bigger, layout(33, 1))] {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn large_or_overaligned_blocks_are_the_inner_allocators() {
        assert_eq!(SizeClasses::<System>::class(layout(256, 16)), Some(15));
        assert_eq!(SizeClasses::<System>::class(layout(257, 1)), None);
        assert_eq!(SizeClasses::<System>::class(layout(64, 32)), None);
        assert_eq!(SizeClasses::<System>::class(layout(1, 1)), Some(0));
    }

    /// Random allocations, frees and reallocations of every size around
    /// the classes' edge: every live block keeps its bytes, is aligned as
    /// asked, and no two overlap.
    #[test]
    fn live_blocks_keep_their_bytes_through_any_mix_of_calls() {
        let a = SizeClasses::new(System);
        let mut rng = fastrand::Rng::with_seed(35);
        // address -> (layout, fill byte)
        let mut live: HashMap<usize, (Layout, u8)> = HashMap::new();
        let check = |p: *mut u8, l: Layout, fill: u8| {
            assert_eq!(p as usize % l.align(), 0);
            let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
            assert!(bytes.iter().all(|&b| b == fill), "a live block was overwritten");
        };
        for step in 0..20_000u32 {
            let fill = (step % 251) as u8;
            match rng.u8(..3) {
                0 if !live.is_empty() => {
                    let &p = live.keys().nth(rng.usize(..live.len())).unwrap();
                    let (l, f) = live.remove(&p).unwrap();
                    check(p as *mut u8, l, f);
                    unsafe { a.dealloc(p as *mut u8, l) };
                }
                1 if !live.is_empty() => {
                    let &p = live.keys().nth(rng.usize(..live.len())).unwrap();
                    let (l, f) = live.remove(&p).unwrap();
                    let new_size = rng.usize(1..600);
                    let q = unsafe { a.realloc(p as *mut u8, l, new_size) };
                    assert!(!q.is_null());
                    let kept = l.size().min(new_size);
                    let bytes = unsafe { std::slice::from_raw_parts(q, kept) };
                    assert!(bytes.iter().all(|&b| b == f), "realloc kept the bytes");
                    let nl = layout(new_size, l.align());
                    unsafe { q.write_bytes(fill, new_size) };
                    assert!(live.insert(q as usize, (nl, fill)).is_none());
                }
                _ => {
                    let l = layout(rng.usize(1..600), 1 << rng.u32(0..6));
                    let p = unsafe { a.alloc(l) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % l.align(), 0);
                    unsafe { p.write_bytes(fill, l.size()) };
                    assert!(live.insert(p as usize, (l, fill)).is_none(), "handed out twice");
                }
            }
        }
        for (p, (l, f)) in live {
            check(p as *mut u8, l, f);
            unsafe { a.dealloc(p as *mut u8, l) };
        }
    }
}
