//! `Options`: everything `Server::listen` and `Server::new` take besides the handler —
//! lua-http's options table as a builder, with every limit given a default.

use std::{path::PathBuf, time::Duration};

use std::sync::Arc;

use crate::{
    h1::Limits,
    net::{Family, ListenSpec},
    rt::Controller,
    tls::Tls,
};

/// lua-http's default for both connection timeouts.
pub const DEFAULT_CONNECTION_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time allowed between requests on a keep-alive connection (lua-http: 10 s).
pub const DEFAULT_INTRA_STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1 keep-alive connection waits with nothing in flight before it parks
/// (gives back its task and buffers until its next request).
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_millis(50);
/// Time allowed from a request's first byte to the end of its head (nginx's
/// `client_header_timeout` is 60 s; a slowloris client holds a slot for at most this).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The least `h2_max_send_buffer_size` takes: one DATA frame of the smallest frame size.
const MIN_H2_SEND_BUFFER: usize = 16 * 1024;
/// How long buffered output may wait for a client that reads nothing (nginx's
/// `send_timeout` is 60 s): a client that stops reading cannot hold a connection forever.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request body may go without a byte arriving while a handler waits for it
/// (nginx's `client_body_timeout` is 60 s): a slow-POST client cannot hold a handler, a
/// socket and whatever the handler opened for its body forever.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `close()` lets in-flight requests finish before closing their connections.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which HTTP versions a server speaks (lua-http's `version` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// HTTP/1.0 and 1.1 only: ALPN offers `http/1.1`; a cleartext HTTP/2 preface is
    /// answered as a (bad) HTTP/1 request.
    Http1,
    /// HTTP/2 only: ALPN offers `h2`; cleartext clients must send the preface.
    Http2,
    /// Both (the default): ALPN prefers `h2`, cleartext HTTP/2 by prior knowledge.
    #[default]
    Any,
    /// HTTP/1.0 only (lua-http's `version = 1.0`): every request is taken as HTTP/1.0 and
    /// answered as `HTTP/1.0`, one per connection (a body of unknown length ends with the
    /// connection); ALPN offers `http/1.0`.
    Http10,
}

/// Which HTTP/2 implementation serves HTTP/2 connections ([`Options::h2_engine`]).
/// Both follow RFC 9113 and the same [`Options`]; a handler sees the same [`Stream`](crate::Stream)
/// either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum H2Engine {
    /// onstream's own engine (`src/h2own/`, the default): about 1.6 KB per idle
    /// connection, where the `h2` crate's holds about 20 KB, and fewer instructions per
    /// request. Passes h2spec and the whole test-suite.
    #[default]
    Own,
    /// The [`h2`](https://docs.rs/h2) crate (hyper's), onstream's first engine: more field
    /// time behind it. Differences, all within RFC 9113: it drops pseudo-header
    /// fields from trailers instead of resetting the stream, and counts no header fields
    /// ([`Options::max_headers`] does not apply to HTTP/2 on it).
    H2Crate,
}

impl Version {
    /// Whether HTTP/2 may be spoken.
    pub(crate) fn allows_h2(self) -> bool {
        matches!(self, Version::Http2 | Version::Any)
    }
}

/// Server options, built by chaining.
///
/// ```
/// use std::time::Duration;
/// let opts = onstream::Options::new()
///     .host("127.0.0.1")
///     .port(8080)
///     .max_concurrent(1000)
///     .header_read_timeout(Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) listen: ListenSpec,
    pub(crate) max_concurrent: usize,
    pub(crate) connection_setup_timeout: Duration,
    pub(crate) intra_stream_timeout: Duration,
    pub(crate) park_after: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) controller: Option<Controller>,
    pub(crate) tls: Tls,
    pub(crate) tls_config: Option<Arc<rustls::ServerConfig>>,
    pub(crate) version: Version,
    pub(crate) h2: H2Limits,
}

