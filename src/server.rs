//! `Server`: accept and dispatch (lua-http's `http/server.lua`), nothing else.
//!
//! A server owns its listener and its set of connections, and runs on a [`Controller`]:
//! an accept task takes connections (pausing at `max_concurrent`, backing off when out of
//! file descriptors), a driver task per connection reads requests, and each request runs
//! the `onstream` handler in a task of its own. An idle HTTP/1 connection parks: its
//! driver ends, the connection table keeps its socket, and the parking lot
//! (`parking.rs`) has it taken up by a new driver when input comes or its idle deadline
//! passes.
//!
//! Errors: only handler failures reach `onerror` (queued here and delivered from `step`, as
//! lua-http reports them from `:step()`); a client that sends garbage, resets or times out
//! costs its own connection and a log line, never the server.

use bytes::BytesMut;
use futures_util::{
    future::{select, Either},
    FutureExt,
};
use slab::Slab;
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    fmt,
    future::{poll_fn, Future},
    os::fd::RawFd,
    pin::{pin, Pin},
    rc::{Rc, Weak},
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    h1::{H1Config, H1Conn, H1Stream, Parked},
    h2::{H2Config, H2Shared, H2Stream},
    handler,
    net::{bind, Accepting, Conn, Connected, Listener, LocalAddr},
    options::Options,
    options::Version,
    parking::{ParkingLot, Ticket},
    rejected::{OnRejected, Rejected},
    rt::{sleep, sleep_until, Controller, Remote, Sleep},
    setup::Setup,
    stream::{Inner, Stream},
    tls::{self, Tls},
    transport::Transport,
};

/// Starts one request's handler: calls `onstream` with the public stream and spawns its
/// future, of the user's own type, as the request's task (given the stream's inner half,
/// already claimed), so that the future and the task take one allocation, not two.
type Handler = Box<dyn FnMut(ServerHandle, Stream, Inner)>;

/// An error handler: receives the server, the operation that failed (`"onstream"`) and the
/// error; returning `Err` makes `step`/`run` return it.
pub type OnError = Box<dyn FnMut(&ServerHandle, &str, Error) -> Result<()>>;

/// After this many accepts in one go the accept task yields, so a connection flood cannot
/// starve the connections already open.
const ACCEPT_BUDGET: usize = 128;

/// How long accept pauses when the process is out of file descriptors or memory: the
/// listener stays readable, so retrying at once would spin (lua-http's EMFILE branch).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An HTTP server on a step loop.
///
/// ```no_run
/// use onstream::{Headers, Options, Server};
///
/// let server = Server::listen(Options::new().host("127.0.0.1").port(8000), |_srv, stream| async move {
///     let mut res = Headers::new();
///     res.append(":status", "200");
///     stream.write_headers(&res, false).await?;
///     stream.write_chunk(b"Hello, World!\n", true).await
/// })?;
/// server.run(None)?;
/// # Ok::<(), onstream::Error>(())
/// ```
pub struct Server {
    handle: ServerHandle,
}

/// A cheap handle to a server, given to handlers (lua-http passes the server itself).
#[derive(Clone)]
pub struct ServerHandle {
    shared: Rc<Shared>,
}

