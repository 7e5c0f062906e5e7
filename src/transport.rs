//! The byte stream a connection runs on, below both HTTP versions: the `Io` trait (TCP,
//! unix, TLS over either, a stream with bytes read ahead, an HTTP/2 tunnel), reading into
//! a buffer's spare capacity, and `Transport`, a connection once set up (what `setup.rs`
//! hands to `h1/` or `h2/`). It names no HTTP: `h1`, `h2`, `setup` and `upgrade` import
//! it, and it imports none of them.

use bytes::BytesMut;
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream the server's connections run on: TCP, unix, TLS over either, or one of
/// those with bytes read ahead.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin {
    /// Sends up to `count` bytes of `file` from `*offset` straight from the page cache
    /// (sendfile(2)), advancing `*offset`. `None`: this stream is not a plain socket
    /// (TLS must encrypt in user space), so the caller copies instead.
    fn poll_sendfile(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &std::fs::File,
        _offset: &mut u64,
        _count: usize,
    ) -> Option<Poll<io::Result<usize>>> {
        None
    }

    /// The peer's and the local address, asked of the socket (getpeername, getsockname):
    /// `None` for unix sockets and streams that are not sockets, or once the socket
    /// failed.
    fn socket_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (None, None)
    }

    /// The socket itself, when this stream is a plain one (no TLS, no HTTP/2 tunnel, no
    /// bytes read ahead inside it): what [`Upgraded::into_socket`](crate::Upgraded)
    /// can hand over as it is. `None` otherwise.
    fn plain_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl Io for tokio_rustls::server::TlsStream<Box<dyn Io>> {
    fn socket_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.get_ref().0.socket_addrs()
    }
}

/// Reads into the spare capacity of `buf` (which the caller has reserved) without zeroing
/// it first, and extends `buf` by what was read. `Ok(0)` is EOF.
pub(crate) fn poll_read_buf(
    io: &mut Box<dyn Io>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
    match Pin::new(&mut **io).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            // SAFETY: `poll_read` initialised and filled the first `n` bytes of the spare
            // capacity, as `ReadBuf::filled` reports.
            #[allow(unsafe_code)]
            unsafe {
                buf.set_len(buf.len() + n);
            }
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// A connection ready for HTTP: its (possibly TLS) byte stream and what was read ahead.
pub(crate) struct Transport {
    pub io: Box<dyn Io>,
    /// Bytes read while sniffing, which belong to the first request.
    pub read_ahead: BytesMut,
    pub peer_addr: Option<SocketAddr>,
    pub local_addr: Option<SocketAddr>,
    /// `"https"` over TLS, `"http"` otherwise: the requests' `:scheme`.
    pub scheme: &'static str,
    /// HTTP/2: chosen by ALPN over TLS, or by the preface in cleartext.
    pub h2: bool,
}
