//! The crate's one public error type.
//!
//! `Error` wraps a private kind (hyper's `src/error.rs` pattern): callers branch on
//! [`Error::kind`] or on the predicates (`is_disconnect`, `is_timeout`), and reach the OS
//! error through [`Error::source`] or [`Error::raw_os_error`]. The `Display` wording is not
//! API.
//!
//! Expected disconnects — the peer reset or went away, an idle connection timed out — are
//! classified once here so the server can keep them away from `onerror` (lua-http's
//! `handle_socket` filters EPIPE, ECONNRESET and ETIMEDOUT the same way).
//!
//! An I/O error is classified by where it comes from, not by its `io::ErrorKind`: a read
//! or write on a client's connection that fails is the peer's doing (or the network's)
//! whatever the kind — a TLS alert or a bad record is `InvalidData`, as is a corrupt file
//! a handler reads — so the connection code wraps such errors with `Error::peer`, and
//! every other `io::Error` stays [`ErrorKind::Io`].

use std::{error::Error as StdError, fmt, io};

/// The result type of onstream's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from onstream: I/O, a protocol violation by the peer, a timeout, or a misuse.
pub struct Error {
    kind: ErrorKind,
    /// A short description of what was being done, e.g. "bind 127.0.0.1:80".
    context: Option<Box<str>>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// What kind of failure an [`Error`] is. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An operating-system I/O error (the `source` is the `io::Error`).
    Io,
    /// The peer broke the protocol; the `u16` is the HTTP status the server answers with.
    Protocol(u16),
    /// A deadline passed.
    Timeout,
    /// The stream or connection is closed: the peer closed, reset or broke it (a bad TLS
    /// record or alert, say), or it was closed locally. When a read or write on the
    /// connection failed, the `source` is that `io::Error`.
    Closed,
    /// A request handler failed or panicked.
    Handler,
    /// The caller used the API wrongly (e.g. wrote a body after ending the stream).
    Usage,
    /// Listening or option errors (bad address, TLS Auto without a port, …).
    Config,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Error {
        Error {
            kind,
            context: None,
            source: None,
        }
    }

    pub(crate) fn with_context(mut self, context: impl Into<Box<str>>) -> Error {
        self.context = Some(context.into());
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Error {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn io(err: io::Error) -> Error {
        Error::new(ErrorKind::Io).with_source(err)
    }

    /// A failed read or write on a client's connection: a disconnect (kind `Closed`, or
    /// `Timeout` for a socket timeout) whatever the `io::Error`, which stays the source.
    /// Used where the error comes from the connection, so that a handler passing it on
    /// with `?` does not reach `onerror`.
    pub(crate) fn peer(err: io::Error) -> Error {
        let err = match err.downcast::<Error>() {
            // Already classified, and carried through `io::Error` (see `upgrade.rs`).
            Ok(classified) => return classified,
            Err(err) => err,
        };
        let kind = if err.kind() == io::ErrorKind::TimedOut {
            ErrorKind::Timeout
        } else {
            ErrorKind::Closed
        };
        Error::new(kind).with_source(err)
    }

    pub(crate) fn protocol(status: u16, what: &'static str) -> Error {
        Error::new(ErrorKind::Protocol(status)).with_context(what)
    }

    pub(crate) fn timeout(what: &'static str) -> Error {
        Error::new(ErrorKind::Timeout).with_context(what)
    }

    pub(crate) fn closed(what: &'static str) -> Error {
        Error::new(ErrorKind::Closed).with_context(what)
    }

    pub(crate) fn usage(what: &'static str) -> Error {
        Error::new(ErrorKind::Usage).with_context(what)
    }

    pub(crate) fn config(what: impl Into<Box<str>>) -> Error {
        Error::new(ErrorKind::Config).with_context(what)
    }

    /// An error for a handler to return, carrying any error type as its source.
    ///
    /// ```
    /// let err = onstream::Error::handler("database unavailable");
    /// assert_eq!(err.kind(), onstream::ErrorKind::Handler);
    /// ```
    pub fn handler(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Error {
        Error::new(ErrorKind::Handler).with_source(source)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status a protocol error is answered with (400, 413, 414, 431, 501, 505).
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::Protocol(status) => Some(status),
            _ => None,
        }
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
            || self.io_error().map(|e| e.kind()) == Some(io::ErrorKind::TimedOut)
    }

    /// Whether this is an expected end of a connection — reset, broken pipe, closed, EOF,
    /// idle timeout, any failure of the connection itself such as a bad TLS record —
    /// rather than a fault worth reporting.
    pub fn is_disconnect(&self) -> bool {
        if matches!(self.kind, ErrorKind::Closed | ErrorKind::Timeout) {
            return true;
        }
        self.io_error()
            .is_some_and(|e| is_disconnect_kind(e.kind()))
    }

    /// The OS error number, when this wraps one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }

    fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()?.downcast_ref::<io::Error>()
    }
}

/// The kinds of I/O error that say by themselves that a connection ended: whatever
/// wraps them, they are disconnects.
pub(crate) fn is_disconnect_kind(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::TimedOut
            | io::ErrorKind::NotConnected
    )
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        // An `Error` that went through an `io::Error` (`From<Error> for io::Error`, or a
        // taken socket's peer fault) comes back as it was, with its kind.
        let err = match err.downcast::<Error>() {
            Ok(inner) => return inner,
            Err(err) => err,
        };
        if err.kind() == io::ErrorKind::TimedOut {
            return Error::new(ErrorKind::Timeout).with_source(err);
        }
        Error::io(err)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Closed => io::ErrorKind::BrokenPipe,
            ErrorKind::Protocol(_) => io::ErrorKind::InvalidData,
            _ => match err.io_error() {
                Some(e) => e.kind(),
                None => io::ErrorKind::Other,
            },
        };
        io::Error::new(kind, err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(c) = &self.context {
            d.field("context", c);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::Io => "I/O error",
            ErrorKind::Protocol(_) => "protocol error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Closed => "closed",
            ErrorKind::Handler => "handler error",
            ErrorKind::Usage => "misuse",
            ErrorKind::Config => "configuration error",
        };
        f.write_str(what)?;
        if let Some(status) = self.status() {
            write!(f, " ({status})")?;
        }
        if let Some(c) = &self.context {
            write!(f, ": {c}")?;
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_fault_is_a_disconnect_whatever_its_io_kind() {
        let bad_record = io::Error::new(io::ErrorKind::InvalidData, "bad TLS record");
        assert!(
            !Error::from(io::Error::new(io::ErrorKind::InvalidData, "corrupt file"))
                .is_disconnect()
        );
        let err = Error::peer(bad_record);
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert!(err.is_disconnect());
        let source = err.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            source.map(io::Error::kind),
            Some(io::ErrorKind::InvalidData)
        );
    }

    #[test]
    fn a_peer_fault_keeps_its_os_error() {
        let err = Error::peer(io::Error::from_raw_os_error(libc::EHOSTUNREACH));
        assert!(err.is_disconnect());
        assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH));
        let timed_out = Error::peer(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        assert_eq!(timed_out.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn an_error_carried_through_io_error_comes_back_as_it_was() {
        let through = io::Error::from(Error::handler("the handler's own"));
        assert_eq!(Error::from(through).kind(), ErrorKind::Handler);
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            Error::peer(io::Error::other("x")),
        );
        assert_eq!(Error::from(wrapped).kind(), ErrorKind::Closed);
    }
}
