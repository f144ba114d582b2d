//! A global allocator that counts live bytes and allocation calls, for the tunnel-scale
//! benchmark's memory figures. Install it in a benchmark binary with
//! `#[global_allocator] static A: ipsec_benches::alloc::Counting = ipsec_benches::alloc::Counting;`.
//!
//! The figures are the sizes asked of the allocator (`Layout::size`), not what the system
//! allocator really reserves (malloc adds 8 to 16 bytes of bookkeeping per block and rounds
//! up), so they are a lower bound on resident memory.
//! The ESP fast path's own zero-allocation proof is `ipsec-sa/tests/dataplane_alloc.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Forwards to [`System`] and keeps the running totals read by [`live_bytes`] and
/// [`allocation_calls`].
#[derive(Debug)]
pub struct Counting;

/// Bytes currently allocated through [`Counting`] (all threads).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Allocation calls (alloc, alloc_zeroed, realloc) made through [`Counting`] so far.
pub fn allocation_calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

#[expect(
    unsafe_code,
    reason = "a GlobalAlloc impl is unsafe by definition; it only forwards to System"
)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are plain atomics and never influence the returned pointers.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}