struct Shared {
    ctl: Controller,
    /// Options that every connection reads.
    h1: Rc<H1Config>,
    h2: H2Config,
    /// HTTP/2 on the own engine (`h2own/`, `H2Engine::Own`) rather than the h2 crate's.
    h2_own: bool,
    version: Version,
    max_concurrent: usize,
    close_timeout: Duration,
    handler: RefCell<Handler>,
    onerror: RefCell<Option<OnError>>,
    onrejected: RefCell<Option<OnRejected>>,
    /// Handler errors waiting to be reported from `step`.
    errors: RefCell<VecDeque<(&'static str, Error)>>,
    listener: RefCell<ListenerState>,
    paused: Cell<bool>,
    closing: Cell<bool>,
    /// Connections `close()` cut at its `close_timeout`.
    cut_at_close: Cell<usize>,
    /// The accept task, parked while paused or at `max_concurrent`.
    accept_waker: Cell<Option<Waker>>,
    /// Open connections, to close them on shutdown (`None` while still in setup).
    conns: RefCell<Slab<Option<ConnRef>>>,
    /// The tasks of the connections still in setup (first bytes, TLS handshake), for
    /// `close()` to end them at once: they have no request to finish. Apart from `conns`,
    /// whose slots would otherwise all need room for a waker.
    in_setup: RefCell<Slab<Option<Waker>>>,
    /// Wakers and deadlines of the parked connections in `conns`.
    parking: ParkingLot,
    /// How connections are set up (TLS or not); made when the server starts listening,
    /// since a self-signed certificate names the listen host.
    setup: RefCell<Option<Rc<Setup>>>,
    /// The `tls` and `tls_config` options, until `start` turns them into `setup`.
    tls: Tls,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    connection_setup_timeout: Duration,
    /// The SHA-256 fingerprint of the self-signed certificate, when one was made.
    fingerprint: RefCell<Option<String>>,
}

/// An open connection as the server sees it, to close it on shutdown.
enum ConnRef {
    H1(Weak<H1Conn>),
    H2(Weak<H2Shared>),
    H2Own(Weak<crate::h2own::Conn>),
    /// An idle HTTP/1 connection without a task (see `parking.rs`).
    Parked(Box<ParkedConn>),
}

struct ParkedConn {
    /// The generation of this parking (the key is the connection's place in the table).
    gen: u64,
    conn: Parked,
}

impl ConnRef {
    fn close_gracefully(&self) {
        match self {
            ConnRef::H1(c) => c.upgrade().into_iter().for_each(|c| c.close_gracefully()),
            ConnRef::H2(c) => c.upgrade().into_iter().for_each(|c| c.close_gracefully()),
            ConnRef::H2Own(c) => c.upgrade().into_iter().for_each(|c| c.close_gracefully()),
            // Taken up (and so closed gracefully by its new driver) before this is called.
            ConnRef::Parked(_) => {}
        }
    }

    /// Cuts the connection if it is still open; whether a request on it was cut short
    /// (one that is only closing after its last answer does not count).
    fn abort(&self) -> bool {
        match self {
            ConnRef::H1(c) => c.upgrade().is_some_and(|c| {
                let cut_short = c.has_request_in_flight();
                c.abort();
                cut_short
            }),
            ConnRef::H2(c) => c.upgrade().is_some_and(|c| {
                let cut_short = c.has_request_in_flight();
                c.abort();
                cut_short
            }),
            ConnRef::H2Own(c) => c.upgrade().is_some_and(|c| {
                let cut_short = c.has_request_in_flight();
                c.abort();
                cut_short
            }),
            ConnRef::Parked(_) => false,
        }
    }

    fn clone_weak(&self) -> Option<ConnRef> {
        match self {
            ConnRef::H1(c) => Some(ConnRef::H1(c.clone())),
            ConnRef::H2(c) => Some(ConnRef::H2(c.clone())),
            ConnRef::H2Own(c) => Some(ConnRef::H2Own(c.clone())),
            ConnRef::Parked(_) => None,
        }
    }
}

enum ListenerState {
    /// Not bound yet (bind is lazy, as in lua-http): what to bind.
    Unbound(Box<Options>),
    /// Bound (or adopted) but not yet registered with the controller.
    Bound(Listener),
    /// Accepting; the address is kept for `local_addr`. The accept task borrows the
    /// listener from here, so `close()` drops it (and the port refuses) at once.
    Running {
        addr: LocalAddr,
        /// The one strong reference: the accept task holds a weak one.
        _listener: Rc<Accepting>,
    },
    /// `close()` was called, or `listen_now` failed.
    Closed,
    /// No listener at all ([`Server::without_listener`]): connections come only from
    /// `add_socket`.
    Detached,
}

impl Server {
    /// A server that binds according to `options` (on the first `step`, or on
    /// [`Server::listen_now`]) and runs `onstream` for every request.
    pub fn listen<F, Fut>(options: Options, onstream: F) -> Result<Server>
    where
        F: FnMut(ServerHandle, Stream) -> Fut + 'static,
        Fut: Future<Output = Result<()>> + 'static,
    {
        let server = Server::build(&options, onstream)?;
        *server.handle.shared.listener.borrow_mut() = ListenerState::Unbound(Box::new(options));
        Ok(server)
    }

    /// A server accepting from an existing listening socket (lua-http's `server.new`).
    pub fn new<F, Fut>(
        listener: impl Into<Listener>,
        options: Options,
        onstream: F,
    ) -> Result<Server>
    where
        F: FnMut(ServerHandle, Stream) -> Fut + 'static,
        Fut: Future<Output = Result<()>> + 'static,
    {
        let server = Server::build(&options, onstream)?;
        *server.handle.shared.listener.borrow_mut() = ListenerState::Bound(listener.into());
        Ok(server)
    }

