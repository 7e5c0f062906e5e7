//! One loop per core: `Workers` runs the hello server on every core, each thread with its
//! own `Controller` and `Server` on the same port (SO_REUSEPORT). Ctrl-C closes them all
//! gracefully.
//!
//! ```sh
//! cargo run --release --example workers -- 8000 4
//! curl http://127.0.0.1:8000/
//! ```

use std::time::Duration;

use onstream::{Headers, Options, Server, Workers};

fn main() -> onstream::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(8000, |p| p.parse().expect("PORT"));
    let n = args.next().map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.parse().expect("WORKERS"),
    );
    let workers = Workers::start(
        n,
        move || {
            Options::new()
                .host("127.0.0.1")
                .port(port)
                .close_timeout(Duration::from_secs(5))
        },
        |listener, options| {
            let server = Server::new(listener, options, |_server, stream| async move {
                stream.get_headers().await?;
                let mut res = Headers::new();
                res.append(":status", "200");
                res.append("content-type", "text/plain");
                stream.write_headers(&res, false).await?;
                let me = std::thread::current().name().unwrap_or("?").to_owned();
                stream.write_chunk(format!("Hello from {me}\n"), true).await
            })?;
            // A worker keeps serving whatever one handler does wrong.
            server.set_onerror(|_, what, e| {
                eprintln!("{what}: {e}");
                Ok(())
            });
            Ok(server)
        },
    )?;
    println!("{} workers on {}", workers.len(), workers.local_addr());
    // Ctrl-C: close every worker (in-flight requests get up to close_timeout).
    let closer = workers.closer();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            closer.close();
        }
    });
    workers.join()
}
