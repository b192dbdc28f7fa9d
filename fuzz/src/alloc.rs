//! A global allocator that aborts on one allocation above a limit.
//!
//! libFuzzer's `-malloc_limit_mb` needs a sanitizer's allocator hooks, which
//! stable Rust does not have; this wrapper around the system allocator gives
//! the same signal: a decoder that reserves memory in proportion to a length
//! a peer claims, rather than to the bytes present, crashes the target and
//! libFuzzer keeps the input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the largest single allocation allowed from now on.
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The system allocator with a per-allocation limit.
pub struct Guard;

#[global_allocator]
static GLOBAL: Guard = Guard;

fn check(size: usize) {
    if size > LIMIT.load(Ordering::Relaxed) {
        report(size);
        std::process::abort();
    }
}

/// Writes the message without allocating.
fn report(size: usize) {
    let mut buf = [0u8; 128];
    let head = b"weft-fuzz: one allocation of ";
    let tail = b" bytes exceeds the limit: a decoder reserves memory the input does not hold\n";
    let mut n = 0;
    buf[..head.len()].copy_from_slice(head);
    n += head.len();
    let mut digits = [0u8; 20];
    let mut d = digits.len();
    let mut v = size;
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let num = &digits[d..];
    buf[n..n + num.len()].copy_from_slice(num);
    n += num.len();
    // SAFETY: `buf[..n]` and `tail` are valid for reads of their lengths.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::write(2, tail.as_ptr().cast(), tail.len());
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments; the
// limit check only reads an atomic and may abort.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
