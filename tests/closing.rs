//! How an HTTP/1 connection closes after its last response (`Closing` in
//! `h1/conn/dispatch.rs`): a client that said it closes (`Connection: close`) and sent no
//! body is not waited for — the server closes as soon as the answer is out, as nginx and
//! hyper do — while one that sends on after saying so still gets the lingering close that
//! keeps a reset from destroying the answer. (Over TLS: `tls.rs`.)

mod common;

use std::{io::Write, time::Duration};

use common::*;

/// Lingering that would outlast every test: a connection still lingering stays counted.
fn lingering_server() -> TestServer {
    TestServer::start(
        |o| {
            o.lingering_close(Duration::from_secs(3600), 1 << 20)
                .intra_stream_timeout(Duration::from_secs(3600))
        },
        path_echo,
    )
}

/// The client asked to close and has nothing more to send: the server closes its side
/// at once and forgets the connection, though the client keeps its socket open. Before,
/// the server read on until the client's EOF (here: for the hour of lingering).
#[test]
fn a_client_that_asked_to_close_is_not_waited_for() {
    let server = lingering_server();
    for request in [
        &b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /b HTTP/1.0\r\n\r\n",
        // A body read whole by the handler does not count as more to come.
        b"POST /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    ] {
        let mut client = connect(server.addr());
        client.write_all(request).unwrap();
        let answer = read_to_close(&mut client, IO_TIMEOUT).expect("the server closed");
        assert_eq!(parse_one(&answer).status, 200);
        assert!(
            server.wait_connections(0, IO_TIMEOUT),
            "{:?}: the server still holds the connection",
            String::from_utf8_lossy(request)
        );
        drop(client);
    }
}

/// A client that sends another request after `Connection: close` (RFC 9112 §9.6 says it
/// must not) is still lingered for: its input would otherwise arrive at a closed socket,
/// and the reset could destroy the answer before the client reads it. The server holds
/// the connection until the client closes.
#[test]
fn a_client_sending_on_after_close_gets_the_lingering_close() {
    let server = lingering_server();
    let mut client = connect(server.addr());
    client
        .write_all(
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
    let answer = read_to_close(&mut client, IO_TIMEOUT).expect("the server closed its side");
    assert_eq!(parse_one(&answer).body_str(), "/a");
    assert_eq!(server.connections(), 1, "the server did not linger");
    drop(client);
    assert!(server.wait_connections(0, IO_TIMEOUT));
}