    /// A server with no listening socket that serves only the connections given to
    /// [`Server::add_socket`]: inetd's `nowait` mode (the connection is on standard
    /// input), or a worker fed by an acceptor thread. `options`' listen settings are
    /// ignored; with `Tls::Auto` or `Tls::On` and no `tls_config` the self-signed
    /// certificate is made for `localhost`.
    pub fn without_listener<F, Fut>(options: Options, onstream: F) -> Result<Server>
    where
        F: FnMut(ServerHandle, Stream) -> Fut + 'static,
        Fut: Future<Output = Result<()>> + 'static,
    {
        let server = Server::build(&options, onstream)?;
        *server.handle.shared.listener.borrow_mut() = ListenerState::Detached;
        Ok(server)
    }

    fn build<F, Fut>(options: &Options, mut onstream: F) -> Result<Server>
    where
        F: FnMut(ServerHandle, Stream) -> Fut + 'static,
        Fut: Future<Output = Result<()>> + 'static,
    {
        let ctl = match &options.controller {
            Some(c) => c.clone(),
            None => Controller::new()?,
        };
        let handler: Handler = Box::new(move |srv: ServerHandle, public, stream| {
            let shared = srv.shared.clone();
            let fut = onstream(srv, public);
            handler::spawn(&shared.ctl.clone(), stream, fut, move |e| {
                shared.errors.borrow_mut().push_back(("onstream", e));
            });
        });
        Ok(Server {
            handle: ServerHandle {
                shared: Rc::new(Shared {
                    ctl,
                    h1: Rc::new(H1Config {
                        limits: options.limits.clone(),
                        connection_setup_timeout: options.connection_setup_timeout,
                        intra_stream_timeout: options.intra_stream_timeout,
                        header_read_timeout: options.header_read_timeout,
                        send_timeout: options.send_timeout,
                        body_read_timeout: options.body_read_timeout,
                        park_after: options.park_after,
                    }),
                    h2: H2Config::from_options(options),
                    h2_own: options.h2.engine == crate::options::H2Engine::Own,
                    version: options.version,
                    max_concurrent: options.max_concurrent,
                    close_timeout: options.close_timeout,
                    handler: RefCell::new(handler),
                    onerror: RefCell::new(None),
                    onrejected: RefCell::new(None),
                    errors: RefCell::new(VecDeque::new()),
                    listener: RefCell::new(ListenerState::Closed),
                    paused: Cell::new(false),
                    closing: Cell::new(false),
                    cut_at_close: Cell::new(0),
                    accept_waker: Cell::new(None),
                    conns: RefCell::new(Slab::new()),
                    in_setup: RefCell::new(Slab::new()),
                    parking: ParkingLot::default(),
                    setup: RefCell::new(None),
                    tls: options.tls,
                    tls_config: options.tls_config.clone(),
                    connection_setup_timeout: options.connection_setup_timeout,
                    fingerprint: RefCell::new(None),
                }),
            },
        })
    }

    /// Binds now (lua-http's `server:listen()`), returning the error instead of leaving it
    /// to the first `step`. Does nothing when already listening.
    pub fn listen_now(&self) -> Result<()> {
        self.handle.shared.start()
    }

    /// The address listened on; binds first if needed (lua-http's `localname`).
    pub fn local_addr(&self) -> Result<LocalAddr> {
        self.listen_now()?;
        self.handle.local_addr()
    }

    /// Runs one turn of the loop (see [`Controller::step`]), then reports queued handler
    /// errors to `onerror`; the first one it returns is returned here.
    pub fn step(&self, timeout: Option<Duration>) -> Result<()> {
        self.listen_now()?;
        self.handle.shared.ctl.step(timeout)?;
        self.handle.report_errors()
    }

    /// Steps until `timeout` passes, the server is paused, or it is closed and drained, or
    /// `onerror` returns an error (lua-http's `:loop()`).
    pub fn run(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let shared = &self.handle.shared;
            if shared.paused.get() || (shared.closing.get() && self.empty()) {
                return Ok(());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(());
            }
            self.step(left)?;
        }
    }

    /// The file descriptor an external loop waits on (readable means: call `step`).
    pub fn pollfd(&self) -> RawFd {
        self.handle.shared.ctl.pollfd()
    }

