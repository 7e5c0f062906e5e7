//! `Upgraded`: a connection taken over by a handler (lua-http's `stream:take_socket()`), as
//! after a `101 Switching Protocols` answer. It is the socket plus whatever bytes the server
//! had already read past the request, which must be read first.
//!
//! Its errors are the peer's (the connection's) doing: one whose kind does not already
//! say so (a bad TLS record is `InvalidData`) carries an [`Error`] of kind `Closed`
//! inside the `io::Error`, so that a handler passing it on with `?` gets a disconnect,
//! which does not reach `onerror`.

use bytes::{Buf, Bytes};
use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    error::{is_disconnect_kind, Error},
    transport::{poll_read_buf, Io},
};

impl Io for Upgraded {
    fn socket_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.io.socket_addrs()
    }
}

/// Marks an error of a taken connection as the peer's, keeping its `io::ErrorKind`.
/// Resets, EOF and timeouts say so by their kind and stay as they are (with their OS
/// error number).
fn from_peer(e: io::Error) -> io::Error {
    if is_disconnect_kind(e.kind()) || e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return e;
    }
    io::Error::new(e.kind(), Error::peer(e))
}

/// A socket taken from its HTTP connection. Reads return the bytes the server had already
/// buffered, then the socket's own.
pub struct Upgraded {
    io: Box<dyn Io>,
    read_buf: Bytes,
}

impl Upgraded {
    pub(crate) fn new(io: Box<dyn Io>, read_buf: Bytes) -> Upgraded {
        Upgraded { io, read_buf }
    }

    /// Appends what can be read now to `buf` (the bytes read before the upgrade first),
    /// reading into its spare capacity, which the caller has reserved. `Ok(0)` is EOF.
    pub(crate) fn poll_read_buf(
        &mut self,
        buf: &mut bytes::BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if !self.read_buf.is_empty() {
            let n = self.read_buf.len();
            buf.extend_from_slice(&std::mem::take(&mut self.read_buf));
            return Poll::Ready(Ok(n));
        }
        poll_read_buf(&mut self.io, buf, cx)
    }

    /// The connection's own socket, with the bytes read before the upgrade (which come
    /// before the socket's own), for a caller that drives it itself (lua-http's
    /// `take_socket` as a cqueues socket): only for a plain socket (cleartext HTTP/1.x);
    /// a TLS connection or an HTTP/2 tunnel, or a socket that cannot be duplicated
    /// (EMFILE), comes back as `Err`.
    ///
    /// The descriptor is a duplicate, non-blocking as the original was: the original is
    /// removed from the loop's poller and closed, so the loop never hears of it again.
    pub fn into_socket(self) -> std::result::Result<(std::os::fd::OwnedFd, Bytes), Upgraded> {
        let Some(fd) = self.io.plain_fd() else {
            return Err(self);
        };
        let Ok(fd) = fd.try_clone_to_owned() else {
            return Err(self);
        };
        let Upgraded { io, read_buf } = self;
        // Deregisters the original (EPOLL_CTL_DEL names the descriptor, so the duplicate
        // is never registered) and closes it; the connection lives on in the duplicate.
        drop(io);
        Ok((fd, read_buf))
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("buffered", &self.read_buf.len())
            .finish()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_buf.is_empty() {
            let n = self.read_buf.len().min(buf.remaining());
            buf.put_slice(&self.read_buf[..n]);
            self.read_buf.advance(n);
            if self.read_buf.is_empty() {
                // An empty `Bytes` may still hold the buffer it was cut from (the 4 KiB
                // that connection setup read into) for the connection's whole life.
                self.read_buf = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf).map_err(from_peer)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io)
            .poll_write(cx, buf)
            .map_err(from_peer)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io)
            .poll_write_vectored(cx, bufs)
            .map_err(from_peer)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx).map_err(from_peer)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx).map_err(from_peer)
    }
}