/// HTTP/2 limits (the h2 crate's settings), with hyper's defaults where it has them.
#[derive(Debug, Clone)]
pub(crate) struct H2Limits {
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub initial_connection_window_size: u32,
    pub max_send_buffer_size: usize,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
    /// Which engine serves HTTP/2 (`Options::h2_engine`).
    pub engine: H2Engine,
}

impl Default for H2Limits {
    fn default() -> Self {
        H2Limits {
            // RFC 9113 §6.5.2 recommends at least 100; lua-http advertised no bound.
            max_concurrent_streams: 100,
            // 1 MiB per stream and per connection, as hyper: a 64 KiB window caps a
            // stream at 64 KiB per round trip.
            initial_window_size: 1024 * 1024,
            initial_connection_window_size: 1024 * 1024,
            // Buffered output per stream (hyper's 400 KiB).
            max_send_buffer_size: 400 * 1024,
            // Rapid reset (CVE-2023-44487): streams reset by the client before the
            // server took them, and streams the server had to reset, are bounded.
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            engine: H2Engine::Own,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: ListenSpec::default(),
            max_concurrent: usize::MAX,
            connection_setup_timeout: DEFAULT_CONNECTION_SETUP_TIMEOUT,
            intra_stream_timeout: DEFAULT_INTRA_STREAM_TIMEOUT,
            park_after: DEFAULT_PARK_AFTER,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            limits: Limits::default(),
            controller: None,
            tls: Tls::default(),
            tls_config: None,
            version: Version::default(),
            h2: H2Limits::default(),
        }
    }
}

impl Options {
    /// The defaults: no address yet, `Tls::Auto`, no connection limit, 10 s timeouts,
    /// nginx-like request size limits.
    pub fn new() -> Options {
        Options::default()
    }

    /// The local address or name to listen on (lua-http's `host`).
    pub fn host(mut self, host: impl Into<String>) -> Options {
        self.listen.host = Some(host.into());
        self
    }

    /// The TCP port; 0 picks a free one. Without it: 80 with `Tls::Off`, 443 with
    /// `Tls::On`, and an error with `Tls::Auto` (as lua-http).
    pub fn port(mut self, port: u16) -> Options {
        self.listen.port = Some(port);
        self
    }

