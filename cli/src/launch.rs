//! Starting and stopping: the library's `Options` from the command line, the workers (one
//! loop per core, `onstream::Workers`) on a socket bound here or inherited from systemd,
//! or one server with no listener for `--inetd`; the start-up banner; SIGINT/SIGTERM as a
//! graceful drain of every worker.
//!
//! Start-up errors are returned as one line each (the caller prints it and exits 1):
//! a missing directory, a busy port, unreadable certificate files.

use std::{
    fmt,
    os::fd::{FromRawFd, OwnedFd},
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use onstream::{Closer, Listener, LocalAddr, Options, Server, Tls, Version, Workers};

use crate::{
    access_log::{self, AccessLog, Record, Request},
    args::{Args, LogFormat, Switch, TlsMode},
    auth::Users,
    beneath::Root,
    compress,
    response_headers::{self, ResponseHeaders},
    share,
    site::{self, Site},
    unix_socket,
};

/// A start-up failure, said in one line.
#[derive(Debug)]
pub struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail(what: impl fmt::Display) -> Failure {
    Failure(what.to_string())
}

/// Runs the command until it is told to stop.
pub fn run(args: Args) -> Result<(), Failure> {
    if args.tls == TlsMode::Off && args.cert.is_some() {
        return Err(fail(
            "--cert and --key are for TLS: they cannot go with --tls off",
        ));
    }
    // Checked once here for a clear error; every worker opens the root for itself.
    let root = Root::new(&args.dir)
        .map_err(|e| fail(format_args!("cannot serve {}: {e}", args.dir.display())))?;
    if !args.quiet && args.log_format == LogFormat::Json {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stdout)
            .with_target(false)
            .init();
    }
    if let Some(warning) = cleartext_auth_warning(&args) {
        eprintln!("onstream: warning: {warning}");
    }
    raise_fd_limit();
    let tls_config = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            Some(onstream::tls::config_from_pem_files(cert, key).map_err(fail)?)
        }
        _ => None,
    };
    if args.inetd {
        return inetd(args, root, tls_config);
    }
    let root_path = root.path().to_owned();
    drop(root);
    if let Some(path) = &args.unix {
        unix_socket::prepare(path).map_err(fail)?;
    }
    let n = args.workers.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let args = Arc::new(args);
    let make_options = {
        let (args, tls_config) = (args.clone(), tls_config.clone());
        move || options(&args, tls_config.clone())
    };
    let build = {
        let args = args.clone();
        move |listener, options| worker(&args, listener, options)
    };
    let signals = catch_signals()?;
    let workers = match systemd_listener() {
        Some(fd) => Workers::adopt(fd, n, make_options, build)
            .map_err(|e| fail(format_args!("cannot serve the socket systemd passed: {e}"))),
        None => Workers::start(n, make_options, build).map_err(|e| {
            fail(format_args!(
                "cannot listen on {}: {e}",
                listen_address(&args)
            ))
        }),
    }?;
    let _socket_file = args.unix.as_deref().map(unix_socket::RemoveOnExit::new);
    // Signals are caught before the banner says the server is up: a signal sent as
    // soon as it is seen must drain, not kill.
    let closer = workers.closer();
    watch_signals(signals, closer.clone(), args.shutdown_timeout)?;
    banner(&workers, &root_path, &args);
    workers.join().map_err(fail)?;
    match closer.connections_cut_at_close() {
        0 => Ok(()),
        n => Err(fail(format_args!(
            "{n} connection{} cut at the shutdown timeout ({:?}) before {} response ended",
            if n == 1 { "" } else { "s" },
            args.shutdown_timeout,
            if n == 1 { "its" } else { "their" },
        ))),
    }
}

/// One worker's server, on its own thread: its own view of the root, its own log buffer.
fn worker(args: &Args, listener: Listener, options: Options) -> onstream::Result<Server> {
    let site = site_for(args, Root::new(&args.dir)?);
    let handler = {
        let site = site.clone();
        move |_server, stream| site::handle(site.clone(), stream)
    };
    let server = Server::new(listener, options, handler)?;
    report_errors(&server);
    log_requests(&server, &site);
    Ok(server)
}