    /// Always `"r"`: wait for readability of [`Server::pollfd`].
    pub fn events(&self) -> &'static str {
        self.handle.shared.ctl.events()
    }

    /// The longest an external loop may wait before calling `step` (see
    /// [`Controller::timeout`]). Zero while the server has not bound yet, so the first step
    /// comes at once.
    pub fn timeout(&self) -> Option<Duration> {
        if matches!(
            *self.handle.shared.listener.borrow(),
            ListenerState::Unbound(_) | ListenerState::Bound(_)
        ) {
            return Some(Duration::ZERO);
        }
        self.handle.shared.ctl.timeout()
    }

    /// Replaces the error handler, returning the old one (`None`: the default, which
    /// returns the error from `step`).
    pub fn set_onerror(
        &self,
        onerror: impl FnMut(&ServerHandle, &str, Error) -> Result<()> + 'static,
    ) -> Option<OnError> {
        self.handle.shared.onerror.replace(Some(Box::new(onerror)))
    }

    /// Sets the hook told of every request the server answers by itself before any
    /// handler runs (see [`Rejected`]), returning the old one: an access log's way to
    /// show malformed, oversized and too slow requests, as nginx's does. Called from the
    /// connection's task as the answer is queued; it must not block.
    pub fn set_onrejected(
        &self,
        onrejected: impl FnMut(&ServerHandle, &Rejected<'_>) + 'static,
    ) -> Option<OnRejected> {
        self.handle
            .shared
            .onrejected
            .replace(Some(Box::new(onrejected)))
    }

    /// Serves a connection accepted elsewhere: inetd, another thread's listener, a
    /// descriptor received with `SCM_RIGHTS`.
    pub fn add_socket(&self, socket: impl Into<Connected>) -> Result<()> {
        self.listen_now()?;
        let conn = Conn::adopt(&self.handle.shared.ctl, socket.into())?;
        self.handle.shared.spawn_connection(conn);
        Ok(())
    }

    /// Runs the handler on a stream that came from elsewhere (lua-http's `add_stream`),
    /// e.g. one a handler of another server decided this server should answer.
    pub fn add_stream(&self, stream: Stream) {
        self.handle.run_handler(stream);
    }

    /// A handle to give to other parts of the program.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The loop this server runs on.
    pub fn controller(&self) -> &Controller {
        &self.handle.shared.ctl
    }

    /// A `Send` handle to wake the loop from other threads.
    pub fn remote(&self) -> Remote {
        self.handle.shared.ctl.remote()
    }
}

impl Drop for Server {
    /// Dropping the server closes it: the listener at once, connections after their
    /// in-flight requests (if the loop keeps running) or with the loop.
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl std::ops::Deref for Server {
    type Target = ServerHandle;
    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

impl ServerHandle {
    /// Stops accepting new connections; open ones go on.
    pub fn pause(&self) {
        self.shared.paused.set(true);
    }

    /// Accepts again after [`ServerHandle::pause`].
    pub fn resume(&self) {
        self.shared.paused.set(false);
        self.shared.wake_accept();
    }

    /// Stops accepting and closes the listener; in-flight requests are answered (for at
    /// most the `close_timeout` option), idle connections and connections still being set
    /// up (no request yet) close at once. A closed server cannot be reused.
    pub fn close(&self) {
        let shared = &self.shared;
        if shared.closing.replace(true) {
            return;
        }
        *shared.listener.borrow_mut() = ListenerState::Closed;
        shared.wake_accept();
        // Connections still in setup have no request to finish: their tasks see
        // `closing` and end.
        let in_setup: Vec<Waker> = shared
            .in_setup
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, waker)| waker.take())
            .collect();
        in_setup.into_iter().for_each(Waker::wake);
        // Parked connections get a driver again, which closes them as it would have.
        let parked: Vec<Ticket> = shared
            .conns
            .borrow()
            .iter()
            .filter_map(|(key, c)| match c {
                Some(ConnRef::Parked(p)) => Some((key, p.gen)),
                _ => None,
            })
            .collect();
        for ticket in parked {
            shared.take_up(ticket);
        }
        shared.parking.wake_task();
        let conns: Vec<ConnRef> = shared
            .conns
            .borrow()
            .iter()
            .filter_map(|(_, c)| c.as_ref().and_then(ConnRef::clone_weak))
            .collect();
        for c in &conns {
            c.close_gracefully();
        }
        if !conns.is_empty() {
            let limit = shared.close_timeout;
            let weak = Rc::downgrade(shared);
            shared
                .ctl
                .spawn(async move {
                    sleep(limit).await;
                    let cut = conns.iter().filter(|c| c.abort()).count();
                    if let Some(shared) = weak.upgrade() {
                        shared.cut_at_close.set(cut);
                    }
                })
                .detach();
        }
    }

