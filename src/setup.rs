//! Connection setup, between accept and HTTP: wait for the first bytes, decide TLS or
//! cleartext (`Tls::Auto`), run the TLS handshake, and choose HTTP/1 or HTTP/2 (ALPN over
//! TLS, the preface in cleartext) — all within `connection_setup_timeout`, as lua-http's
//! `wrap_socket`. A failure here costs only this connection. A plain HTTP request on a
//! TLS-only port is answered 400 in plain HTTP before the connection closes.

use bytes::BytesMut;
use std::{future::poll_fn, sync::Arc, time::Duration};

use crate::{
    error::{Error, Result},
    net::Conn,
    options::Version,
    rt::timeout,
    sniff,
    tls::Tls,
    transport::{poll_read_buf, Io, Transport},
};

/// How connections are set up: the `tls` option and the handshake configuration.
pub(crate) struct Setup {
    pub tls: Tls,
    pub version: Version,
    pub config: Option<Arc<rustls::ServerConfig>>,
    /// `config` without ALPN, for a client that offers only protocols we do not speak
    /// (rustls would refuse it with a `no_application_protocol` alert; lua-http serves it,
    /// choosing the version by the HTTP/2 preface as in cleartext).
    pub config_without_alpn: Option<Arc<rustls::ServerConfig>>,
    pub timeout: Duration,
}

impl Setup {
    pub(crate) fn new(
        tls: Tls,
        version: Version,
        config: Option<Arc<rustls::ServerConfig>>,
        timeout: Duration,
    ) -> Setup {
        let config_without_alpn = config.as_ref().map(|c| {
            let mut c = (**c).clone();
            c.alpn_protocols.clear();
            Arc::new(c)
        });
        Setup {
            tls,
            version,
            config,
            config_without_alpn,
            timeout,
        }
    }

    /// Sniffs and handshakes as the `tls` option says.
    pub(crate) async fn run(&self, conn: Conn) -> Result<Transport> {
        let (peer_addr, local_addr) = (conn.peer_addr(), conn.local_addr());
        let io: Box<dyn Io> = match conn {
            Conn::Tcp(s, _, _) => Box::new(s),
            Conn::Unix(s) => Box::new(s),
        };
        let (io, read_ahead, scheme, h2) = timeout(self.timeout, self.negotiate(io))
            .await
            .map_err(|_| Error::timeout("connection setup"))??;
        Ok(Transport {
            io,
            read_ahead,
            peer_addr,
            local_addr,
            scheme,
            h2,
        })
    }

    async fn negotiate(&self, mut io: Box<dyn Io>) -> Result<Negotiated> {
        let mut first = BytesMut::new();
        if self.tls != Tls::On {
            let sniff_h2 = self.version.allows_h2();
            if self.tls == Tls::Off && !sniff_h2 {
                return Ok((io, first, "http", false));
            }
            read_more(&mut io, &mut first).await?;
            if self.tls == Tls::Off || sniff::is_tls(&first) != Some(true) {
                // Cleartext: HTTP/2 by prior knowledge if it starts with the preface.
                let mut h2 = false;
                if sniff_h2 {
                    loop {
                        match sniff::is_h2_preface(&first) {
                            Some(yes) => break h2 = yes,
                            None => read_more(&mut io, &mut first).await?,
                        }
                    }
                }
                if !h2 && self.version == Version::Http2 {
                    return Err(Error::protocol(505, "HTTP/1 is not enabled on this server"));
                }
                return Ok((io, first, "http", h2));
            }
        } else {
            read_more(&mut io, &mut first).await?;
            if sniff::is_tls(&first) == Some(false) && first[0].is_ascii_alphabetic() {
                return Err(answer_cleartext_request(io).await);
            }
        }
        let (Some(config), Some(without_alpn)) = (&self.config, &self.config_without_alpn) else {
            return Err(Error::config("TLS without a configuration"));
        };
        let handshake_failed = |e| Error::io(e).with_context("TLS handshake");
        let start = client_hello(io, &first).await.map_err(handshake_failed)?;
        drop(first);
        // ALPN only when the client offers a protocol we speak: offered nothing of ours,
        // the handshake goes on without ALPN instead of failing.
        let speaks_ours = start.client_hello().alpn().map_or(true, |mut offered| {
            offered.any(|p| config.alpn_protocols.iter().any(|ours| ours == p))
        });
        let chosen = if speaks_ours { config } else { without_alpn };
        let tls = start
            .into_stream(chosen.clone())
            .await
            .map_err(handshake_failed)?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut io: Box<dyn Io> = Box::new(tls);
        let mut first = BytesMut::new();
        let h2 = match alpn.as_deref() {
            Some(protocol) => protocol == b"h2",
            // No protocol agreed: the HTTP/2 preface decides, as in cleartext.
            None if self.version.allows_h2() => loop {
                read_more(&mut io, &mut first).await?;
                if let Some(yes) = sniff::is_h2_preface(&first) {
                    break yes;
                }
            },
            None => false,
        };
        if !h2 && self.version == Version::Http2 {
            return Err(Error::protocol(505, "the client did not choose h2 by ALPN"));
        }
        Ok((io, first, "https", h2))
    }
}

