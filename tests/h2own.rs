//! onstream's own HTTP/2 engine (`H2Engine::Own`, the default, `src/h2own/`) over real
//! loopback sockets with the `h2` crate's client: what it must do that the h2 crate engine
//! does too. (The whole suite runs on the default engine, or on the h2 crate's with
//! `ONSTREAM_TEST_H2_ENGINE=crate`; these run on the own engine always.)

mod common;

use std::future::{poll_fn, Future};

use bytes::{Bytes, BytesMut};
use common::*;
use h2::{client::SendRequest, Reason, RecvStream, SendStream};
use onstream::{H2Engine, Headers, Options, Stream};

/// Runs `f` on a fresh tokio current-thread runtime.
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Awaits `fut` for at most [`IO_TIMEOUT`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {IO_TIMEOUT:?}"))
}

/// A server on the own engine running `handler` for every request.
fn own_server<H, Fut>(handler: H) -> TestServer
where
    H: FnMut(onstream::ServerHandle, Stream) -> Fut + Send + 'static,
    Fut: Future<Output = onstream::Result<()>> + 'static,
{
    TestServer::start(|o: Options| o.h2_engine(H2Engine::Own), || handler)
}

/// An h2c connection by prior knowledge, its task spawned.
async fn h2c(addr: std::net::SocketAddr) -> SendRequest<Bytes> {
    let tcp = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let (send, conn) = within("handshake", h2::client::handshake(tcp))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    within("ready", send.ready()).await.expect("ready")
}

fn request(addr: std::net::SocketAddr, method: &str) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}/x"))
        .body(())
        .unwrap()
}

/// Reads `body` to its end, giving flow-control credit back as it goes.
async fn read_body(body: &mut RecvStream) -> Result<Bytes, h2::Error> {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Sends `data` as flow control allows, then ends the stream.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = poll_fn(|cx| send.poll_capacity(cx))
            .await
            .expect("the stream closed while sending")
            .expect("send capacity");
        let piece = data.split_to(granted.min(data.len()));
        send.send_data(piece, false).expect("send_data");
    }
    send.send_data(Bytes::new(), true).expect("end of stream");
}

/// A body larger than both engines' windows (1 MiB ours, 64 KiB the client's) goes up
/// and comes back whole: the server gives credit as its handler reads and waits for the
/// client's credit while it writes.
#[test]
fn a_body_larger_than_the_windows_goes_both_ways() {
    let server = own_server(|_srv, stream: Stream| async move {
        let body = stream.get_body_as_bytes().await?;
        stream.write_headers(&status_headers("200"), false).await?;
        stream.write_chunk(body, true).await
    });
    let addr = server.addr();
    let sent: Bytes = (0..3 * 1024 * 1024 / 2).map(|i| (i % 251) as u8).collect();
    let got = block_on(async {
        let mut send = h2c(addr).await;
        let (response, mut up) = send
            .send_request(request(addr, "POST"), false)
            .expect("send_request");
        let upload = send_all(&mut up, sent.clone());
        let download = async {
            let response = within("head", response).await.expect("response");
            assert_eq!(response.status(), 200);
            within("body", read_body(&mut response.into_body()))
                .await
                .expect("body")
        };
        let ((), got) = tokio::join!(upload, download);
        got
    });
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the echoed body differs");
}

/// Trailers reach the handler, and the handler's trailers reach the client.
#[test]
fn trailers_pass_both_ways() {
    let server = own_server(|_srv, stream: Stream| async move {
        stream.get_body_as_bytes().await?;
        let seen = stream
            .get_trailers()
            .await?
            .and_then(|t| t.get("x-in").map(str::to_owned))
            .unwrap_or_default();
        stream.write_headers(&status_headers("200"), false).await?;
        stream.write_chunk("b", false).await?;
        let mut out = Headers::new();
        out.append("x-out", format!("saw {seen}"));
        stream.write_headers(&out, true).await
    });
    let addr = server.addr();
    let trailers = block_on(async {
        let mut send = h2c(addr).await;
        let (response, mut up) = send
            .send_request(request(addr, "POST"), false)
            .expect("send_request");
        up.send_data(Bytes::from_static(b"a"), false).expect("data");
        let mut t = http::HeaderMap::new();
        t.insert("x-in", "1".parse().unwrap());
        up.send_trailers(t).expect("trailers");
        let mut down = within("head", response)
            .await
            .expect("response")
            .into_body();
        read_body(&mut down).await.expect("body");
        within("trailers", down.trailers()).await.expect("trailers")
    });
    let trailers = trailers.expect("no trailers");
    assert_eq!(trailers.get("x-out").unwrap(), "saw 1");
}

/// A handler that fails after its head went out has its stream reset with
/// INTERNAL_ERROR, so that the client cannot take the cut body for a whole one.
#[test]
fn a_handler_failing_mid_body_resets_the_stream() {
    let server = own_server(|_srv, stream: Stream| async move {
        stream.write_headers(&status_headers("200"), false).await?;
        stream.write_chunk("part", false).await?;
        Err(onstream::Error::handler("failed on purpose"))
    });
    let addr = server.addr();
    let outcome = block_on(async {
        let mut send = h2c(addr).await;
        let (response, _) = send
            .send_request(request(addr, "GET"), true)
            .expect("send_request");
        let response = within("head", response).await.expect("response");
        within("body", read_body(&mut response.into_body())).await
    });
    let err = outcome.expect_err("the cut body ended cleanly");
    assert_eq!(err.reason(), Some(Reason::INTERNAL_ERROR));
}

/// A careless `h2_max_send_buffer_size(0)` still lets a response body through (it counts
/// as 16 KiB), on both engines, instead of stalling every write until `send_timeout` or
/// sending frames so small that the client calls them a flood.
#[test]
fn a_send_buffer_bound_of_zero_still_sends_bodies() {
    for engine in [H2Engine::Own, H2Engine::H2Crate] {
        let server = TestServer::start(
            move |o: Options| o.h2_engine(engine).h2_max_send_buffer_size(0),
            || {
                |_srv, stream: Stream| async move {
                    stream.write_headers(&status_headers("200"), false).await?;
                    stream.write_chunk(vec![b'z'; 100_000], true).await
                }
            },
        );
        let addr = server.addr();
        let got = block_on(async {
            let mut send = h2c(addr).await;
            let (response, _) = send
                .send_request(request(addr, "GET"), true)
                .expect("send_request");
            let response = within("head", response).await.expect("response");
            assert_eq!(response.status(), 200);
            within("body", read_body(&mut response.into_body()))
                .await
                .expect("body")
        });
        assert_eq!(got.len(), 100_000, "{engine:?}");
    }
}
