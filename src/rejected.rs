//! What the server answered by itself, before any handler ran, as the server reports it
//! to [`Server::set_onrejected`](crate::Server::set_onrejected): a malformed or oversized
//! HTTP/1 request head (400, 414, 431, 501, 505) or one that did not arrive in time (408).
//!
//! These requests never reach the `onstream` handler, so an application that logs
//! requests from its handler would miss exactly the ones an attacker or a broken client
//! sends. nginx logs them in its access log; this hook lets an application do the same
//! without parsing anything itself.

use std::net::SocketAddr;

/// A request the server refused before any handler ran. The connection it came on is
/// closed once the answer is sent.
///
/// ```no_run
/// use onstream::{Options, Server};
///
/// let server = Server::listen(Options::new().host("127.0.0.1").port(8000), |_srv, stream| async move {
///     stream.get_headers().await?;
///     Ok(())
/// })?;
/// server.set_onrejected(|_server, r| {
///     eprintln!("{:?} \"{}\" {}", r.peer, r.request_line.unwrap_or("-"), r.status);
/// });
/// # Ok::<(), onstream::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Rejected<'a> {
    /// The status the server answered (400, 408, 414, 431, 501 or 505).
    pub status: u16,
    /// Why, in a few words (the answer's body says the same).
    pub reason: &'a str,
    /// The client's address, when the connection has one (not on a unix socket).
    pub peer: Option<SocketAddr>,
    /// The request-line as received, without its line ending, when a whole one arrived
    /// within the request-line limit; bytes that are not UTF-8 are replaced (U+FFFD).
    /// `None` for 414, and when the head was cut short.
    pub request_line: Option<&'a str>,
}

/// A rejected-request hook (see [`Server::set_onrejected`](crate::Server::set_onrejected)).
pub type OnRejected = Box<dyn FnMut(&crate::ServerHandle, &Rejected<'_>)>;
