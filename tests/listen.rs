//! Listen options over real sockets: IPv6, address families, `SO_REUSEPORT`, bind
//! conflicts, unix socket files (`unlink`), adopted listening descriptors and bind errors.

mod common;

use std::{
    collections::HashSet,
    io::{BufReader, Write},
    os::{fd::OwnedFd, unix::net::UnixStream},
};

use common::*;
use onstream::{ErrorKind, Family, LocalAddr, Options, Server, ServerHandle, Stream};

const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// A handler answering every request with `name` as the body.
fn named(
    name: &'static str,
) -> impl FnMut(
    ServerHandle,
    Stream,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = onstream::Result<()>>>> {
    move |_srv, stream| {
        Box::pin(async move {
            stream.get_headers().await?;
            respond(&stream, "200", name).await
        })
    }
}

/// One `Connection: close` GET over a unix socket at `path`, parsed.
fn unix_get(path: &std::path::Path, target: &str) -> Response {
    let client = UnixStream::connect(path).expect("connect to the unix socket");
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    (&client)
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    read_response(&mut BufReader::new(&client))
}

/// Leaves a stale socket file at `path`: a unix listener bound there, then dropped (the
/// file outlives the socket, as after a crash).
fn stale_socket_file(path: &std::path::Path) {
    drop(std::os::unix::net::UnixListener::bind(path).expect("bind the stale socket"));
    assert!(path.exists(), "the stale socket file is gone");
}

/// `host("::1")` listens on the IPv6 loopback and serves requests there (skipped only when
/// the sandbox has no IPv6 loopback: binding `::1` fails with `EADDRNOTAVAIL`).
#[test]
fn host_ipv6_loopback_serves_over_ipv6() {
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            eprintln!("skipping: no IPv6 loopback here ({e})");
            return;
        }
        Err(e) => panic!("binding [::1]:0 failed unexpectedly: {e}"),
    }
    let server =
        TestServer::build(|| Server::listen(Options::new().host("::1").port(0), path_echo()));
    let addr = server.addr();
    assert!(addr.is_ipv6(), "bound {addr}, not an IPv6 address");
    assert_eq!(addr.ip(), std::net::Ipv6Addr::LOCALHOST);
    assert_ne!(addr.port(), 0);
    assert_eq!(hyper_get(addr, "/over-v6").body, "/over-v6");
    let res = parse_one(&raw_request(addr, GET_CLOSE));
    assert_eq!(res.status, 200);
}

/// `family(Family::Inet)` with host `localhost` binds an IPv4 address (whatever order the
/// resolver gives `localhost`'s addresses in) and serves on it.
#[test]
fn family_inet_with_localhost_binds_ipv4() {
    let server = TestServer::build(|| {
        Server::listen(
            Options::new()
                .host("localhost")
                .port(0)
                .family(Family::Inet),
            path_echo(),
        )
    });
    let addr = server.addr();
    assert!(addr.is_ipv4(), "family Inet bound {addr}");
    assert!(addr.ip().is_loopback(), "localhost bound {addr}");
    assert_eq!(hyper_get(addr, "/v4").body, "/v4");
}

/// With `reuseport(true)` two servers (each on its own thread) bind the same port, and
/// the kernel spreads connections over both: each one's handler answers at least once
/// within 200 connections.
#[test]
fn reuseport_lets_two_servers_share_a_port_and_both_answer() {
    let first = TestServer::build(|| {
        Server::listen(
            Options::new().host("127.0.0.1").port(0).reuseport(true),
            named("first"),
        )
    });
    let port = first.addr().port();
    let second = TestServer::build(move || {
        Server::listen(
            Options::new().host("127.0.0.1").port(port).reuseport(true),
            named("second"),
        )
    });
    assert_eq!(second.addr(), first.addr());

    let mut seen = HashSet::new();
    for _ in 0..200 {
        let res = parse_one(&raw_request(first.addr(), GET_CLOSE));
        assert_eq!(res.status, 200);
        seen.insert(res.body_str().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        HashSet::from(["first".to_string(), "second".to_string()]),
        "200 connections did not reach both servers"
    );
}

/// Without `reuseport`, binding a port another server listens on fails at `listen_now`
/// with an `Io` error carrying `EADDRINUSE` (the default `reuseaddr` does not allow it).
#[test]
fn second_bind_of_a_port_without_reuseport_fails_with_eaddrinuse() {
    let first = TestServer::start(|o| o, path_echo);
    let port = first.addr().port();
    let second = Server::listen(Options::new().host("127.0.0.1").port(port), path_echo()).unwrap();
    let err = second
        .listen_now()
        .expect_err("a second bind of a listening port succeeded");
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err:?}");
    // The first server is unaffected.
    assert_eq!(hyper_get(first.addr(), "/still").body, "/still");
}

/// `unlink(true)` removes a stale socket file left at `path` and listens there; the new
/// socket serves requests.
#[test]
fn unix_unlink_replaces_a_stale_socket_file() {
    let path = temp_path("stale.sock");
    stale_socket_file(&path);
    let server = {
        let path = path.clone();
        TestServer::build(move || {
            Server::listen(Options::new().path(path).unlink(true), path_echo())
        })
    };
    assert_eq!(unix_get(&path, "/fresh").body_str(), "/fresh");
    drop(server);
    let _ = std::fs::remove_file(&path);
}

