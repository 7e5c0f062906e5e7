//! A WebSocket echo server (lua-http's `examples/websocket_server.lua`): every text or
//! binary message comes back as it was sent; other requests get a short page that
//! explains what to do.
//!
//! ```sh
//! cargo run --release --example websocket_echo -- 9001
//! python3 -m websockets ws://127.0.0.1:9001/
//! ```

use onstream::{
    websocket::{self, Message},
    Headers, Options, Server, Tls,
};

fn main() -> onstream::Result<()> {
    let port = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(9001);
    let server = Server::listen(
        Options::new().host("127.0.0.1").port(port).tls(Tls::Off),
        |_server, stream| async move {
            let req = stream.get_headers().await?;
            // HTTP/1.1 asks with `Upgrade: websocket`, HTTP/2 with an extended CONNECT.
            let wants_websocket =
                req.get("upgrade").is_some() || req.get(":protocol") == Some("websocket");
            if !wants_websocket {
                let mut res = Headers::new();
                res.append(":status", "200");
                res.append("content-type", "text/plain; charset=utf-8");
                stream.write_headers(&res, false).await?;
                return stream
                    .write_chunk("A WebSocket echo server: connect with ws://\n", true)
                    .await;
            }
            let mut ws = websocket::accept(&stream, websocket::Options::new()).await?;
            while let Some(msg) = ws.recv().await? {
                if let Message::Text(_) | Message::Binary(_) = msg {
                    ws.send(msg).await?;
                }
            }
            Ok(())
        },
    )?;
    // A misbehaving client (bad frames, abrupt close) ends its own connection only.
    server.set_onerror(|_server, operation, err| {
        eprintln!("{operation}: {err}");
        Ok(())
    });
    server.listen_now()?;
    println!("listening on ws://{}", server.local_addr()?);
    server.run(None)
}
