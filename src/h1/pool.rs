//! Buffers lent to HTTP/1 connections, per thread: write buffers (and response heads
//! waiting for their framing, `stream.rs`), and read buffers for the next request.
//!
//! An idle keep-alive connection holds no buffer (`ConnState::release_idle_buffers`), so
//! without a pool every response would allocate a write buffer and every wait for the next
//! request would free it: a `malloc`, a `free` and a growth of the buffer on each request
//! (about 300 instructions of hello's 10,000). Buffers given back go to a bounded list on
//! the thread instead and are handed to the next connection with output to write.
//!
//! What a thread keeps is bounded: at most [`MAX_POOLED`] buffers of each kind, none
//! larger than [`MAX_KEPT_CAPACITY`] (a buffer that grew for a large response is freed),
//! so at most 2 MiB of each per thread whatever the number of connections.
//!
//! A read buffer's bytes are shared by the request heads split off it: given back, it
//! holds only what is past them, and the next connection's request is read into that
//! rest. Once the heads are dropped `bytes` takes the whole allocation back in place
//! (`reserve`) when a request no longer fits; while they are alive it allocates a new
//! buffer. Either way no byte is shared between two owners that may write it. So a read
//! buffer serves many requests one after another: allocating one per request (and the
//! bookkeeping `bytes` allocates when a buffer is first split) cost two `malloc`s and two
//! `free`s on every request. Read buffers have a list of their own: a write taking a
//! read buffer's small rest would have to allocate.

use bytes::BytesMut;
use std::cell::RefCell;

/// How many free buffers a thread keeps.
const MAX_POOLED: usize = 256;

/// Larger buffers are freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 8 * 1024;

/// The capacity of a new buffer: a response head and a small body in one allocation.
const NEW_CAPACITY: usize = 1024;

/// The capacity of a new read buffer: the heads of about a dozen small requests, one after
/// another (see the module's documentation). Not larger: a request head shares its read
/// buffer's allocation and keeps all of it alive while the stream lives, for hours for a
/// WebSocket or an event stream. 4 KiB saved ~30 instructions per request in hello.
const NEW_READ_CAPACITY: usize = 1024;

type Pool = std::thread::LocalKey<RefCell<Vec<BytesMut>>>;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    /// Read buffers apart: one given back may still be shared with request heads and hold
    /// little capacity, which a write taking it would have to allocate anew.
    static FREE_READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty write buffer: a pooled one if the thread has one.
pub(crate) fn take() -> BytesMut {
    take_from(&FREE, NEW_CAPACITY)
}

/// Gives back a write buffer, emptied; it is kept if it is small enough and there is room.
pub(crate) fn give(buf: BytesMut) {
    give_to(&FREE, buf);
}

/// An empty read buffer: a pooled one if the thread has one.
pub(crate) fn take_read() -> BytesMut {
    take_from(&FREE_READ, NEW_READ_CAPACITY)
}

/// Gives back a read buffer, as [`give`].
pub(crate) fn give_read(buf: BytesMut) {
    give_to(&FREE_READ, buf);
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

    #[test]
    fn a_read_buffer_is_used_again_in_place_once_its_heads_are_dropped() {
        let mut buf = take_read();
        let at = buf.as_ptr();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = buf.split().freeze();
        give_read(buf);
        // The next request goes after the head while the head is alive...
        let mut next = take_read();
        next.extend_from_slice(b"GET /");
        assert_eq!(next.as_ptr(), at.wrapping_add(head.len()));
        assert_eq!(&head[..5], b"GET /");
        next.clear();
        give_read(next);
        // ...and at the front again once it is dropped.
        drop(head);
        let mut again = take_read();
        again.reserve(NEW_READ_CAPACITY);
        assert_eq!(again.as_ptr(), at);
        // Write buffers never get it.
        give_read(again);
        assert_ne!(take().as_ptr(), at);
    }
}
