//! Several loops on several threads serving one address: one `Controller` and one
//! `Server` per thread (nothing is shared between them but the listening address and the
//! TLS configuration), which is how a single-threaded server uses more than one core
//! (nginx's worker processes, DESIGN.md §3).
//!
//! TCP: each worker has its own listening socket on the same address with
//! `SO_REUSEPORT`, so the kernel spreads connections over the workers. A port already in
//! use, by anyone, is still an error ("Address already in use"): the workers check it
//! is free before they share it (unless the `reuseport` option asks to share it with
//! others too). Unix sockets have
//! no such balancing: the workers share one listening socket (as nginx's workers share
//! theirs), and whichever is free accepts. With TLS on (or auto) and no configuration,
//! one self-signed certificate is made for all workers, so a client sees the same one
//! whichever worker answers.
//!
//! ```no_run
//! use onstream::{Headers, Options, Server, Workers};
//!
//! let workers = Workers::start(
//!     2,
//!     || Options::new().host("127.0.0.1").port(8000),
//!     |listener, options| {
//!         Server::new(listener, options, |_server, stream| async move {
//!             stream.get_headers().await?;
//!             let mut res = Headers::new();
//!             res.append(":status", "200");
//!             stream.write_headers(&res, false).await?;
//!             stream.write_chunk("Hello from one of two loops\n", true).await
//!         })
//!     },
//! )?;
//! println!("listening on {}", workers.local_addr());
//! workers.join()?; // until workers.closer().close() is called from somewhere
//! # Ok::<(), onstream::Error>(())
//! ```

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
};

use crate::{
    error::{Error, Result},
    net::{bind, check_port_free, Listener, LocalAddr},
    options::Options,
    rt::Remote,
    server::Server,
    tls::{self, Tls},
};

/// Running workers: N threads, each stepping its own server.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<Result<()>>>,
    closer: Closer,
    addr: LocalAddr,
    fingerprint: Option<String>,
}

/// Asks every worker to close gracefully (stop accepting, finish what is in flight for
/// at most the `close_timeout` option, then end its thread). `Send` and `Clone`: give it
/// to a signal handler's thread.
#[derive(Debug, Clone)]
pub struct Closer {
    stop: Arc<AtomicBool>,
    remotes: Vec<Remote>,
    counts: Arc<Counts>,
}

/// What the workers tell the other threads about themselves.
#[derive(Debug, Default)]
struct Counts {
    /// Open connections of all workers, as of each worker's last turn.
    connections: AtomicUsize,
    /// Connections cut at the close timeout, added by each worker as it ends.
    cut_at_close: AtomicUsize,
}

impl Closer {
    /// Closes all the workers (once; later calls do nothing more).
    pub fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.remotes.iter().for_each(Remote::wake);
    }

    /// The open connections of all the workers, as each last saw them (a worker counts
    /// at every turn of its loop): what a close will drain.
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::Relaxed)
    }

    /// How many connections the workers cut because their requests were still running
    /// when the `close_timeout` option passed after [`Closer::close`]; complete once
    /// [`Workers::join`] has returned.
    pub fn connections_cut_at_close(&self) -> usize {
        self.counts.cut_at_close.load(Ordering::SeqCst)
    }
}

impl Workers {
    /// Starts `n` workers (at least one). `options` makes each worker's `Options` (it runs
    /// once on this thread to read the listen settings, then on every worker's thread);
    /// `build` makes a worker's server from the listening socket prepared for it and its
    /// options, typically with [`Server::new`], and may set `onerror` or spawn tasks on
    /// it. Binding happens here, so a busy port is an error of this call.
    pub fn start<O, B>(n: usize, options: O, build: B) -> Result<Workers>
    where
        O: Fn() -> Options + Send + Sync + 'static,
        B: Fn(Listener, Options) -> Result<Server> + Send + Sync + 'static,
    {
        Workers::launch(n, None, options, build)
    }

    /// Like [`Workers::start`], on a listening socket made elsewhere (systemd socket
    /// activation, an inherited descriptor), which the workers share.
    pub fn adopt<O, B>(
        listener: impl Into<Listener>,
        n: usize,
        options: O,
        build: B,
    ) -> Result<Workers>
    where
        O: Fn() -> Options + Send + Sync + 'static,
        B: Fn(Listener, Options) -> Result<Server> + Send + Sync + 'static,
    {
        Workers::launch(n, Some(listener.into()), options, build)
    }