    /// The SHA-256 fingerprint (`AB:CD:…`) of the self-signed certificate the server made
    /// because TLS was on (or auto) and no `tls_config` was given; `None` otherwise.
    pub fn certificate_fingerprint(&self) -> Option<String> {
        self.shared.fingerprint.borrow().clone()
    }

    /// How many connections [`close`](ServerHandle::close) cut because their requests
    /// were still running when the `close_timeout` option passed (0 before that, and when
    /// every request finished in time): a download cut short by a shutdown.
    pub fn connections_cut_at_close(&self) -> usize {
        self.shared.cut_at_close.get()
    }

    /// The number of open client connections.
    pub fn connections(&self) -> usize {
        self.shared.conns.borrow().len()
    }

    /// Whether the listener and every connection are closed.
    pub fn empty(&self) -> bool {
        matches!(
            *self.shared.listener.borrow(),
            ListenerState::Closed | ListenerState::Detached
        ) && self.connections() == 0
    }

    /// Whether the server is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.paused.get()
    }

    /// The address listened on (without binding; see [`Server::local_addr`]).
    pub fn local_addr(&self) -> Result<LocalAddr> {
        match &*self.shared.listener.borrow() {
            ListenerState::Running { addr, .. } => Ok(addr.clone()),
            ListenerState::Bound(l) => l.local_addr(),
            ListenerState::Unbound(_) => Err(Error::usage("not listening yet")),
            ListenerState::Closed => Err(Error::closed("server closed")),
            ListenerState::Detached => Err(Error::usage("the server has no listener")),
        }
    }

    fn report_errors(&self) -> Result<()> {
        loop {
            let Some((operation, err)) = self.shared.errors.borrow_mut().pop_front() else {
                return Ok(());
            };
            let custom = self.shared.onerror.borrow_mut().take();
            match custom {
                Some(mut f) => {
                    let r = f(self, operation, err);
                    let mut slot = self.shared.onerror.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(f);
                    }
                    r?;
                }
                None => return Err(err.with_context(operation)),
            }
        }
    }
}

impl Shared {
    fn start(self: &Rc<Self>) -> Result<()> {
        let mut state = self.listener.borrow_mut();
        let mut host = None;
        let listener = match std::mem::replace(&mut *state, ListenerState::Closed) {
            ListenerState::Unbound(opts) => {
                let default_port = match self.tls {
                    Tls::Off => Some(80),
                    Tls::On => Some(443),
                    Tls::Auto => None,
                };
                match bind(&opts.listen, default_port) {
                    Ok(l) => {
                        host = opts.listen.host.clone();
                        l
                    }
                    Err(e) => {
                        *state = ListenerState::Unbound(opts);
                        return Err(e);
                    }
                }
            }
            ListenerState::Bound(l) => l,
            ListenerState::Detached if self.setup.borrow().is_none() => {
                *state = ListenerState::Detached;
                drop(state);
                return self.make_setup(None);
            }
            other => {
                *state = other;
                return Ok(());
            }
        };
        drop(state);
        self.make_setup(host.as_deref())?;
        let addr = listener.local_addr()?;
        let accepting = Rc::new(listener.register(&self.ctl)?);
        *self.listener.borrow_mut() = ListenerState::Running {
            addr,
            _listener: accepting.clone(),
        };
        self.ctl
            .spawn(Shared::accept_loop(
                Rc::downgrade(self),
                Rc::downgrade(&accepting),
            ))
            .detach();
        Ok(())
    }

    /// The per-connection setup (TLS configuration, sniffing), made once at start.
    fn make_setup(&self, host: Option<&str>) -> Result<()> {
        let config = match self.tls {
            Tls::Off => None,
            Tls::On | Tls::Auto => {
                let name = host
                    .filter(|h| !h.is_empty() && *h != "0.0.0.0" && *h != "::")
                    .unwrap_or("localhost");
                let (config, fingerprint) =
                    tls::server_config(self.tls_config.as_ref(), name, self.version)?;
                *self.fingerprint.borrow_mut() = fingerprint;
                Some(config)
            }
        };
        *self.setup.borrow_mut() = Some(Rc::new(Setup::new(
            self.tls,
            self.version,
            config,
            self.connection_setup_timeout,
        )));
        Ok(())
    }

