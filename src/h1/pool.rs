//! Write buffers lent to HTTP/1 connections (and to response heads waiting for their
//! framing, `stream.rs`), per thread.
//!
//! An idle keep-alive connection holds no buffer (`ConnState::release_idle_buffers`), so
//! without a pool every response would allocate a write buffer and every wait for the next
//! request would free it: a `malloc`, a `free` and a growth of the buffer on each request
//! (about 300 instructions of hello's 10,000). Buffers given back go to a bounded list on
//! the thread instead and are handed to the next connection with output to write.
//!
//! What a thread keeps is bounded: at most [`MAX_POOLED`] buffers, none larger than
//! [`MAX_KEPT_CAPACITY`] (a buffer that grew for a large response is freed), so at most
//! 2 MiB per thread whatever the number of connections.
//!
//! Read buffers are not pooled. A pooled read buffer serves the heads of many requests in
//! turn (they share its allocation), which saved ~130 instructions per keep-alive request,
//! but it cost ~100 B per idle connection in `bench/idle-memory` (10,000 connections: the
//! shared 1 KiB allocations and the long-lived connection state interleave in the heap,
//! which then cannot shrink). A request head takes an allocation of its own size instead,
//! freed with it.

use bytes::BytesMut;
use std::cell::RefCell;

/// How many free buffers a thread keeps.
const MAX_POOLED: usize = 256;

/// Larger buffers are freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 8 * 1024;

/// The capacity of a new buffer: a response head and a small body in one allocation.
const NEW_CAPACITY: usize = 1024;

type Pool = std::thread::LocalKey<RefCell<Vec<BytesMut>>>;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty write buffer: a pooled one if the thread has one.
pub(crate) fn take() -> BytesMut {
    take_from(&FREE, NEW_CAPACITY)
}

/// Gives back a write buffer, emptied; it is kept if it is small enough and there is room.
pub(crate) fn give(buf: BytesMut) {
    give_to(&FREE, buf);
}

fn take_from(pool: &'static Pool, new_capacity: usize) -> BytesMut {
    pool.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(new_capacity))
}

fn give_to(pool: &'static Pool, mut buf: BytesMut) {
    buf.clear();
    let capacity = buf.capacity();
    if capacity == 0 || capacity > MAX_KEPT_CAPACITY {
        return;
    }
    // A buffer written out in pieces starts past the front of its allocation, with that
    // much less capacity: kept as it is (a flush that empties it clears it instead, which
    // keeps the start at the front).
    pool.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < MAX_POOLED {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_whole() {
        let mut buf = take();
        buf.extend_from_slice(&[7; 100]);
        buf.clear();
        let at = buf.as_ptr();
        give(buf);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), NEW_CAPACITY);
        assert_eq!(again.as_ptr(), at);
    }

    #[test]
    fn a_buffer_given_with_bytes_comes_back_empty() {
        let mut buf = take();
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        give(buf);
        assert!(take().is_empty());
    }

    #[test]
    fn large_buffers_are_not_kept() {
        give(BytesMut::with_capacity(MAX_KEPT_CAPACITY * 2));
        assert_eq!(take().capacity(), NEW_CAPACITY);
    }

    #[test]
    fn the_pool_is_bounded() {
        for _ in 0..MAX_POOLED + 10 {
            give(BytesMut::with_capacity(64));
        }
        assert_eq!(FREE.with(|free| free.borrow().len()), MAX_POOLED);
    }
}
