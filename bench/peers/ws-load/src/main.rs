//! WebSocket echo load for `bench/ws-run`: one thread (tokio current_thread runtime),
//! tokio-tungstenite client connections.
//!
//! usage: ws-load <url> <connections> <seconds> <payload bytes> <in-flight per connection> [warm-up seconds]
//!        ws-load --check <url>
//!
//! Opens <connections> connections to <url> (ws:// only, TCP_NODELAY), each of which
//! sends <in-flight> binary messages of <payload bytes> and then, for every echo that
//! comes back, sends one more, so that <in-flight> messages stay outstanding per
//! connection. Echoes that are already readable are answered together, with one flush.
//! Echoes are counted over <seconds> after a warm-up (default 1 s) and the rate printed:
//!
//!     connections: 50/50 open
//!     messages/s: 123456.7
//!     messages: 617283 in 5.000 s (after 1.0 s warm-up)
//!     errors: connect=0 handshake=0 read=0 closed=0 write=0 unexpected=0
//!
//! An echo counts when it is a binary message of the size sent; anything else is
//! "unexpected". The process exits when the time is up, without closing the
//! connections. `--check` sends one message on one connection and exits 0 when it
//! comes back within 2 s (a readiness probe).

use std::{
    net::SocketAddr,
    process::exit,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    task::Poll,
    time::{Duration, Instant},
};

use futures_util::{poll, SinkExt, StreamExt};
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{
    client_async,
    tungstenite::{http::Uri, Bytes, Message},
    WebSocketStream,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

static ECHOES: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);
static SETTLED: AtomicU64 = AtomicU64::new(0);
static ERR_CONNECT: AtomicU64 = AtomicU64::new(0);
static ERR_HANDSHAKE: AtomicU64 = AtomicU64::new(0);
static ERR_READ: AtomicU64 = AtomicU64::new(0);
static ERR_CLOSED: AtomicU64 = AtomicU64::new(0);
static ERR_WRITE: AtomicU64 = AtomicU64::new(0);
static ERR_UNEXPECTED: AtomicU64 = AtomicU64::new(0);

fn usage() -> ! {
    eprintln!(
        "usage: ws-load <url> <connections> <seconds> <payload bytes> <in-flight per connection> [warm-up seconds]\n       ws-load --check <url>"
    );
    exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i)
        .unwrap_or_else(|| usage())
        .parse()
        .unwrap_or_else(|_| {
            eprintln!("ws-load: bad {name}: {}", args[i]);
            exit(2)
        })
}

/// host:port of a ws:// URL
fn address(url: &str) -> SocketAddr {
    let uri: Uri = url.parse().unwrap_or_else(|e| {
        eprintln!("ws-load: bad url {url}: {e}");
        exit(2)
    });
    if uri.scheme_str() != Some("ws") {
        eprintln!("ws-load: only ws:// URLs");
        exit(2)
    }
    let host = uri.host().unwrap_or("127.0.0.1");
    let port = uri.port_u16().unwrap_or(80);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| {
            eprintln!("ws-load: cannot resolve {host}");
            exit(2)
        })
}

async fn open(url: &str, addr: SocketAddr) -> Option<WebSocketStream<TcpStream>> {
    let sock = match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(sock)) => sock,
        _ => {
            ERR_CONNECT.fetch_add(1, Relaxed);
            return None;
        }
    };
    let _ = sock.set_nodelay(true);
    match timeout(CONNECT_TIMEOUT, client_async(url, sock)).await {
        Ok(Ok((ws, _))) => Some(ws),
        _ => {
            ERR_HANDSHAKE.fetch_add(1, Relaxed);
            None
        }
    }
}

