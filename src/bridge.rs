//! The tokio bridge (feature `tokio`): handlers on the step loop may await futures that
//! need a tokio runtime — reqwest, sqlx, tonic clients — by running them on a background
//! tokio runtime. The step loop stays runtime-free: a bridged future runs on tokio's
//! threads, and its completion wakes the handler's task through the loop's thread-safe
//! wakers (a schedule from another thread wakes `epoll_wait`, as [`crate::Remote`] does).
//!
//! What crosses must be `Send`: the future and its output. State the handler keeps on the
//! loop (`Rc`, the `Stream`) stays there; pass what the tokio side needs by value. Make
//! tokio objects (timers, sockets) inside the `async` block, so that they are created on
//! the runtime's side: `spawn(async { tokio::time::sleep(d).await })`, not
//! `spawn(tokio::time::sleep(d))`, which panics on the loop's thread.
//!
//! ```no_run
//! # async fn demo(stream: onstream::Stream) -> onstream::Result<()> {
//! // Inside a handler: any tokio-based client works inside `bridge::spawn`.
//! let addr = onstream::bridge::spawn(async {
//!     tokio::net::lookup_host("localhost:80").await.map(|mut a| a.next())
//! })
//! .await??;
//! # Ok(()) }
//! ```

use std::{future::Future, sync::OnceLock};

use crate::error::{Error, Result};

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The background runtime, started on first use: tokio's multi-thread runtime with one
/// worker thread (the loop's own work stays on the loop; the bridge is for I/O waits),
/// or `ONSTREAM_TOKIO_THREADS` workers.
pub fn handle() -> tokio::runtime::Handle {
    RUNTIME
        .get_or_init(|| {
            let threads = std::env::var("ONSTREAM_TOKIO_THREADS")
                .ok()
                .and_then(|n| n.parse().ok())
                .filter(|n: &usize| *n > 0)
                .unwrap_or(1);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("onstream-tokio")
                .enable_all()
                .build()
                .expect("the tokio runtime of onstream's bridge could not start")
        })
        .handle()
        .clone()
}

/// Runs `future` on the background tokio runtime; the returned future (to be awaited on
/// the step loop) resolves to its output. A panic in `future` becomes an error; dropping
/// the returned future lets `future` run to its end on tokio (as `tokio::spawn` does).
pub fn spawn<F>(future: F) -> impl Future<Output = Result<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let join = handle().spawn(future);
    async move {
        join.await
            .map_err(|e| Error::handler(format!("bridged tokio task failed: {e}")))
    }
}
