//! Baseline peer for `bench/ws-run`: a WebSocket echo server with tokio-tungstenite
//! (`accept_async`) on a tokio current_thread runtime (one core, like onstream's
//! `websocket_echo` example). Every text or binary message goes back as it came, with
//! `send` (write + flush) per message, as the onstream example does; pings are answered
//! and close frames acknowledged by the codec.
//!
//! usage: bench-tungstenite <port>        (listens on ws://127.0.0.1:<port>/, any path)

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{accept_async, tungstenite::Error};

async fn echo(sock: TcpStream) -> Result<(), Error> {
    let mut ws = accept_async(sock).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
    }
    Ok(())
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(9001);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        println!("listening on ws://{}", listener.local_addr().unwrap());
        loop {
            let sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            // As onstream does on every accepted connection.
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                match echo(sock).await {
                    Ok(()) | Err(Error::ConnectionClosed) => {}
                    Err(e) => eprintln!("connection: {e}"),
                }
            });
        }
    });
}
