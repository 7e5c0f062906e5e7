//! Listening sockets and adopted connections, on `socket2`: every listen option of
//! lua-http's `server.listen` (TCP v4/v6 with `v6only`, unix sockets with `mode`, `mask` and
//! `unlink`, `reuseaddr`, `reuseport`, backlog), and adoption of sockets made elsewhere
//! (std listeners, inherited or received file descriptors).
//!
//! Only binding and accepting live here; what is done with an accepted socket is the
//! server's business.

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::PermissionsExt,
    },
    path::{Path, PathBuf},
};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::{
    error::{Error, Result},
    rt::{Controller, Registered, TcpStream, UnixStream},
};

/// Where a server listens, or a socket it adopts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    /// A TCP address.
    Inet(SocketAddr),
    /// A unix socket path (empty for an unnamed socket).
    Unix(PathBuf),
}

impl LocalAddr {
    /// The TCP address, if this is one.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            LocalAddr::Inet(a) => Some(*a),
            LocalAddr::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalAddr::Inet(a) => a.fmt(f),
            LocalAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The address family to resolve `host` to (lua-http's `family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Whatever `host` resolves to first.
    #[default]
    Any,
    /// IPv4 only.
    Inet,
    /// IPv6 only.
    Inet6,
}

/// The socket part of the listen options.
#[derive(Debug, Clone)]
pub(crate) struct ListenSpec {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathBuf>,
    pub family: Family,
    pub mode: Option<u32>,
    pub mask: bool,
    pub unlink: bool,
    pub v6only: bool,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub backlog: i32,
}

impl Default for ListenSpec {
    fn default() -> Self {
        ListenSpec {
            host: None,
            port: None,
            path: None,
            family: Family::Any,
            mode: None,
            mask: false,
            unlink: false,
            v6only: false,
            reuseaddr: true,
            reuseport: false,
            // The kernel caps this at net.core.somaxconn.
            backlog: 1024,
        }
    }
}

/// A listening socket not yet registered with a controller (bind is lazy, as in lua-http).
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A unix-domain listener.
    Unix(std::os::unix::net::UnixListener),
}

