//! `take_socket` for Lua: the connection a handler takes over becomes a cqueues socket.
//!
//! The taken connection may be TLS (rustls state cannot move to OpenSSL) or an HTTP/2
//! tunnel, and it starts with bytes onstream already read; so the handler gets one end
//! of a socket pair, and a task on the server's loop copies bytes both ways between the
//! other end and the taken connection, buffered bytes first. Either side closing its
//! writing half is passed on; the task ends when both directions have.

use std::{io, os::fd::IntoRawFd, rc::Rc};

use onstream::{rt::UnixStream, Upgraded};

use crate::Shared;

/// Starts the bridge and returns the descriptor of the handler's end (the caller owns it).
pub(crate) fn bridge(mut up: Upgraded, shared: &Rc<Shared>) -> io::Result<i32> {
    let ctl = shared
        .ctl
        .borrow()
        .clone()
        .ok_or_else(|| io::Error::other("server gone"))?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut ours = UnixStream::from_std(&ctl, ours)?;
    shared.n_bridges.set(shared.n_bridges.get() + 1);
    let count = shared.clone();
    ctl.spawn(async move {
        if let Err(e) = tokio::io::copy_bidirectional(&mut up, &mut ours).await {
            let _ = e; // The peer or the handler went away: nothing to report.
        }
        count.n_bridges.set(count.n_bridges.get() - 1);
    })
    .detach();
    Ok(theirs.into_raw_fd())
}
