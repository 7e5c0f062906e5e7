//! Connection setup, between accept and HTTP: wait for the first bytes, decide TLS or
//! cleartext (`Tls::Auto`), run the TLS handshake — all within `connection_setup_timeout`,
//! as lua-http's `wrap_socket`. A failure here costs only this connection.

use bytes::BytesMut;
use std::{future::poll_fn, net::SocketAddr, pin::Pin, sync::Arc, task::Poll, time::Duration};
use tokio::io::ReadBuf;

use crate::{
    error::{Error, Result},
    net::Conn,
    rt::timeout,
    sniff,
    tls::Tls,
    upgrade::{Io, Upgraded},
};

/// A connection ready for HTTP: its (possibly TLS) byte stream and what was read ahead.
pub(crate) struct Transport {
    pub io: Box<dyn Io>,
    /// Bytes read while sniffing, which belong to the first request.
    pub read_ahead: BytesMut,
    pub peer_addr: Option<SocketAddr>,
    pub local_addr: Option<SocketAddr>,
    /// `"https"` over TLS, `"http"` otherwise: the requests' `:scheme`.
    pub scheme: &'static str,
}

/// How connections are set up: the `tls` option and the handshake configuration.
pub(crate) struct Setup {
    pub tls: Tls,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub timeout: Duration,
}

impl Setup {
    pub(crate) fn new(
        tls: Tls,
        config: Option<Arc<rustls::ServerConfig>>,
        timeout: Duration,
    ) -> Setup {
        Setup {
            tls,
            acceptor: config.map(tokio_rustls::TlsAcceptor::from),
            timeout,
        }
    }

    /// Sniffs and handshakes as the `tls` option says.
    pub(crate) async fn run(&self, conn: Conn) -> Result<Transport> {
        let (peer_addr, local_addr) = (conn.peer_addr(), conn.local_addr());
        let io: Box<dyn Io> = match conn {
            Conn::Tcp(s) => Box::new(s),
            Conn::Unix(s) => Box::new(s),
        };
        let (io, read_ahead, scheme) = timeout(self.timeout, self.negotiate(io))
            .await
            .map_err(|_| Error::timeout("connection setup"))??;
        Ok(Transport {
            io,
            read_ahead,
            peer_addr,
            local_addr,
            scheme,
        })
    }

    async fn negotiate(
        &self,
        mut io: Box<dyn Io>,
    ) -> Result<(Box<dyn Io>, BytesMut, &'static str)> {
        let use_tls = match self.tls {
            Tls::Off => return Ok((io, BytesMut::new(), "http")),
            Tls::On => true,
            Tls::Auto => {
                let first = read_some(&mut io).await?;
                if sniff::is_tls(&first) != Some(true) {
                    return Ok((io, first, "http"));
                }
                io = Box::new(Upgraded::new(io, first.freeze()));
                true
            }
        };
        debug_assert!(use_tls);
        let acceptor = self
            .acceptor
            .as_ref()
            .ok_or_else(|| Error::config("TLS without a configuration"))?;
        let tls = acceptor
            .accept(io)
            .await
            .map_err(|e| Error::io(e).with_context("TLS handshake"))?;
        Ok((Box::new(tls), BytesMut::new(), "https"))
    }
}

/// Reads what the client has sent so far (at least one byte); EOF is an error.
async fn read_some(io: &mut Box<dyn Io>) -> Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(4096);
    let n = poll_fn(|cx| {
        let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
        match Pin::new(&mut **io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    if n == 0 {
        return Err(Error::closed("client closed before sending anything"));
    }
    // SAFETY: `poll_read` filled the first `n` bytes of the spare capacity.
    #[allow(unsafe_code)]
    unsafe {
        buf.set_len(n);
    }
    Ok(buf)
}