/// Without `unlink`, binding a unix socket over an existing file (a stale socket or a
/// regular file) fails with `EADDRINUSE`, and the file is left alone.
#[test]
fn unix_bind_over_an_existing_file_fails_without_unlink() {
    let stale = temp_path("stale.sock");
    stale_socket_file(&stale);
    let server = Server::listen(Options::new().path(&stale), path_echo()).unwrap();
    let err = server
        .listen_now()
        .expect_err("bound over a stale socket file without unlink");
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err:?}");
    assert!(stale.exists());
    let _ = std::fs::remove_file(&stale);

    let regular = temp_path("regular-file");
    std::fs::write(&regular, b"not a socket").unwrap();
    let server = Server::listen(Options::new().path(&regular), path_echo()).unwrap();
    let err = server
        .listen_now()
        .expect_err("bound over a regular file without unlink");
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err:?}");
    assert_eq!(std::fs::read(&regular).unwrap(), b"not a socket");
    let _ = std::fs::remove_file(&regular);
}

/// `Server::new` adopts a listening socket given as an `OwnedFd` (as from systemd socket
/// activation) and serves requests on it.
#[test]
fn server_new_adopts_a_listening_socket_given_as_an_owned_fd() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd: OwnedFd = listener.into();
    let server = TestServer::build(move || Server::new(fd, Options::new(), path_echo()));
    assert_eq!(server.addr(), addr);
    assert_eq!(hyper_get(addr, "/from-fd").body, "/from-fd");
    assert_eq!(
        parse_one(&raw_request(addr, GET_CLOSE)).status,
        200,
        "the adopted listener stopped accepting"
    );
}

/// `Server::new` also adopts a unix listening socket given as an `OwnedFd`: the family is
/// read from the socket, and `local_addr` is its path.
#[test]
fn server_new_adopts_a_unix_listening_socket_given_as_an_owned_fd() {
    let path = temp_path("adopted.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd: OwnedFd = listener.into();
    let server = TestServer::build(move || Server::new(fd, Options::new(), path_echo()));
    assert_eq!(server.local, LocalAddr::Unix(path.clone()));
    assert_eq!(unix_get(&path, "/adopted-unix").body_str(), "/adopted-unix");
    drop(server);
    let _ = std::fs::remove_file(&path);
}

/// `local_addr()` of a server listening on a unix socket is `LocalAddr::Unix(path)` (it
/// binds lazily, creating the file), and has no inet address.
#[test]
fn local_addr_of_a_unix_server_is_its_path() {
    let path = temp_path("local-addr.sock");
    let server = Server::listen(Options::new().path(&path), path_echo()).unwrap();
    assert!(!path.exists(), "bind is lazy, yet the socket file exists");
    let local = server.local_addr().expect("local_addr");
    assert_eq!(local, LocalAddr::Unix(path.clone()));
    assert_eq!(local.inet(), None);
    assert!(path.exists(), "local_addr did not bind");
    assert_eq!(server.handle().local_addr().unwrap(), local);
    drop(server);
    let _ = std::fs::remove_file(&path);
}

/// `listen_now()` on a host that is no address (`256.0.0.1`) returns an error instead of
/// panicking, and so does every later try; nothing is listening.
#[test]
fn listen_now_on_an_invalid_host_returns_an_error() {
    let server = Server::listen(Options::new().host("256.0.0.1").port(0), path_echo()).unwrap();
    let err = server
        .listen_now()
        .expect_err("listening on 256.0.0.1 succeeded");
    assert!(
        matches!(err.kind(), ErrorKind::Io | ErrorKind::Config),
        "unexpected kind: {err:?}"
    );
    assert!(server.listen_now().is_err(), "a second try succeeded");
    assert!(server.local_addr().is_err());
    assert!(
        server.step(Some(std::time::Duration::ZERO)).is_err(),
        "step on a server that cannot bind did not report the bind error"
    );
}

/// A host that is an address but not one of this machine's (`192.0.2.1`, TEST-NET-1) fails
/// at bind with `EADDRNOTAVAIL`, reported as an `Io` error.
#[test]
fn listen_now_on_a_foreign_address_fails_with_eaddrnotavail() {
    let server = Server::listen(Options::new().host("192.0.2.1").port(0), path_echo()).unwrap();
    let err = server
        .listen_now()
        .expect_err("bound an address this machine does not have");
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err:?}");
}

/// A handler answering with its stream's `peer_addr` and `local_addr`, as `PEER LOCAL`.
fn addresses() -> impl FnMut(
    ServerHandle,
    Stream,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = onstream::Result<()>>>,
> {
    |_srv, stream| {
        Box::pin(async move {
            stream.get_headers().await?;
            let (peer, local) = (stream.peer_addr(), stream.local_addr());
            let body = format!(
                "{} {}",
                peer.map_or("-".into(), |a| a.to_string()),
                local.map_or("-".into(), |a| a.to_string())
            );
            respond(&stream, "200", body).await
        })
    }
}

/// A stream knows both ends of its TCP connection. Since the peer's address comes from
/// accept(2) and, on a listener bound to one address, the local one from the listener
/// (no getpeername/getsockname per connection), this checks that the shortcut gives what
/// the socket would: the client's own address, and the address the client connected to
/// — on a wildcard listener (0.0.0.0) that is the connection's address, not 0.0.0.0.
#[test]
fn a_stream_knows_the_addresses_of_its_connection() {
    for host in ["127.0.0.1", "0.0.0.0"] {
        let server = TestServer::build(move || {
            Server::listen(Options::new().host(host).port(0), addresses())
        });
        let port = server.addr().port();
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut client = connect(to);
        let client_addr = client.local_addr().unwrap();
        client.write_all(GET_CLOSE).unwrap();
        let response = read_response(&mut BufReader::new(&mut client));
        assert_eq!(
            response.body_str(),
            format!("{client_addr} {to}"),
            "listening on {host}"
        );
    }
}
