//! Driving a server from someone else's main loop: here a bare `poll(2)` loop, as a GUI
//! toolkit, a game loop or libuv would do it. The loop only needs the server's `pollfd()`
//! (wait for readability), `timeout()` (the longest it may wait) and `step()`.
//!
//! ```sh
//! cargo run --example poll_loop -- 8000
//! curl http://127.0.0.1:8000/
//! ```

use std::time::{Duration, Instant};

use onstream::{Headers, Options, Server};

fn main() -> onstream::Result<()> {
    let port = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(8000);
    let server = Server::listen(
        Options::new().host("127.0.0.1").port(port),
        |_server, stream| async move {
            let req = stream.get_headers().await?;
            let mut res = Headers::new();
            res.append(":status", "200");
            res.append("content-type", "text/plain");
            stream.write_headers(&res, false).await?;
            let path = req.get(":path").unwrap_or("/").to_owned();
            stream
                .write_chunk(format!("served from a poll(2) loop: {path}\n"), true)
                .await
        },
    )?;
    server.listen_now()?;
    println!("listening on http://{}", server.local_addr()?);

    // The host program's own work: here, a tick every second.
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    loop {
        let until_tick = next_tick.saturating_duration_since(Instant::now());
        let wait = server.timeout().map_or(until_tick, |t| t.min(until_tick));
        let mut fds = [libc::pollfd {
            fd: server.pollfd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(std::io::Error::last_os_error().into());
        }
        // Readable or timed out: either way one non-blocking step does what is due.
        server.step(Some(Duration::ZERO))?;
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            eprintln!("tick: {} open connection(s)", server.connections());
        }
    }
}