/// One connection: keep `in_flight` messages outstanding until the process exits.
async fn connection(url: String, addr: SocketAddr, payload: Bytes, in_flight: usize) {
    let ws = open(&url, addr).await;
    SETTLED.fetch_add(1, Relaxed);
    let Some(mut ws) = ws else { return };
    OPEN.fetch_add(1, Relaxed);
    let counter = |r: Option<Result<Message, _>>| -> Option<bool> {
        match r {
            Some(Ok(Message::Binary(b))) if b.len() == payload.len() => {
                ECHOES.fetch_add(1, Relaxed);
                Some(true)
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Some(false),
            Some(Ok(_)) => {
                ERR_UNEXPECTED.fetch_add(1, Relaxed);
                Some(false)
            }
            Some(Err(_)) => {
                ERR_READ.fetch_add(1, Relaxed);
                None
            }
            None => {
                ERR_CLOSED.fetch_add(1, Relaxed);
                None
            }
        }
    };
    let mut owed = in_flight;
    loop {
        for _ in 0..owed {
            if ws.feed(Message::Binary(payload.clone())).await.is_err() {
                ERR_WRITE.fetch_add(1, Relaxed);
                return;
            }
        }
        if ws.flush().await.is_err() {
            ERR_WRITE.fetch_add(1, Relaxed);
            return;
        }
        owed = 0;
        // Wait for one echo, then take those already readable without waiting.
        match counter(ws.next().await) {
            Some(echo) => owed += echo as usize,
            None => return,
        }
        while let Poll::Ready(next) = poll!(ws.next()) {
            match counter(next) {
                Some(echo) => owed += echo as usize,
                None => return,
            }
        }
    }
}

async fn check(url: String) -> bool {
    let addr = address(&url);
    let Some(mut ws) = open(&url, addr).await else {
        return false;
    };
    if ws
        .send(Message::Binary(Bytes::from_static(b"?")))
        .await
        .is_err()
    {
        return false;
    }
    matches!(ws.next().await, Some(Ok(Message::Binary(b))) if &b[..] == b"?")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.first().map(String::as_str) == Some("--check") {
        let url = args.get(1).cloned().unwrap_or_else(|| usage());
        let ok = rt.block_on(async { timeout(CHECK_TIMEOUT, check(url)).await.unwrap_or(false) });
        exit(if ok { 0 } else { 1 });
    }
    if args.len() < 5 || args.len() > 6 {
        usage()
    }
    let url = args[0].clone();
    let conns: u64 = arg(&args, 1, "connections");
    let seconds: f64 = arg(&args, 2, "seconds");
    let size: usize = arg(&args, 3, "payload bytes");
    let in_flight: usize = arg(&args, 4, "in-flight per connection");
    let warmup: f64 = if args.len() == 6 {
        arg(&args, 5, "warm-up seconds")
    } else {
        1.0
    };
    if conns == 0
        || in_flight == 0
        || !(seconds > 0.0 && seconds <= 3600.0)
        || !(0.0..=600.0).contains(&warmup)
    {
        usage()
    }
    let addr = address(&url);
    let payload = Bytes::from(vec![b'x'; size]);

    rt.block_on(async move {
        for _ in 0..conns {
            tokio::spawn(connection(url.clone(), addr, payload.clone(), in_flight));
        }
        // Every connection is open or has failed within CONNECT_TIMEOUT (twice: TCP, then
        // the handshake); do not wait longer than that.
        let setup = Instant::now();
        while SETTLED.load(Relaxed) < conns
            && setup.elapsed() < 2 * CONNECT_TIMEOUT + Duration::from_secs(1)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        let (n0, t0) = (ECHOES.load(Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let (n1, t1) = (ECHOES.load(Relaxed), Instant::now());
        let secs = (t1 - t0).as_secs_f64();
        let n = n1 - n0;
        println!("connections: {}/{} open", OPEN.load(Relaxed), conns);
        println!("messages/s: {:.1}", n as f64 / secs);
        println!("messages: {n} in {secs:.3} s (after {warmup:.1} s warm-up)");
        println!(
            "errors: connect={} handshake={} read={} closed={} write={} unexpected={}",
            ERR_CONNECT.load(Relaxed),
            ERR_HANDSHAKE.load(Relaxed),
            ERR_READ.load(Relaxed),
            ERR_CLOSED.load(Relaxed),
            ERR_WRITE.load(Relaxed),
            ERR_UNEXPECTED.load(Relaxed),
        );
        exit(if n > 0 { 0 } else { 1 });
    });
}
