//! `Workers`: several loops on several threads serving one address.

mod common;

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::status_headers;
use onstream::{LocalAddr, Options, Server, Workers};

/// Every worker answers with its thread's name.
fn named_workers(n: usize, options: fn() -> Options) -> Workers {
    Workers::start(n, options, |listener, options| {
        Server::new(listener, options, |_server, stream| async move {
            stream.get_headers().await?;
            stream.write_headers(&status_headers("200"), false).await?;
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            stream.write_chunk(name, true).await
        })
    })
    .unwrap()
}

fn get_over(mut s: impl Read + Write) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

#[test]
fn connections_are_spread_over_the_workers_of_one_port() {
    let workers = named_workers(2, || {
        Options::new()
            .host("127.0.0.1")
            .port(0)
            .tls(onstream::Tls::Off)
    });
    let LocalAddr::Inet(addr) = workers.local_addr().clone() else {
        panic!("not TCP")
    };
    let mut seen = HashSet::new();
    // SO_REUSEPORT hashes each connection's 4-tuple: 64 connections all landing on one
    // of two workers would happen with probability 2^-63.
    for _ in 0..64 {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        seen.insert(get_over(s));
    }
    assert_eq!(
        seen,
        HashSet::from([
            "onstream-worker-0".to_owned(),
            "onstream-worker-1".to_owned()
        ])
    );
    workers.closer().close();
    workers.join().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "closed workers refuse");
}

#[test]
fn unix_socket_workers_share_one_listener() {
    let dir = std::env::temp_dir().join(format!("onstream-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.sock");
    let _ = std::fs::remove_file(&path);
    std::env::set_var("ONSTREAM_TEST_WORKER_SOCK", &path);
    let workers = named_workers(3, || {
        Options::new()
            .path(std::env::var_os("ONSTREAM_TEST_WORKER_SOCK").unwrap())
            .tls(onstream::Tls::Off)
    });
    assert_eq!(workers.len(), 3);
    for _ in 0..10 {
        let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(get_over(s).starts_with("onstream-worker-"));
    }
    workers.closer().close();
    workers.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workers_with_tls_auto_share_one_self_signed_certificate() {
    let workers = named_workers(2, || Options::new().host("127.0.0.1").port(0));
    let fp = workers
        .certificate_fingerprint()
        .expect("a self-signed certificate");
    assert_eq!(fp.len(), 32 * 3 - 1);
    let LocalAddr::Inet(addr) = workers.local_addr().clone() else {
        panic!()
    };
    // Cleartext still works on the same port (Tls::Auto).
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(get_over(s).starts_with("onstream-worker-"));
    workers.closer().close();
    workers.join().unwrap();
}

#[test]
fn close_lets_a_request_in_flight_finish() {
    let workers = Workers::start(
        2,
        || {
            Options::new()
                .host("127.0.0.1")
                .port(0)
                .tls(onstream::Tls::Off)
        },
        |listener, options| {
            Server::new(listener, options, |_server, stream| async move {
                stream.get_headers().await?;
                stream.write_headers(&status_headers("200"), false).await?;
                onstream::sleep(Duration::from_millis(300)).await;
                stream.write_chunk("late but whole", true).await
            })
        },
    )
    .unwrap();
    let LocalAddr::Inet(addr) = workers.local_addr().clone() else {
        panic!()
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let closer = workers.closer();
    closer.close();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    // The head went out when the handler slept, so the body is chunked.
    assert!(out.ends_with("late but whole\r\n0\r\n\r\n"), "{out}");
    workers.join().unwrap();
}

#[test]
fn a_busy_port_is_an_error_of_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::env::set_var("ONSTREAM_TEST_BUSY_PORT", port.to_string());
    let r = Workers::start(
        2,
        || {
            let port = std::env::var("ONSTREAM_TEST_BUSY_PORT")
                .unwrap()
                .parse()
                .unwrap();
            Options::new()
                .host("127.0.0.1")
                .port(port)
                .tls(onstream::Tls::Off)
        },
        |listener, options| Server::new(listener, options, |_s, _stream| async { Ok(()) }),
    );
    assert!(r.is_err());
}

/// Two servers on one port would split its connections between them (each has
/// `SO_REUSEPORT` for its own workers); the second must fail like on any busy port.
#[test]
fn a_port_held_by_other_workers_is_an_error_of_start() {
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
    let port = free_port();
    std::env::set_var("ONSTREAM_TEST_SHARED_PORT", port.to_string());
    fn options() -> Options {
        let port = std::env::var("ONSTREAM_TEST_SHARED_PORT")
            .unwrap()
            .parse()
            .unwrap();
        Options::new()
            .host("127.0.0.1")
            .port(port)
            .tls(onstream::Tls::Off)
    }
    let first = named_workers(2, options);
    let second = Workers::start(2, options, |listener, options| {
        Server::new(listener, options, |_s, _stream| async { Ok(()) })
    });
    let err = second.expect_err("a second set of workers started on a busy port");
    assert!(err.to_string().contains("in use"), "{err}");
    // Every connection still reaches the first.
    for _ in 0..10 {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(get_over(s).starts_with("onstream-worker-"));
    }
    first.closer().close();
    first.join().unwrap();
}
