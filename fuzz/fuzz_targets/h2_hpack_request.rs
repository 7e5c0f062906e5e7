//! HTTP/2 request header blocks on the engine of our own (`src/h2own/hpack.rs`, then
//! `request.rs`): `onstream::fuzzing::h2_hpack_request` (the input layout and the
//! invariants checked are in src/fuzzing.rs).
//!
//! This target counts the heap: a global allocator over the system's keeps the live and
//! the peak byte counts, so that the decoding of one block can be held to a bound on what
//! it allocates (libFuzzer's `-malloc_limit_mb` catches one huge allocation only; this
//! catches many small ones too).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn grew(n: usize) {
        let live = LIVE.fetch_add(n, Relaxed) + n;
        PEAK.fetch_max(live, Relaxed);
    }
}

// SAFETY: every call goes to `System` with the caller's arguments unchanged; the counters
// are only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            Counting::grew(new_size);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn reset_peak() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    live
}

fn peak() -> usize {
    PEAK.load(Relaxed)
}

fuzz_target!(|data: &[u8]| {
    onstream::fuzzing::h2_hpack_request(data, Some(&onstream::fuzzing::Heap { reset_peak, peak }))
});