    /// Listen on a unix socket at `path` instead of TCP.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Options {
        self.listen.path = Some(path.into());
        self
    }

    /// Which address family `host` is resolved to.
    pub fn family(mut self, family: Family) -> Options {
        self.listen.family = family;
        self
    }

    /// Permissions to give the unix socket file (e.g. `0o660`).
    pub fn mode(mut self, mode: u32) -> Options {
        self.listen.mode = Some(mode);
        self
    }

    /// Bind the unix socket under a umask of 0777, so it never exists with wider
    /// permissions than `mode`.
    pub fn mask(mut self, mask: bool) -> Options {
        self.listen.mask = mask;
        self
    }

    /// Remove a stale unix socket file before binding.
    pub fn unlink(mut self, unlink: bool) -> Options {
        self.listen.unlink = unlink;
        self
    }

    /// Refuse IPv4-mapped connections on an IPv6 socket.
    pub fn v6only(mut self, v6only: bool) -> Options {
        self.listen.v6only = v6only;
        self
    }

    /// `SO_REUSEADDR` (on by default, as in lua-http).
    pub fn reuseaddr(mut self, on: bool) -> Options {
        self.listen.reuseaddr = on;
        self
    }

    /// `SO_REUSEPORT`: several servers (one per core) may listen on the same port.
    pub fn reuseport(mut self, on: bool) -> Options {
        self.listen.reuseport = on;
        self
    }

    /// The listen backlog (default 1024, capped by the kernel's `somaxconn`).
    pub fn backlog(mut self, backlog: i32) -> Options {
        self.listen.backlog = backlog;
        self
    }

    /// Stop accepting at this many open connections, resume below it.
    pub fn max_concurrent(mut self, n: usize) -> Options {
        self.max_concurrent = n;
        self
    }

    /// How long a new connection may take to send its first bytes.
    pub fn connection_setup_timeout(mut self, t: Duration) -> Options {
        self.connection_setup_timeout = t;
        self
    }

    /// How long a keep-alive connection may sit idle between requests.
    pub fn intra_stream_timeout(mut self, t: Duration) -> Options {
        self.intra_stream_timeout = t;
        self
    }

    /// How long an HTTP/1 keep-alive connection waits for its next request, with nothing
    /// in flight, before it parks: it then gives back its task and buffers and waits as
    /// a record of a few hundred bytes, and a new task takes it up when input comes or its
    /// idle deadline passes (default 50 ms). Shorter saves memory sooner (and keeps a burst
    /// of new connections from growing the heap); longer spares connections that pause
    /// briefly between requests the few allocations of parking and taking up. A value at
    /// least `intra_stream_timeout` never parks.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let options = onstream::Options::new().park_after(Duration::ZERO);
    /// ```
    pub fn park_after(mut self, t: Duration) -> Options {
        self.park_after = t;
        self
    }

    /// How long a request's head may take from its first byte to its end (slowloris).
    pub fn header_read_timeout(mut self, t: Duration) -> Options {
        self.header_read_timeout = t;
        self
    }

    /// How long output may wait without a byte being taken by the client (default 60 s,
    /// as nginx's `send_timeout`). Over HTTP/1 the connection is then closed. Over HTTP/2
    /// a stream that gets no send capacity (flow-control credit) for this long is reset
    /// (`CANCEL`) and its handler's write fails with a timeout; a connection whose socket
    /// takes no byte for this long is closed.
    pub fn send_timeout(mut self, t: Duration) -> Options {
        self.send_timeout = t;
        self
    }

    /// How long a handler waiting for the request body waits for its next byte (default
    /// 60 s, as nginx's `client_body_timeout`), over HTTP/1 and HTTP/2 alike. When it
    /// passes, the read fails with a timeout error, an unanswered request is answered
    /// `408`, and the rest of the body is not waited for (HTTP/1 closes the connection,
    /// HTTP/2 resets the stream).
    pub fn body_read_timeout(mut self, t: Duration) -> Options {
        self.body_read_timeout = t;
        self
    }

    /// How long `close()` lets in-flight requests finish.
    pub fn close_timeout(mut self, t: Duration) -> Options {
        self.close_timeout = t;
        self
    }

    /// The longest request line; longer ones get `414 URI Too Long` (default 8 KiB, as
    /// nginx).
    pub fn max_request_line(mut self, n: usize) -> Options {
        self.limits.max_request_line = n;
        self
    }

    /// The largest request head (request line and fields) and trailer section; larger
    /// ones get `431` (default 64 KiB). Over HTTP/2 it is the header list size (RFC 9113
    /// §6.5.2, announced in SETTINGS).
    pub fn max_header_size(mut self, n: usize) -> Options {
        self.limits.max_head = n;
        self
    }

    /// The most header fields in a request; more get `431` (default 100, as hyper). Over
    /// HTTP/2 pseudo-header fields are not counted, and only the own engine counts
    /// ([`H2Engine::Own`]; the `h2` crate bounds the list's size only).
    pub fn max_headers(mut self, n: usize) -> Options {
        self.limits.max_headers = n;
        self
    }

    /// How much of a request body the handler left unread the server reads and throws
    /// away to keep the connection for the next request; a longer rest closes the
    /// connection instead (default 1 MiB, as hyper).
    pub fn max_discard(mut self, n: u64) -> Options {
        self.limits.max_discard = n;
        self
    }

    /// Lingering close (nginx's `lingering_time`): after its last response, a connection
    /// that is closing keeps reading — and throwing away — at most `bytes` for at most
    /// `time`, so that unread input does not make the kernel reset the connection and
    /// destroy that response in flight (default 1 s and 256 KiB; never longer than
    /// `intra_stream_timeout`). `Duration::ZERO` closes at once.
    pub fn lingering_close(mut self, time: Duration, bytes: usize) -> Options {
        self.limits.linger_time = time;
        self.limits.linger_bytes = bytes;
        self
    }

    /// How many pipelined HTTP/1 requests a connection may have in flight (read and not yet
    /// answered) before it stops reading until a response is done (default 16). A client
    /// that sends requests without reading the responses then holds at most this many
    /// handlers, and what they opened, per connection. hyper and nginx answer one at a
    /// time (1); a larger value lets handlers of a pipelined batch run at once.
    pub fn max_pipelined(mut self, n: usize) -> Options {
        self.limits.max_pipelined = n.max(1);
        self
    }

    /// How many bytes of output an HTTP/1 connection buffers before a handler's writes
    /// wait for the client to read (default 64 KiB). HTTP/2 has its own send buffer
    /// ([`Options::h2_max_send_buffer_size`]).
    pub fn write_buffer_size(mut self, n: usize) -> Options {
        self.limits.write_buffer = n.max(1);
        self
    }

    /// TLS on, off, or decided per connection by its first byte (`Tls::Auto`, the
    /// default, as lua-http's `tls = nil`).
    pub fn tls(mut self, tls: Tls) -> Options {
        self.tls = tls;
        self
    }

    /// The TLS configuration (lua-http's `ctx`); without it, TLS uses a self-signed
    /// certificate for the listen host. See [`crate::tls::config_from_pem_files`].
    pub fn tls_config(mut self, config: Arc<rustls::ServerConfig>) -> Options {
        self.tls_config = Some(config);
        self
    }

    /// Which HTTP versions to speak (default: both).
    pub fn version(mut self, version: Version) -> Options {
        self.version = version;
        self.limits.http10_only = version == Version::Http10;
        self
    }

    /// HTTP/2: the most streams a client may have open at once (default 100).
    pub fn max_concurrent_streams(mut self, n: u32) -> Options {
        self.h2.max_concurrent_streams = n;
        self
    }

    /// HTTP/2: the flow-control window per stream and per connection (default 1 MiB each).
    pub fn h2_window_size(mut self, stream: u32, connection: u32) -> Options {
        self.h2.initial_window_size = stream;
        self.h2.initial_connection_window_size = connection;
        self
    }

    /// HTTP/2: output buffered per stream before a writing handler waits (default 400 KiB).
    ///
    /// On the own engine ([`H2Engine::Own`]) a stream buffers nothing for flow-control
    /// window (a write waits for credit) and at most this many bytes of its DATA for the
    /// socket; a connection also holds at most 64 KiB of output for the socket, whichever
    /// bound comes first. On the `h2` crate's it also counts DATA waiting for window.
    /// At least 16 KiB (one DATA frame of RFC 9113's smallest frame size): a bound of
    /// nothing stalled every response body until `send_timeout`, and one of a few bytes
    /// cut bodies into frames so small that clients take them for a flood.
    pub fn h2_max_send_buffer_size(mut self, n: usize) -> Options {
        self.h2.max_send_buffer_size = n.max(MIN_H2_SEND_BUFFER);
        self
    }

    /// HTTP/2 rapid-reset bounds (CVE-2023-44487): streams reset by the client before
    /// being handled (default 20) and streams reset by the server for errors (default
    /// 1024) before the connection is closed with GOAWAY.
    pub fn h2_reset_limits(mut self, pending_accept: usize, local_error: usize) -> Options {
        self.h2.max_pending_accept_reset_streams = pending_accept;
        self.h2.max_local_error_reset_streams = local_error;
        self
    }

    /// HTTP/2: which engine serves it (default [`H2Engine::Own`], onstream's own; the
    /// `h2` crate's stays available as [`H2Engine::H2Crate`]). HTTP/1 is not affected.
    pub fn h2_engine(mut self, engine: H2Engine) -> Options {
        self.h2.engine = engine;
        self
    }

    /// Run on this controller (lua-http's `cq`) instead of a new one, so several servers
    /// and other tasks share one loop.
    pub fn controller(mut self, ctl: Controller) -> Options {
        self.controller = Some(ctl);
        self
    }
}
