//! A client that requests a large response and then reads nothing must not hold its
//! connection (and the handler writing to it) forever: once no byte has been taken for
//! `send_timeout`, the connection is closed and the handler's write fails. lua-http has no
//! such bound; nginx's `send_timeout` is the model.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;

/// The handler writes up to 64 MiB in 64 KiB chunks; the client never reads.
#[test]
fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    let outcome: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let server = {
        let outcome = outcome.clone();
        TestServer::start(
            |o| o.send_timeout(Duration::from_millis(300)),
            move || {
                move |_srv, stream: onstream::Stream| {
                    let outcome = outcome.clone();
                    async move {
                        stream.write_headers(&status_headers("200"), false).await?;
                        let chunk = vec![b'x'; 64 * 1024];
                        for _ in 0..1024 {
                            if let Err(e) = stream.write_chunk(&chunk, false).await {
                                *outcome.lock().unwrap() = Some(format!("{:?}", e.kind()));
                                return Err(e);
                            }
                        }
                        *outcome.lock().unwrap() = Some("wrote everything".to_owned());
                        stream.write_chunk([], true).await
                    }
                }
            },
        )
    };
    let mut client = connect(server.addr());
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    // The accept happens on the server's thread: without this, the count can still be 0
    // because the connection has not been seen yet, not because it was closed.
    assert!(
        server.wait_connections(1, Duration::from_secs(5)),
        "the connection was never accepted"
    );
    assert!(
        server.wait_connections(0, Duration::from_secs(5)),
        "the stalled connection was not closed"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );
    assert!(wait_until(Duration::from_secs(2), || outcome
        .lock()
        .unwrap()
        .is_some()));
    let outcome = outcome.lock().unwrap().clone().unwrap();
    assert_ne!(outcome, "wrote everything", "the handler was never stopped");
    // The server goes on serving others.
    assert_eq!(hyper_get(server.addr(), "/").status, 200);
    drop(client);
}
