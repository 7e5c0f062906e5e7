//! Serving on a unix-domain socket, with the socket file's mode set as lua-http's `mode`,
//! `mask` and `unlink` options do.
//!
//! ```sh
//! cargo run --example unix_socket -- /tmp/onstream.sock
//! curl --unix-socket /tmp/onstream.sock http://localhost/
//! ```

use onstream::{Headers, Options, Server};

fn main() -> onstream::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/onstream.sock".to_owned());
    let server = Server::listen(
        Options::new()
            .path(&path)
            .mode(0o660)
            .mask(true)
            .unlink(true),
        |_server, stream| async move {
            let mut res = Headers::new();
            res.append(":status", "200");
            res.append("content-type", "text/plain");
            stream.write_headers(&res, false).await?;
            stream
                .write_chunk("Hello over a unix socket!\n", true)
                .await
        },
    )?;
    server.listen_now()?;
    println!("listening on {}", server.local_addr()?);
    server.run(None)
}