/// What the command line asks to serve from `root`; called on the thread that serves it
/// (the response headers are kept per thread).
fn site_for(args: &Args, root: Root) -> Rc<Site> {
    response_headers::install(Rc::new(ResponseHeaders {
        extra: args.header.clone(),
        cors: args.cors,
        cache_control: if args.no_cache {
            Some("no-cache".to_owned())
        } else {
            args.cache_control.clone()
        },
    }));
    Rc::new(Site {
        root: root.follow_symlinks(args.follow_symlinks),
        listing: !args.no_listing,
        upload: args.upload.then_some(args.max_upload_size),
        ws_echo: args.ws_echo.clone(),
        log: (!args.quiet).then(|| Rc::new(AccessLog::new(args.log_format))),
        browse: crate::entries::Browse {
            hidden: args.hidden,
            readme: args.readme,
        },
        allow_from: args.allow_from.clone(),
        users: Users::new(args.auth.clone()),
        cors: args.cors,
        spa: args.spa,
        index: args.index.clone(),
        compress: (args.compress == Switch::On).then_some(compress::Settings {
            max_size: args.compress_max_size,
        }),
    })
}

/// Basic credentials are readable by anyone on the path when they travel in cleartext:
/// worth a warning when the server can be reached from other machines without TLS.
fn cleartext_auth_warning(args: &Args) -> Option<String> {
    if args.auth.is_empty() || args.tls == TlsMode::On || args.unix.is_some() {
        return None;
    }
    let loopback = args.bind == "localhost"
        || args
            .bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "--auth over cleartext HTTP on {}: passwords can be read on the network; use --tls on",
            args.bind
        )
    })
}

/// Handler and connection errors are printed; they never stop the server.
fn report_errors(server: &Server) {
    server.set_onerror(|_, operation, e| {
        eprintln!("onstream: {operation}: {e}");
        Ok(())
    });
}

/// `--inetd`: one server with no listener, the connection on descriptor 0, until it ends.
fn inetd(
    args: Args,
    root: Root,
    tls_config: Option<Arc<onstream::tls::ServerConfig>>,
) -> Result<(), Failure> {
    let site = site_for(&args, root);
    let handler = {
        let site = site.clone();
        move |_server, stream| site::handle(site.clone(), stream)
    };
    let server = Server::without_listener(options(&args, tls_config), handler).map_err(fail)?;
    report_errors(&server);
    log_requests(&server, &site);
    // SAFETY: inetd hands us the connection as descriptor 0; it is ours from here on.
    #[allow(unsafe_code)]
    let conn = unsafe { OwnedFd::from_raw_fd(0) };
    server.add_socket(conn).map_err(|e| {
        fail(format_args!(
            "--inetd serves the connection on standard input, which must be a socket \
             (as inetd or systemd's Accept=yes pass it): {e}"
        ))
    })?;
    while server.connections() > 0 {
        server.step(None).map_err(fail)?;
    }
    Ok(())
}

fn options(args: &Args, tls_config: Option<Arc<onstream::tls::ServerConfig>>) -> Options {
    let mut o = Options::new();
    o = match &args.unix {
        Some(path) => {
            let o = o.path(path);
            match args.mode {
                Some(mode) => o.mode(mode),
                None => o,
            }
        }
        None => o.host(args.bind.as_str()).port(args.port),
    };
    o = o.tls(match args.tls {
        TlsMode::On => Tls::On,
        TlsMode::Off => Tls::Off,
        TlsMode::Auto => Tls::Auto,
    });
    if let Some(config) = tls_config {
        o = o.tls_config(config);
    }
    o = o.version(if args.http1_only {
        Version::Http1
    } else if args.http2_only {
        Version::Http2
    } else {
        Version::Any
    });
    if let Some(n) = args.max_connections {
        o = o.max_concurrent(n);
    }
    if let Some(t) = args.connection_setup_timeout {
        o = o.connection_setup_timeout(t);
    }
    if let Some(t) = args.intra_stream_timeout {
        o = o.intra_stream_timeout(t);
    }
    if let Some(t) = args.header_read_timeout {
        o = o.header_read_timeout(t);
    }
    if let Some(t) = args.body_read_timeout {
        o = o.body_read_timeout(t);
    }
    if let Some(t) = args.send_timeout {
        o = o.send_timeout(t);
    }
    o.close_timeout(args.shutdown_timeout)
}

fn listen_address(args: &Args) -> String {
    match &args.unix {
        Some(path) => path.display().to_string(),
        None if args.bind.contains(':') => format!("[{}]:{}", args.bind, args.port),
        None => format!("{}:{}", args.bind, args.port),
    }
}

/// The listening socket systemd passed (`LISTEN_FDS`/`LISTEN_PID`, first descriptor 3),
/// if it was meant for this process.
fn systemd_listener() -> Option<OwnedFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds == 0 {
        return None;
    }
    // Children must not take the socket for theirs (sd_listen_fds(unset_environment)).
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if fds > 1 {
        eprintln!("onstream: systemd passed {fds} sockets; serving the first only");
    }
    // SAFETY: systemd passes listening sockets from descriptor 3 on, for us alone.
    #[allow(unsafe_code)]
    Some(unsafe { OwnedFd::from_raw_fd(3) })
}

