//! A handler that needs tokio (feature `tokio`): every request is answered by fetching
//! the same path from an upstream HTTP server with reqwest, which runs on the bridge's
//! background tokio runtime while the onstream server stays on its own step loop.
//!
//! ```sh
//! python3 -m http.server 8001 &                       # any upstream
//! cargo run --release --features tokio --example tokio_proxy -- 8000 http://127.0.0.1:8001
//! curl http://127.0.0.1:8000/
//! ```

use onstream::{bridge, Headers, Options, Server, Tls};

fn main() -> onstream::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(8000, |p| p.parse().expect("PORT"));
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8001".to_owned());
    // One client for all requests: it keeps a pool of upstream connections.
    let client = reqwest::Client::new();
    let shown = upstream.clone();
    let server = Server::listen(
        Options::new().host("127.0.0.1").port(port).tls(Tls::Off),
        move |_server, stream| {
            let (client, upstream) = (client.clone(), upstream.clone());
            async move {
                let req = stream.get_headers().await?;
                let url = format!("{upstream}{}", req.get(":path").unwrap_or("/"));
                // Runs on tokio; the handler's task sleeps on the step loop meanwhile.
                let fetched = bridge::spawn(async move {
                    let res = client.get(url).send().await?;
                    let status = res.status().as_u16();
                    let kind = res
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    Ok::<_, reqwest::Error>((status, kind, res.bytes().await?))
                })
                .await?;
                let mut res = Headers::new();
                match fetched {
                    Ok((status, kind, body)) => {
                        res.append(":status", status.to_string());
                        if let Some(kind) = kind {
                            res.append("content-type", kind);
                        }
                        stream.write_headers(&res, false).await?;
                        stream.write_chunk(body, true).await
                    }
                    Err(e) => {
                        res.append(":status", "502");
                        res.append("content-type", "text/plain");
                        stream.write_headers(&res, false).await?;
                        stream.write_chunk(format!("upstream: {e}\n"), true).await
                    }
                }
            }
        },
    )?;
    println!("proxying http://{} to {shown}", server.local_addr()?);
    server.run(None)
}
