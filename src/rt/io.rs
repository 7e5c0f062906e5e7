//! Sockets registered with the controller's reactor, implementing tokio's `AsyncRead` and
//! `AsyncWrite` *traits* (no tokio runtime), so protocol crates written against those traits
//! run on the step loop.
//!
//! `Registered<T>` pairs a mio socket with its readiness entry and deregisters it on drop.
//! Reads and writes are attempted first and wait only on `WouldBlock`, which clears the
//! readiness bit until the next edge.

use std::{
    io::{self, IoSlice, Read, Write},
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{reactor::IoState, Controller, Inner};

/// A mio socket registered with a controller.
pub(crate) struct Registered<T: mio::event::Source> {
    io: T,
    state: Rc<IoState>,
    ctl: Rc<Inner>,
}

impl<T: mio::event::Source> Registered<T> {
    pub(crate) fn new(ctl: &Controller, mut io: T) -> io::Result<Self> {
        let state = ctl.inner.reactor.register(&mut io)?;
        Ok(Registered {
            io,
            state,
            ctl: ctl.inner.clone(),
        })
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }

    /// Runs a non-blocking operation, waiting for readability whenever it would block.
    pub(crate) fn poll_read_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            ready!(self.state.poll_readable(cx));
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.state.clear_readable(),
                res => return Poll::Ready(res),
            }
        }
    }

    /// A read returned less than it asked for: the socket's queue is empty. With
    /// edge-triggered epoll any byte arriving after that read raises a new event, so the
    /// readiness bit can be cleared now instead of paying for a read that returns
    /// `WouldBlock` (tokio does the same on Linux). This is one syscall per request.
    pub(crate) fn drained_read(&self) {
        self.state.clear_readable();
    }

    /// A write took less than it was given: the send buffer is full (see `drained_read`).
    pub(crate) fn filled_write(&self) {
        self.state.clear_writable();
    }

    /// Runs a non-blocking operation, waiting for writability whenever it would block.
    pub(crate) fn poll_write_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            ready!(self.state.poll_writable(cx));
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.state.clear_writable(),
                res => return Poll::Ready(res),
            }
        }
    }
}

impl<T: mio::event::Source> Drop for Registered<T> {
    fn drop(&mut self) {
        self.ctl.reactor.deregister(&mut self.io, &self.state);
    }
}

impl<T: mio::event::Source + std::fmt::Debug> std::fmt::Debug for Registered<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.io.fmt(f)
    }
}

/// Implements the tokio I/O traits (and `Io`, with sendfile) for a registered stream socket
/// whose `&T` reads and writes.
macro_rules! async_io_impls {
    ($ty:ty, $addrs:expr) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                // SAFETY: a socket's `read` only writes into the slice and reports how much
                // it wrote; it never reads the (possibly uninitialised) bytes. This avoids
                // zeroing the whole spare buffer on every read, as tokio's own sockets do.
                #[allow(unsafe_code)]
                let unfilled = unsafe {
                    &mut *(buf.unfilled_mut() as *mut [std::mem::MaybeUninit<u8>] as *mut [u8])
                };
                let len = unfilled.len();
                let n = ready!(self.0.poll_read_with(cx, |mut io| io.read(unfilled)))?;
                if n > 0 && n < len {
                    self.0.drained_read();
                }
                // SAFETY: `read` initialised the first `n` bytes of the unfilled part.
                #[allow(unsafe_code)]
                unsafe {
                    buf.assume_init(n);
                }
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let n = ready!(self.0.poll_write_with(cx, |mut io| io.write(buf)))?;
                if n < buf.len() {
                    self.0.filled_write();
                }
                Poll::Ready(Ok(n))
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.0.poll_write_with(cx, |mut io| io.write_vectored(bufs))
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
            }
        }

        // A plain socket: files go to it by sendfile(2).
        impl crate::transport::Io for $ty {
            fn poll_sendfile(
                &mut self,
                cx: &mut Context<'_>,
                file: &std::fs::File,
                offset: &mut u64,
                count: usize,
            ) -> Option<Poll<io::Result<usize>>> {
                Some(poll_sendfile(&self.0, cx, file, offset, count))
            }

            fn socket_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
                $addrs(self)
            }

            fn plain_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
                Some(std::os::fd::AsFd::as_fd(self.0.get_ref()))
            }
        }
    };
}

/// Copies up to `count` bytes of `file` from `*offset` to the socket with sendfile(2),
/// advancing `*offset`: the file's pages go to the socket without passing through user
/// space. Waits for writability like a write.
fn poll_sendfile<T: mio::event::Source + std::os::fd::AsRawFd>(
    sock: &Registered<T>,
    cx: &mut Context<'_>,
    file: &std::fs::File,
    offset: &mut u64,
    count: usize,
) -> Poll<io::Result<usize>> {
    use std::os::fd::AsRawFd;
    let in_fd = file.as_raw_fd();
    sock.poll_write_with(cx, |io| {
        let mut off = libc::off_t::try_from(*offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both descriptors are open for the call; `off` is a valid local.
        #[allow(unsafe_code)]
        let n = unsafe { libc::sendfile(io.as_raw_fd(), in_fd, &mut off, count) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        *offset = off as u64;
        Ok(n as usize)
    })
}

/// A TCP connection on the step loop.
#[derive(Debug)]
pub struct TcpStream(Registered<mio::net::TcpStream>);

impl TcpStream {
    /// Adopts a connected std socket (it is made non-blocking).
    pub fn from_std(ctl: &Controller, stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream(Registered::new(
            ctl,
            mio::net::TcpStream::from_std(stream),
        )?))
    }

    pub(crate) fn from_mio(ctl: &Controller, stream: mio::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream(Registered::new(ctl, stream)?))
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.get_ref().set_nodelay(on)
    }
}

async_io_impls!(TcpStream, |s: &TcpStream| (
    s.peer_addr().ok(),
    s.local_addr().ok()
));

/// A unix-domain stream connection on the step loop.
#[derive(Debug)]
pub struct UnixStream(Registered<mio::net::UnixStream>);

impl UnixStream {
    /// Adopts a connected std socket (it is made non-blocking).
    pub fn from_std(
        ctl: &Controller,
        stream: std::os::unix::net::UnixStream,
    ) -> io::Result<UnixStream> {
        stream.set_nonblocking(true)?;
        Ok(UnixStream(Registered::new(
            ctl,
            mio::net::UnixStream::from_std(stream),
        )?))
    }

    pub(crate) fn from_mio(
        ctl: &Controller,
        stream: mio::net::UnixStream,
    ) -> io::Result<UnixStream> {
        Ok(UnixStream(Registered::new(ctl, stream)?))
    }
}

async_io_impls!(UnixStream, |_: &UnixStream| (None, None));

impl std::os::fd::AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.get_ref().as_raw_fd()
    }
}

impl std::os::fd::AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.get_ref().as_raw_fd()
    }
}