type Negotiated = (Box<dyn Io>, BytesMut, &'static str, bool);

/// Reads the ClientHello, starting with the bytes `first` that sniffing read. They go
/// straight to rustls, not through a wrapper in front of the socket (`Upgraded`), which
/// would add a box and a layer to every read and write of the connection's life; and
/// usually they hold the whole ClientHello, so no further read is made for it.
async fn client_hello(
    mut io: Box<dyn Io>,
    mut first: &[u8],
) -> std::io::Result<tokio_rustls::StartHandshake<Box<dyn Io>>> {
    use std::{
        io::{ErrorKind, Write},
        pin::Pin,
        task::{Context, Poll},
    };
    let mut acceptor = rustls::server::Acceptor::default();
    while !first.is_empty() {
        if acceptor.read_tls(&mut first)? == 0 {
            return Err(ErrorKind::InvalidData.into());
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Ok(tokio_rustls::StartHandshake::from_parts(accepted, io)),
        // Not all of it yet: the lazy acceptor reads on, then accepts.
        Ok(None) => tokio_rustls::LazyConfigAcceptor::new(acceptor, io).await,
        Err((e, mut alert)) => {
            // The alert (a few bytes, to a socket with nothing queued) is sent when it
            // can be at once, as the lazy acceptor would; the connection fails either way.
            struct Now<'a, 'b>(&'a mut Box<dyn Io>, &'a mut Context<'b>);
            impl Write for Now<'_, '_> {
                fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                    match Pin::new(&mut **self.0).poll_write(self.1, buf) {
                        Poll::Ready(r) => r,
                        Poll::Pending => Err(ErrorKind::WouldBlock.into()),
                    }
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            poll_fn(|cx| Poll::Ready(alert.write(&mut Now(&mut io, cx))))
                .await
                .ok();
            Err(std::io::Error::new(ErrorKind::InvalidData, e))
        }
    }
}

/// A plain HTTP request on a TLS-only port (`http://` typed for an `https://` server)
/// gets a readable 400, as nginx gives, rather than TLS alert bytes a browser shows as
/// a download or a cryptic error. The answer is written, then the request is read and
/// thrown away until the client closes (bounded by the setup timeout around this), so
/// that closing with unread input does not reset the connection before the client has
/// read the answer.
async fn answer_cleartext_request(mut io: Box<dyn Io>) -> Error {
    use std::pin::Pin;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    const WHY: &str = "This port speaks HTTPS only: the plain HTTP request was sent to an HTTPS port (use https://)";
    let mut answer = BytesMut::new();
    crate::h1::encode::error_response(&mut answer, 400, WHY);
    let mut sent = 0;
    let wrote = poll_fn(|cx| {
        while sent < answer.len() {
            match std::task::ready!(Pin::new(&mut io).poll_write(cx, &answer[sent..])) {
                Ok(0) => return std::task::Poll::Ready(false),
                Ok(n) => sent += n,
                Err(_) => return std::task::Poll::Ready(false),
            }
        }
        Pin::new(&mut io).poll_shutdown(cx).map(|r| r.is_ok())
    })
    .await;
    if wrote {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        poll_fn(|cx| loop {
            let mut buf = ReadBuf::new(&mut sink);
            match std::task::ready!(Pin::new(&mut io).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() && drained < 64 * 1024 => {
                    drained += buf.filled().len();
                }
                _ => return std::task::Poll::Ready(()),
            }
        })
        .await;
    }
    Error::protocol(400, "a plain HTTP request on a TLS-only port")
}

/// Reads what the client has sent so far (at least one byte) onto `buf`; EOF is an error.
async fn read_more(io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<()> {
    buf.reserve(4096);
    let n = poll_fn(|cx| poll_read_buf(io, buf, cx)).await?;
    if n == 0 {
        return Err(Error::closed("client closed during connection setup"));
    }
    Ok(())
}