    fn wake_accept(&self) {
        if let Some(w) = self.accept_waker.take() {
            w.wake();
        }
    }

    /// Accepts until the server closes. It holds only weak references, so a dropped or
    /// closed server's listener is closed at once, not when this task next runs.
    async fn accept_loop(shared: Weak<Self>, listener: Weak<Accepting>) {
        // Counted across the loop: each accept ends one `poll_fn`, and a count kept inside
        // would start again at every connection, so the budget would never apply and a
        // burst of connections would be accepted in one turn while none of them (nor any
        // other task) ran.
        let mut n_accepted = 0;
        loop {
            let accepted = poll_fn(|cx| {
                let (Some(shared), Some(listener)) = (shared.upgrade(), listener.upgrade()) else {
                    return Poll::Ready(None);
                };
                if shared.paused.get() || shared.conns.borrow().len() >= shared.max_concurrent {
                    shared.accept_waker.set(Some(cx.waker().clone()));
                    return Poll::Pending;
                }
                if n_accepted >= ACCEPT_BUDGET {
                    cx.waker().wake_by_ref();
                    n_accepted = 0;
                    return Poll::Pending;
                }
                match listener.poll_accept(&shared.ctl, cx) {
                    Poll::Ready(r) => {
                        n_accepted += 1;
                        Poll::Ready(Some((shared, r)))
                    }
                    Poll::Pending => {
                        n_accepted = 0;
                        // `close()` wakes us through this to let the task end.
                        shared.accept_waker.set(Some(cx.waker().clone()));
                        Poll::Pending
                    }
                }
            })
            .await;
            match accepted {
                None => return,
                Some((shared, Ok(conn))) => shared.spawn_connection(conn),
                Some((_, Err(e))) if is_resource_exhaustion(&e) => {
                    tracing::warn!("accept: {e}; pausing accept for {ACCEPT_BACKOFF:?}");
                    sleep(ACCEPT_BACKOFF).await;
                }
                // The client gave up before we accepted it, or a signal interrupted us.
                Some((_, Err(e))) => tracing::debug!("accept: {e}"),
            }
        }
    }

    fn spawn_connection(self: &Rc<Self>, conn: Conn) {
        let key = self.conns.borrow_mut().insert(None);
        let (shared, after) = (self.clone(), self.clone());
        // Combinators rather than an async block: the task's state is then exactly the
        // boxed setup (a TLS handshake holds a whole rustls connection), and after it the
        // connection's future, with no room kept for the accepted socket or the
        // `Transport` that an async block's bindings would hold for the task's life.
        let task = Box::pin(self.clone().set_up(conn))
            .then(move |transport| match transport {
                // The own engine runs in a task of its own, sized for it alone,
                // and this one ends (`None`: the connection lives on there).
                Some(transport) if transport.h2 && shared.h2_own => {
                    shared.spawn_h2_own(key, transport);
                    Either::Right(std::future::ready(None))
                }
                Some(transport) => Either::Left(shared.serve_connection(key, transport).map(Some)),
                None => Either::Right(std::future::ready(Some(None))),
            })
            .map(move |ended| {
                if let Some(parked) = ended {
                    after.connection_ended(key, parked);
                }
            });
        self.ctl.spawn(task).detach();
    }

    /// A connection's driver returned: the connection closed, or it parked.
    fn connection_ended(self: &Rc<Self>, key: usize, parked: Option<Parked>) {
        match parked {
            Some(parked) if !self.closing.get() => self.park(key, parked),
            // Closing: a new driver closes it gracefully.
            Some(parked) => self.take_up_parked(key, parked, Default::default()),
            None => {
                self.conns.borrow_mut().remove(key);
                self.wake_accept();
            }
        }
    }

    /// Keeps an idle HTTP/1 connection without a task until input comes or its idle
    /// deadline passes.
    fn park(self: &Rc<Self>, key: usize, mut conn: Parked) {
        let (ticket, waker) = self.parking.ticket(key);
        if let Poll::Ready(read_ahead) = conn.poll_input(&mut Context::from_waker(&waker)) {
            // Input came just now: no need to park.
            return self.take_up_parked(key, conn, read_ahead);
        }
        let idle_by = conn.idle_by();
        let gen = ticket.1;
        self.conns.borrow_mut()[key] = Some(ConnRef::Parked(Box::new(ParkedConn { gen, conn })));
        if self.parking.park(ticket, idle_by) {
            self.ctl
                .spawn(Shared::parking_loop(Rc::downgrade(self)))
                .detach();
        }
    }