impl From<std::net::TcpListener> for Listener {
    fn from(l: std::net::TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

impl From<std::os::unix::net::UnixListener> for Listener {
    fn from(l: std::os::unix::net::UnixListener) -> Listener {
        Listener::Unix(l)
    }
}

impl From<OwnedFd> for Listener {
    /// Adopts a listening socket's descriptor (systemd socket activation, inherited fds);
    /// the family is read from the socket itself.
    fn from(fd: OwnedFd) -> Listener {
        if is_unix_socket(fd.as_raw_fd()) {
            Listener::Unix(std::os::unix::net::UnixListener::from(fd))
        } else {
            Listener::Tcp(std::net::TcpListener::from(fd))
        }
    }
}

/// A connected socket handed to [`Server::add_socket`](crate::Server::add_socket).
#[derive(Debug)]
pub enum Connected {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A unix-domain connection.
    Unix(std::os::unix::net::UnixStream),
}

impl From<std::net::TcpStream> for Connected {
    fn from(s: std::net::TcpStream) -> Connected {
        Connected::Tcp(s)
    }
}

impl From<std::os::unix::net::UnixStream> for Connected {
    fn from(s: std::os::unix::net::UnixStream) -> Connected {
        Connected::Unix(s)
    }
}

impl From<OwnedFd> for Connected {
    /// Adopts a connected socket's descriptor (inetd, `SCM_RIGHTS`).
    fn from(fd: OwnedFd) -> Connected {
        if is_unix_socket(fd.as_raw_fd()) {
            Connected::Unix(std::os::unix::net::UnixStream::from(fd))
        } else {
            Connected::Tcp(std::net::TcpStream::from(fd))
        }
    }
}

fn is_unix_socket(fd: RawFd) -> bool {
    // SAFETY: `fd` is borrowed only for this call; `ManuallyDrop` keeps it open afterwards.
    #[allow(unsafe_code)]
    let sock = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    sock.domain().map(|d| d == Domain::UNIX).unwrap_or(false)
}

/// Binds and listens according to `spec`. `default_port` applies when no port is given.
pub(crate) fn bind(spec: &ListenSpec, default_port: Option<u16>) -> Result<Listener> {
    match (&spec.path, &spec.host) {
        (Some(path), _) => bind_unix(spec, path),
        (None, Some(host)) => {
            let port = spec.port.or(default_port).ok_or_else(|| {
                Error::config("a port is required (TLS Auto has no default port)")
            })?;
            bind_tcp(spec, host, port)
        }
        (None, None) => Err(Error::config("either host or path is required")),
    }
}

fn bind_tcp(spec: &ListenSpec, host: &str, port: u16) -> Result<Listener> {
    let what = || format!("listen on {host}:{port}");
    let addr = tcp_address(spec, host, port).map_err(|e| e.with_context(what()))?;
    let listen = || -> io::Result<Socket> {
        let socket = tcp_socket(spec, addr)?;
        socket.listen(spec.backlog)?;
        Ok(socket)
    };
    let socket = listen().map_err(|e| Error::io(e).with_context(what()))?;
    Ok(Listener::Tcp(socket.into()))
}

/// Fails with "Address already in use" when the address of `spec` is taken, even by
/// sockets that share their port with `SO_REUSEPORT`: a bind without the option is
/// refused by any listener there. [`Workers`](crate::Workers) ask this before binding
/// their `SO_REUSEPORT` sockets, so that a second server started on a busy port fails
/// instead of silently taking half its connections. (Between this check and the bind,
/// another process of the same user could still take the port: the kernel offers no
/// way to close that gap short of one shared socket.)
pub(crate) fn check_port_free(spec: &ListenSpec, default_port: Option<u16>) -> Result<()> {
    let (Some(host), None) = (&spec.host, &spec.path) else {
        return Ok(());
    };
    let Some(port) = spec.port.or(default_port).filter(|&p| p != 0) else {
        return Ok(());
    };
    let what = || format!("listen on {host}:{port}");
    let addr = tcp_address(spec, host, port).map_err(|e| e.with_context(what()))?;
    let probe = ListenSpec {
        reuseport: false,
        ..spec.clone()
    };
    // Bound, never listening: no connection can land on it.
    tcp_socket(&probe, addr).map_err(|e| Error::io(e).with_context(what()))?;
    Ok(())
}

fn tcp_address(spec: &ListenSpec, host: &str, port: u16) -> Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, port).to_socket_addrs().map_err(Error::io)?;
    addrs
        .into_iter()
        .find(|a| match spec.family {
            Family::Any => true,
            Family::Inet => a.is_ipv4(),
            Family::Inet6 => a.is_ipv6(),
        })
        .ok_or_else(|| Error::config("no address of the requested family"))
}

/// A TCP socket bound to `addr` with the options of `spec`, not listening yet.
fn tcp_socket(spec: &ListenSpec, addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(spec.v6only)?;
    }
    socket.set_reuse_address(spec.reuseaddr)?;
    if spec.reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

fn bind_unix(spec: &ListenSpec, path: &Path) -> Result<Listener> {
    let what = || format!("listen on unix:{}", path.display());
    if spec.unlink {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io(e).with_context(what()));
            }
            _ => {}
        }
    }
    let listen = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        let addr = SockAddr::unix(path)?;
        // `mask`: bind under a umask that grants nothing, so the socket never exists with
        // wider permissions than `mode` will give it (lua-http's `mask`).
        let bound = if spec.mask {
            let old = umask(0o777);
            let r = socket.bind(&addr);
            umask(old);
            r
        } else {
            socket.bind(&addr)
        };
        bound?;
        if let Some(mode) = spec.mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        socket.listen(spec.backlog)?;
        Ok(socket)
    };
    let socket = listen().map_err(|e| Error::io(e).with_context(what()))?;
    Ok(Listener::Unix(socket.into()))
}

