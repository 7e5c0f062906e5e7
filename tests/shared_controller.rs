//! Several servers on one `Controller` (`Options::controller`), stepped by one thread that
//! knows only the controller, and `add_stream` handing a request from one server's handler
//! to another server.

mod common;

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use common::*;
use onstream::{Controller, Options, Remote, Server, ServerHandle, Stream};

/// Servers built on one controller, on a thread whose loop calls only `ctl.step`.
struct SharedLoop {
    /// The TCP address of each server, in the order `build` returned them.
    addrs: Vec<SocketAddr>,
    remote: Remote,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SharedLoop {
    /// Runs `build` on a new thread with a fresh controller, binds every server it returns,
    /// then steps the controller (and nothing else) until dropped. Panics when a server's
    /// controller is not the shared one.
    fn start(
        build: impl FnOnce(&Controller) -> onstream::Result<Vec<Rc<Server>>> + Send + 'static,
    ) -> SharedLoop {
        init_tracing();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(Vec<SocketAddr>, Remote), String>>();
        let thread = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("onstream-shared-loop".into())
                .spawn(move || {
                    let ctl = Controller::new().expect("controller");
                    let setup = || -> Result<(Vec<Rc<Server>>, Vec<SocketAddr>), String> {
                        let servers = build(&ctl).map_err(|e| format!("build: {e:?}"))?;
                        let mut addrs = Vec::new();
                        for s in &servers {
                            if s.pollfd() != ctl.pollfd() {
                                return Err("a server is not on the shared controller".into());
                            }
                            s.listen_now().map_err(|e| format!("listen: {e:?}"))?;
                            let addr = s.local_addr().map_err(|e| format!("{e:?}"))?;
                            addrs.push(addr.inet().ok_or("not a TCP server")?);
                        }
                        Ok((servers, addrs))
                    };
                    let (servers, addrs) = match setup() {
                        Ok(ok) => ok,
                        Err(msg) => {
                            let _ = ready_tx.send(Err(msg));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((addrs, ctl.remote())));
                    while !stop.load(Ordering::SeqCst) {
                        ctl.step(Some(Duration::from_millis(50)))
                            .expect("controller step");
                    }
                    drop(servers);
                })
                .expect("spawn the loop thread")
        };
        let (addrs, remote) = match ready_rx.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(ready)) => ready,
            Ok(Err(msg)) => panic!("{msg}"),
            Err(e) => panic!("the loop thread did not start: {e}"),
        };
        SharedLoop {
            addrs,
            remote,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SharedLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.remote.wake();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !thread::panicking() {
                panic!("the loop thread panicked");
            }
        }
    }
}

/// A handler answering `"{name} {path}"`.
fn answer_as(
    name: &'static str,
) -> impl FnMut(
    ServerHandle,
    Stream,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = onstream::Result<()>>>> {
    move |_srv, stream| {
        Box::pin(async move {
            let req = stream.get_headers().await?;
            let path = req.get(":path").unwrap_or("").to_string();
            respond(&stream, "200", format!("{name} {path}")).await
        })
    }
}

/// Options on 127.0.0.1, an ephemeral port, and the shared controller.
fn on(ctl: &Controller) -> Options {
    Options::new()
        .host("127.0.0.1")
        .port(0)
        .controller(ctl.clone())
}

/// Two servers created with `Options::controller` on one controller, stepped by one thread
/// that calls only `ctl.step`, each answer on their own port, also with connections to
/// both open at once.
#[test]
fn two_servers_on_one_controller_both_answer_on_their_own_ports() {
    let lp = SharedLoop::start(|ctl| {
        Ok(vec![
            Rc::new(Server::listen(on(ctl), answer_as("A"))?),
            Rc::new(Server::listen(on(ctl), answer_as("B"))?),
        ])
    });
    let (a, b) = (lp.addrs[0], lp.addrs[1]);
    assert_ne!(a.port(), b.port());

    assert_eq!(hyper_get(a, "/one").body, "A /one");
    assert_eq!(hyper_get(b, "/two").body, "B /two");

    let mut ca = Client::connect(a);
    let mut cb = Client::connect(b);
    for i in 0..3 {
        assert_eq!(ca.get(&format!("/a{i}")).body_str(), format!("A /a{i}"));
        assert_eq!(cb.get(&format!("/b{i}")).body_str(), format!("B /b{i}"));
    }
}

/// A slow handler on one server does not hold up the other server on the same controller.
#[test]
fn a_slow_handler_on_one_server_does_not_block_the_other() {
    let lp = SharedLoop::start(|ctl| {
        let slow = Server::listen(on(ctl), |_srv, stream: Stream| async move {
            stream.get_headers().await?;
            onstream::sleep(Duration::from_millis(500)).await;
            respond(&stream, "200", "slow").await
        })?;
        Ok(vec![
            Rc::new(slow),
            Rc::new(Server::listen(on(ctl), answer_as("fast"))?),
        ])
    });
    let (slow, fast) = (lp.addrs[0], lp.addrs[1]);
    let mut waiting = Client::connect(slow);
    waiting.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    // Answered while the slow handler still sleeps.
    assert_eq!(hyper_get(fast, "/quick").body, "fast /quick");
    assert_eq!(waiting.read_response().body_str(), "slow");
}

/// `add_stream`: server A's handler hands its request to server B (both on one
/// controller); B's handler answers it, and A's client gets B's answer. The connection
/// then goes on serving A's next request.
#[test]
fn add_stream_hands_a_request_from_one_server_to_another() {
    let lp = SharedLoop::start(|ctl| {
        let b = Rc::new(Server::listen(on(ctl), answer_as("from B"))?);
        let to_b = b.clone();
        let a = Server::listen(on(ctl), move |_srv, stream: Stream| {
            let to_b = to_b.clone();
            async move {
                let req = stream.get_headers().await?;
                if req.get(":path").is_some_and(|p| p.starts_with("/to-b")) {
                    to_b.add_stream(stream);
                    return Ok(());
                }
                respond(&stream, "200", "from A").await
            }
        })?;
        Ok(vec![Rc::new(a), b])
    });
    let a = lp.addrs[0];

    let res = parse_one(&raw_request(
        a,
        b"GET /to-b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(
        (res.status, res.body_str()),
        (200, "from B /to-b"),
        "A's client did not get B's answer"
    );

    let mut client = Client::connect(a);
    assert_eq!(
        client.get("/to-b/keep-alive").body_str(),
        "from B /to-b/keep-alive"
    );
    assert_eq!(
        client.get("/here").body_str(),
        "from A",
        "the connection did not go on after the hand-off"
    );
}

/// `add_stream` of a stream whose request has a body: B's handler reads the body A left
/// unread and echoes it.
#[test]
fn add_stream_passes_an_unread_request_body_to_the_other_server() {
    let lp = SharedLoop::start(|ctl| {
        let b = Rc::new(Server::listen(
            on(ctl),
            |_srv, stream: Stream| async move {
                stream.get_headers().await?;
                let body = stream.get_body_as_bytes().await?;
                respond(&stream, "200", body).await
            },
        )?);
        let to_b = b.clone();
        let a = Server::listen(on(ctl), move |_srv, stream: Stream| {
            let to_b = to_b.clone();
            async move {
                stream.get_headers().await?;
                to_b.add_stream(stream);
                Ok(())
            }
        })?;
        Ok(vec![Rc::new(a), b])
    });
    let res = parse_one(&raw_request(
        lp.addrs[0],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello, B!\r\n",
    ));
    assert_eq!((res.status, res.body_str()), (200, "hello, B!\r\n"));
}