    /// Gives the parked connection of `ticket`, if it is still parked, a new driver.
    fn take_up(self: &Rc<Self>, (key, gen): Ticket) {
        let parked = {
            let mut conns = self.conns.borrow_mut();
            let Some(slot) = conns.get_mut(key) else {
                return;
            };
            if !matches!(slot, Some(ConnRef::Parked(p)) if p.gen == gen) {
                return;
            }
            let Some(ConnRef::Parked(parked)) = slot.take() else {
                return;
            };
            parked
        };
        self.parking.unpark();
        self.take_up_parked(key, parked.conn, Default::default());
    }

    fn take_up_parked(self: &Rc<Self>, key: usize, conn: Parked, read_ahead: BytesMut) {
        let idle_by = conn.idle_by();
        let h1 = self.start_h1(key, conn.into_transport(read_ahead));
        let after = self.clone();
        let task = self
            .drive_h1(h1, Some(idle_by))
            .map(move |parked| after.connection_ended(key, parked));
        self.ctl.spawn(task).detach();
    }

    /// The lot's task: hands parked connections whose socket woke or whose idle deadline
    /// passed to new drivers. It ends when nothing is parked (and is started again by the
    /// next parking), or with the server.
    async fn parking_loop(shared: Weak<Self>) {
        let mut due = Vec::new();
        let mut timer: Option<Sleep> = None;
        poll_fn(|cx| loop {
            let Some(shared) = shared.upgrade() else {
                return Poll::Ready(());
            };
            let next = shared
                .parking
                .take_due(shared.ctl.now(), cx.waker(), &mut due);
            for ticket in due.drain(..) {
                shared.take_up(ticket);
            }
            if !shared.parking.keep_running() {
                return Poll::Ready(());
            }
            let Some(next) = next else {
                return Poll::Pending;
            };
            let timer = match &mut timer {
                Some(t) if t.deadline() == next => t,
                slot => slot.insert(sleep_until(next)),
            };
            if Pin::new(timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
        })
        .await;
    }

    /// Runs one connection after setup: HTTP/1 or HTTP/2 until it closes, or an HTTP/1
    /// connection until it parks.
    ///
    /// The connection task lives as long as the connection, and its size is fixed by its
    /// largest state, so only the HTTP/1 driver runs inline: HTTP/2 is boxed, and what
    /// leads up to the driver happens in plain functions (a plain function, not an async
    /// one, so that the task keeps no slot for the `Transport` it was given), so that an
    /// idle keep-alive connection's task is little more than the driver's state.
    fn serve_connection(
        self: &Rc<Self>,
        key: usize,
        transport: Transport,
    ) -> impl Future<Output = Option<Parked>> {
        if transport.h2 {
            let h2 = Box::pin(self.clone().serve_h2(key, transport));
            return Either::Left(h2.map(|()| None));
        }
        let h1 = self.start_h1(key, transport);
        Either::Right(self.drive_h1(h1, None))
    }

    /// The HTTP/1 driver's future itself, not an async block awaiting it, which would
    /// keep another slot for `h1` and the handle.
    fn drive_h1(
        self: &Rc<Self>,
        h1: Rc<H1Conn>,
        resumed: Option<Instant>,
    ) -> impl Future<Output = Option<Parked>> {
        let handle = ServerHandle {
            shared: self.clone(),
        };
        let rejecting = handle.clone();
        h1.drive(
            move |stream| handle.spawn_handler(stream),
            move |rejected| rejecting.report_rejected(rejected),
            resumed,
        )
    }

    /// Sets the connection up, unless the server closes first.
    async fn set_up(self: Rc<Self>, conn: Conn) -> Option<Transport> {
        let setup = self.setup.borrow().clone()?;
        let entry = InSetup::new(&self);
        let closed = pin!(poll_fn(|cx| entry.poll_closed(cx)));
        let run = pin!(setup.run(conn));
        // `closed` first: a connection accepted just before `close()` is not set up.
        let outcome = select(closed, run).await;
        match outcome {
            Either::Left(_) => {
                tracing::debug!("server closed during connection setup");
                None
            }
            Either::Right((Ok(t), _)) => Some(t),
            Either::Right((Err(e), _)) => {
                // A failed handshake or a silent client costs only this connection
                // (lua-http's default onerror stopped the whole server here).
                tracing::debug!("connection setup failed: {e}");
                None
            }
        }
    }

    /// `serve_h2` on the own engine (`h2own/`), as a task of its own: the
    /// connection task's size is that of its largest state (the HTTP/1 driver's), which an
    /// idle HTTP/2 connection would otherwise keep.
    fn spawn_h2_own(self: &Rc<Self>, key: usize, transport: Transport) {
        let after = self.clone();
        let task = self
            .clone()
            .serve_h2_own(key, transport)
            .map(move |()| after.connection_ended(key, None));
        self.ctl.spawn(task).detach();
    }

    /// `serve_h2` on the own engine (`h2own/`).
    async fn serve_h2_own(self: Rc<Self>, key: usize, transport: Transport) {
        let handle = ServerHandle {
            shared: self.clone(),
        };
        let spawn = |stream: crate::h2own::OwnStream| {
            handle.run_handler(Stream::new(Inner::H2Own(Rc::new(stream))))
        };
        let register = |c: &Rc<crate::h2own::Conn>| {
            self.conns.borrow_mut()[key] = Some(ConnRef::H2Own(Rc::downgrade(c)));
            if self.closing.get() {
                c.close_gracefully();
            }
        };
        crate::h2own::serve(transport, &self.h2, spawn, register).await;
    }

    async fn serve_h2(self: Rc<Self>, key: usize, transport: Transport) {
        let handle = ServerHandle {
            shared: self.clone(),
        };
        let spawn = |stream: H2Stream| handle.run_handler(Stream::new(Inner::H2(Rc::new(stream))));
        let register = |h2: &Rc<H2Shared>| {
            self.conns.borrow_mut()[key] = Some(ConnRef::H2(Rc::downgrade(h2)));
            if self.closing.get() {
                h2.close_gracefully();
            }
        };
        crate::h2::serve(transport, &self.h2, spawn, register).await;
    }

    fn start_h1(&self, key: usize, transport: Transport) -> Rc<H1Conn> {
        let h1 = H1Conn::new(transport, self.h1.clone());
        self.conns.borrow_mut()[key] = Some(ConnRef::H1(Rc::downgrade(&h1)));
        if self.closing.get() {
            h1.close_gracefully();
        }
        h1
    }
}

/// A connection's place in `in_setup`, for as long as its setup runs.
struct InSetup<'a> {
    shared: &'a Shared,
    key: usize,
}