/// What a person needs to start using the server: the URLs (every interface's when it
/// listens on all), the certificate's fingerprint to check the browser's warning
/// against; `--qr` and `--open` on the first LAN URL (else the first).
fn banner(workers: &Workers, root: &std::path::Path, args: &Args) {
    let mut lines = vec![format!(
        "onstream: serving {} ({} worker{})",
        root.display(),
        workers.len(),
        if workers.len() == 1 { "" } else { "s" }
    )];
    let mut urls = Vec::new();
    let mut shared = None;
    match workers.local_addr() {
        LocalAddr::Inet(inet) => {
            let hosts = share::hosts(*inet);
            let schemes: &[&str] = match args.tls {
                TlsMode::On => &["https"],
                TlsMode::Off => &["http"],
                TlsMode::Auto => &["http", "https"],
            };
            for host in &hosts {
                for scheme in schemes {
                    urls.push(format!("{scheme}://{host}:{}/", inet.port()));
                }
            }
            let first_scheme = schemes[0];
            shared = Some(format!(
                "{first_scheme}://{}:{}/",
                share::lan_host(&hosts).unwrap_or(&hosts[0]),
                inet.port()
            ));
            lines.extend(urls.iter().map(|u| format!("  {u}")));
        }
        other => lines.push(format!("  unix socket {other}")),
    }
    if let Some(fp) = workers.certificate_fingerprint() {
        lines.push(format!("  self-signed certificate, SHA-256 {fp}"));
    }
    if args.qr {
        match shared.as_deref().and_then(share::qr) {
            Some(code) => {
                lines.push(format!("  {}", shared.as_deref().unwrap_or_default()));
                lines.extend(code.lines().map(|l| format!("  {l}")));
            }
            None => lines.push("  (--qr: a unix socket has no URL to show)".to_owned()),
        }
    }
    println!("{}", lines.join("\n"));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if args.open {
        if let Some(url) = &shared {
            share::open(url);
        }
    }
}

/// SIGINT and SIGTERM: the first asks every worker to drain and stop (from the signal
/// thread, through the workers' `Closer`) and says so on stderr; a second one exits at
/// once.
/// Catches SIGINT and SIGTERM from now on: one that comes before [`watch_signals`] runs
/// waits for it instead of killing the process (the workers serve as soon as they are
/// started, so a client may answer and signal before the watcher exists).
fn catch_signals() -> Result<signal_hook::iterator::Signals, Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| fail(format_args!("cannot handle signals: {e}")))
}

fn watch_signals(
    mut signals: signal_hook::iterator::Signals,
    closer: Closer,
    drain_limit: Duration,
) -> Result<(), Failure> {
    std::thread::Builder::new()
        .name("onstream-signals".into())
        .spawn(move || {
            let mut seen = false;
            for signal in signals.forever() {
                if std::mem::replace(&mut seen, true) {
                    std::process::exit(128 + signal);
                }
                let n = closer.connections();
                closer.close();
                if n > 0 {
                    eprintln!(
                        "onstream: draining {n} connection{}, up to {:?} (signal again to stop at once)",
                        if n == 1 { "" } else { "s" },
                        drain_limit,
                    );
                } else {
                    eprintln!("onstream: stopping");
                }
            }
        })
        .map_err(|e| fail(format_args!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// The access log: requests the server refused before the handler (400, 408, 414,
/// 431, …) are logged from the library's hook, the rest by the handler; lines are
/// written out when the loop goes quiet, and at least every second under load.
fn log_requests(server: &Server, site: &Rc<Site>) {
    let Some(log) = &site.log else {
        return;
    };
    let hook_log = log.clone();
    server.set_onrejected(move |_, rejected| {
        hook_log.log(&Record {
            peer: rejected.peer,
            user: None,
            request: Request::Refused(rejected.request_line),
            status: rejected.status,
            bytes: 0,
            referer: None,
            user_agent: None,
            duration: Duration::ZERO,
        });
    });
    let ctl = server.controller();
    ctl.spawn(access_log::flush_when_quiet(Rc::downgrade(log)))
        .detach();
    // The tests lengthen the cap to show that a quiet loop flushes without it.
    let cap = std::env::var("ONSTREAM_TEST_LOG_FLUSH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs);
    let log = Rc::downgrade(log);
    ctl.spawn(async move {
        while let Some(log) = log.upgrade() {
            log.flush();
            drop(log);
            onstream::sleep(cap).await;
        }
    })
    .detach();
}

/// Raises the soft limit on open files to the hard one: a server wants as many
/// connections as it is allowed.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    #[allow(unsafe_code)]
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