    fn launch<O, B>(n: usize, adopted: Option<Listener>, options: O, build: B) -> Result<Workers>
    where
        O: Fn() -> Options + Send + Sync + 'static,
        B: Fn(Listener, Options) -> Result<Server> + Send + Sync + 'static,
    {
        let n = n.max(1);
        let probe = options();
        let default_port = match probe.tls {
            Tls::Off => Some(80),
            Tls::On => Some(443),
            Tls::Auto => None,
        };
        let mut spec = probe.listen.clone();
        let mut listeners = Vec::with_capacity(n);
        if adopted.is_some() || spec.path.is_some() {
            let first = match adopted {
                Some(l) => l,
                None => bind(&spec, default_port)?,
            };
            for _ in 1..n {
                listeners.push(match &first {
                    Listener::Unix(l) => Listener::Unix(l.try_clone()?),
                    Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
                });
            }
            listeners.insert(0, first);
        } else {
            if !spec.reuseport {
                // Sharing the port is for these workers only, not for whoever else
                // holds it already (another copy of the same server, say).
                check_port_free(&spec, default_port)?;
            }
            spec.reuseport = true;
            let first = bind(&spec, default_port)?;
            if let LocalAddr::Inet(a) = first.local_addr()? {
                spec.port = Some(a.port());
            }
            listeners.push(first);
            for _ in 1..n {
                listeners.push(bind(&spec, default_port)?);
            }
        }
        let addr = listeners[0].local_addr()?;
        let (shared_tls, fingerprint) = match (&probe.tls, &probe.tls_config) {
            (Tls::Off, _) | (_, Some(_)) => (None, None),
            _ => {
                let name = spec
                    .host
                    .as_deref()
                    .filter(|h| !h.is_empty() && *h != "0.0.0.0" && *h != "::")
                    .unwrap_or("localhost");
                let (config, fp) = tls::self_signed(name)?;
                (Some(config), Some(fp))
            }
        };
        drop(probe);

        let options = Arc::new(options);
        let build = Arc::new(build);
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Remote>>();
        let mut threads = Vec::with_capacity(n);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (options, build, stop) = (options.clone(), build.clone(), stop.clone());
            let counts = counts.clone();
            let (tls_config, ready_tx) = (shared_tls.clone(), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("onstream-worker-{i}"))
                .spawn(move || {
                    let mut opts = options();
                    if let Some(config) = tls_config {
                        opts = opts.tls_config(config);
                    }
                    let server = match build(listener, opts).and_then(|s| {
                        s.listen_now()?;
                        Ok(s)
                    }) {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = ready_tx
                                .send(Err(Error::config(format!("worker {i} did not start: {e}"))));
                            return Err(e);
                        }
                    };
                    let _ = ready_tx.send(Ok(server.remote()));
                    drop(ready_tx);
                    run_until_stopped(&server, &stop, &counts)
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut remotes = Vec::with_capacity(n);
        let mut failure = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(remote)) => remotes.push(remote),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(Error::config("a worker thread died"))),
            }
        }
        let workers = Workers {
            threads,
            closer: Closer {
                stop,
                remotes,
                counts,
            },
            addr,
            fingerprint,
        };
        if let Some(e) = failure {
            workers.closer.close();
            let _ = workers.join();
            return Err(e);
        }
        Ok(workers)
    }

    /// The address all workers listen on.
    pub fn local_addr(&self) -> &LocalAddr {
        &self.addr
    }

    /// The SHA-256 fingerprint of the self-signed certificate the workers share, when one
    /// was made (TLS on or auto, no `tls_config`).
    pub fn certificate_fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// A handle that closes all the workers, usable from any thread.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Waits for every worker to end (after [`Closer::close`], or on an error a worker's
    /// `onerror` let through); the first error, if any.
    pub fn join(self) -> Result<()> {
        let mut first = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(Error::config("a worker thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// A worker's loop: step until told to stop, then close and step until drained. An
/// error from `step` (the server's `onerror` let it through) ends this worker and asks
/// the others to close at their next turn.
fn run_until_stopped(server: &Server, stop: &AtomicBool, counts: &Counts) -> Result<()> {
    let mut closing = false;
    let mut counted = 0;
    let result = loop {
        let open = server.connections();
        if open != counted {
            // Wrapping: a worker whose count fell adds the two's complement.
            counts
                .connections
                .fetch_add(open.wrapping_sub(counted), Ordering::Relaxed);
            counted = open;
        }
        if !closing && stop.load(Ordering::SeqCst) {
            closing = true;
            server.close();
        }
        if closing && server.empty() {
            break Ok(());
        }
        if let Err(e) = server.step(None) {
            stop.store(true, Ordering::SeqCst);
            break Err(e);
        }
    };
    counts.connections.fetch_sub(counted, Ordering::Relaxed);
    counts
        .cut_at_close
        .fetch_add(server.connections_cut_at_close(), Ordering::SeqCst);
    result
}