impl<'a> InSetup<'a> {
    fn new(shared: &'a Shared) -> InSetup<'a> {
        let key = shared.in_setup.borrow_mut().insert(None);
        InSetup { shared, key }
    }

    /// Ready once the server is closing; until then `close()` has our waker.
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.closing.get() {
            return Poll::Ready(());
        }
        let mut in_setup = self.shared.in_setup.borrow_mut();
        let waker = &mut in_setup[self.key];
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for InSetup<'_> {
    fn drop(&mut self) {
        self.shared.in_setup.borrow_mut().remove(self.key);
    }
}

impl ServerHandle {
    fn report_rejected(&self, rejected: &Rejected<'_>) {
        // Taken out while it runs, so that a hook that replaces itself does not find
        // the slot borrowed.
        let hook = self.shared.onrejected.borrow_mut().take();
        if let Some(mut hook) = hook {
            hook(self, rejected);
            let mut slot = self.shared.onrejected.borrow_mut();
            if slot.is_none() {
                *slot = Some(hook);
            }
        }
    }

    fn spawn_handler(&self, stream: H1Stream) {
        self.run_handler(Stream::new(Inner::H1(Rc::new(stream))));
    }

    fn run_handler(&self, public: Stream) {
        let stream = public.inner().clone();
        // Claimed before the handler is called: it may hand the stream to another server
        // (`add_stream`) at once, and only the last holder may finish it.
        stream.common().claim();
        // The task is only scheduled, not run, while the handler is borrowed.
        let mut handler = self.shared.handler.borrow_mut();
        handler(self.clone(), public, stream);
    }
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.fmt(f)
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr().ok())
            .field("connections", &self.connections())
            .field("paused", &self.shared.paused.get())
            .field("closing", &self.shared.closing.get())
            .finish()
    }
}