fn umask(mask: u32) -> u32 {
    // SAFETY: umask has no preconditions; it only swaps the process's file mode mask.
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(mask as libc::mode_t) as u32
    }
}

impl Listener {
    pub(crate) fn local_addr(&self) -> Result<LocalAddr> {
        let addr = match self {
            Listener::Tcp(l) => LocalAddr::Inet(l.local_addr()?),
            Listener::Unix(l) => LocalAddr::Unix(
                l.local_addr()?
                    .as_pathname()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            ),
        };
        Ok(addr)
    }

    /// Registers the listener with a controller, making it non-blocking.
    pub(crate) fn register(self, ctl: &Controller) -> Result<Accepting> {
        let accepting = match self {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let local = l.local_addr().ok().filter(|a| !a.ip().is_unspecified());
                Accepting::Tcp(
                    Registered::new(ctl, mio::net::TcpListener::from_std(l))?,
                    local,
                )
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                Accepting::Unix(Registered::new(ctl, mio::net::UnixListener::from_std(l))?)
            }
        };
        Ok(accepting)
    }
}

/// A listener registered with a controller.
#[derive(Debug)]
pub(crate) enum Accepting {
    /// A TCP listener and, when it listens on one address (not `0.0.0.0` or `::`), that
    /// address: the local address of every connection it accepts, which then need not be
    /// asked of each socket.
    Tcp(Registered<mio::net::TcpListener>, Option<SocketAddr>),
    Unix(Registered<mio::net::UnixListener>),
}

/// An accepted (or adopted) connection, registered with the controller.
#[derive(Debug)]
pub(crate) enum Conn {
    /// A TCP connection with its peer's and its local address where accept(2) and the
    /// listener told them (`None`: ask the socket). Known, they save a getpeername(2) and
    /// a getsockname(2) per connection, 2 of the ~22 system calls of a TLS connection
    /// that carries one request.
    Tcp(TcpStream, Option<SocketAddr>, Option<SocketAddr>),
    Unix(UnixStream),
}

impl Conn {
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Conn::Tcp(s, peer, _) => peer.or_else(|| s.peer_addr().ok()),
            Conn::Unix(_) => None,
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Conn::Tcp(s, _, local) => local.or_else(|| s.local_addr().ok()),
            Conn::Unix(_) => None,
        }
    }

    pub(crate) fn adopt(ctl: &Controller, sock: Connected) -> Result<Conn> {
        // A pipe or a file passed by mistake (`--inetd` run from a shell pipeline) would
        // otherwise fail later and silently, on the first read.
        let fd = match &sock {
            Connected::Tcp(s) => s.as_fd(),
            Connected::Unix(s) => s.as_fd(),
        };
        match socket2::SockRef::from(&fd).r#type() {
            Ok(t) if t == Type::STREAM => {}
            Ok(_) => return Err(Error::config("add_socket: not a stream socket")),
            Err(e) => {
                return Err(Error::io(e).with_context("add_socket: the descriptor is not a socket"))
            }
        }
        Ok(match sock {
            Connected::Tcp(s) => {
                let _ = s.set_nodelay(true);
                Conn::Tcp(TcpStream::from_std(ctl, s)?, None, None)
            }
            Connected::Unix(s) => Conn::Unix(UnixStream::from_std(ctl, s)?),
        })
    }
}

impl Accepting {
    /// Accepts one waiting connection, or waits for one.
    pub(crate) fn poll_accept(
        &self,
        ctl: &Controller,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<Conn>> {
        match self {
            Accepting::Tcp(l, local) => l.poll_read_with(cx, |l| l.accept()).map(|r| {
                let (s, peer) = r?;
                // Responses are written whole; Nagle would only delay them.
                let _ = s.set_nodelay(true);
                Ok(Conn::Tcp(TcpStream::from_mio(ctl, s)?, Some(peer), *local))
            }),
            Accepting::Unix(l) => l
                .poll_read_with(cx, |l| l.accept())
                .map(|r| Ok(Conn::Unix(UnixStream::from_mio(ctl, r?.0)?))),
        }
    }
}
