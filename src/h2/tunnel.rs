//! A byte stream over one HTTP/2 stream, for protocols started with an extended CONNECT
//! (RFC 8441: WebSocket over HTTP/2). DATA frames in are reads, writes go out as DATA
//! frames within the stream's flow-control window, and shutdown ends the stream.

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The two halves of an HTTP/2 stream after a `200` to an extended CONNECT.
pub(crate) struct H2Tunnel {
    recv: RecvStream,
    send: SendStream<Bytes>,
    /// The rest of a DATA frame the reader's buffer could not take.
    pending: Bytes,
}

impl H2Tunnel {
    pub(crate) fn new(recv: RecvStream, send: SendStream<Bytes>) -> H2Tunnel {
        H2Tunnel {
            recv,
            send,
            pending: Bytes::new(),
        }
    }
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())
    } else {
        io::Error::new(io::ErrorKind::BrokenPipe, e)
    }
}

impl AsyncRead for H2Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Credit goes back as soon as the bytes are ours: the reader applies
                    // its own backpressure by not reading.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        let n = match ready!(self.send.poll_capacity(cx)) {
            Some(Ok(n)) => n.min(buf.len()),
            Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        };
        if n == 0 {
            // No window yet: poll_capacity registered us for the next grant.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data handed to h2 goes out when the connection task runs.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send.send_data(Bytes::new(), true).map_err(io_error)?;
        Poll::Ready(Ok(()))
    }
}

impl crate::transport::Io for H2Tunnel {}
