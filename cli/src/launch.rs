//! Starting and stopping: the library's `Options` from the command line, the listening
//! socket (bound here, inherited from systemd, or none at all with `--inetd`), the
//! start-up banner, SIGINT/SIGTERM as a graceful drain, and the step loop.
//!
//! Start-up errors are returned as one line each (the caller prints it and exits 1):
//! a missing directory, a busy port, unreadable certificate files.

use std::{
    fmt,
    os::fd::{FromRawFd, OwnedFd},
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use onstream::{Options, Server, Tls, Version};

use crate::{
    access_log::AccessLog,
    args::{Args, LogFormat, TlsMode},
    beneath::Root,
    site::{self, Site},
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
    let root = Root::new(&args.dir)
        .map_err(|e| fail(format_args!("cannot serve {}: {e}", args.dir.display())))?;
    if !args.quiet && args.log_format == LogFormat::Json {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stdout)
            .with_target(false)
            .init();
    }
    raise_fd_limit();
    let site = Rc::new(Site {
        root,
        listing: !args.no_listing,
        upload: args.upload.then_some(args.max_upload_size),
        ws_echo: args.ws_echo.clone(),
        log: (!args.quiet).then(|| AccessLog::new(args.log_format)),
    });
    let options = options(&args)?;
    let handler = {
        let site = site.clone();
        move |_server, stream| site::handle(site.clone(), stream)
    };

    let server = if args.inetd {
        Server::without_listener(options, handler).map_err(fail)?
    } else if let Some(fd) = systemd_listener() {
        Server::new(fd, options, handler).map_err(fail)?
    } else {
        Server::listen(options, handler).map_err(fail)?
    };
    server.set_onerror(|_, operation, e| {
        eprintln!("onstream: {operation}: {e}");
        Ok(())
    });

    if args.inetd {
        // SAFETY: inetd hands us the connection as descriptor 0; it is ours from here on.
        #[allow(unsafe_code)]
        let conn = unsafe { OwnedFd::from_raw_fd(0) };
        server.add_socket(conn).map_err(fail)?;
        while server.connections() > 0 {
            server.step(None).map_err(fail)?;
        }
        return Ok(());
    }

    server
        .listen_now()
        .map_err(|e| match listen_address(&args) {
            Some(addr) => fail(format_args!("cannot listen on {addr}: {e}")),
            None => fail(format_args!("cannot listen: {e}")),
        })?;
    // Signals are caught before the banner says the server is up: a signal sent as
    // soon as it is seen must drain, not kill.
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone(), server.remote())?;
    banner(&server, &site, &args);
    if site.log.is_some() {
        flush_every_second(&server, &site);
    }
    let mut closing = false;
    loop {
        if stop.load(Ordering::Relaxed) && !closing {
            closing = true;
            server.close();
        }
        if closing && server.empty() {
            break;
        }
        server.step(None).map_err(fail)?;
    }
    if let Some(log) = &site.log {
        log.flush();
    }
    Ok(())
}

fn options(args: &Args) -> Result<Options, Failure> {
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
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        o = o.tls_config(onstream::tls::config_from_pem_files(cert, key).map_err(fail)?);
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
    Ok(o.close_timeout(args.shutdown_timeout))
}

fn listen_address(args: &Args) -> Option<String> {
    match &args.unix {
        Some(path) => Some(path.display().to_string()),
        None if std::env::var_os("LISTEN_FDS").is_some() => None,
        None if args.bind.contains(':') => Some(format!("[{}]:{}", args.bind, args.port)),
        None => Some(format!("{}:{}", args.bind, args.port)),
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

/// What a person needs to start using the server: the URLs, the certificate's
/// fingerprint to check the browser's warning against.
fn banner(server: &Server, site: &Site, args: &Args) {
    let addr = server
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut lines = vec![format!("onstream: serving {}", site.root.path().display())];
    match server.local_addr().ok().and_then(|a| a.inet()) {
        Some(inet) => {
            let shown = if inet.ip().is_unspecified() {
                format!("localhost:{}", inet.port())
            } else {
                inet.to_string()
            };
            if args.tls != TlsMode::On {
                lines.push(format!("  http://{shown}/"));
            }
            if args.tls != TlsMode::Off {
                lines.push(format!("  https://{shown}/"));
            }
        }
        None => lines.push(format!("  unix socket {addr}")),
    }
    if let Some(fp) = server.certificate_fingerprint() {
        lines.push(format!("  self-signed certificate, SHA-256 {fp}"));
    }
    println!("{}", lines.join("\n"));
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// SIGINT and SIGTERM: the first asks the loop to drain and stop (the flag, then a
/// wake-up of the loop from the signal thread); a second one exits at once.
fn watch_signals(stop: Arc<AtomicBool>, remote: onstream::Remote) -> Result<(), Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| fail(format_args!("cannot handle signals: {e}")))?;
    std::thread::Builder::new()
        .name("onstream-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if stop.swap(true, Ordering::Relaxed) {
                    std::process::exit(128 + signal);
                }
                remote.wake();
            }
        })
        .map_err(|e| fail(format_args!("cannot start the signal thread: {e}")))?;
    Ok(())
}

fn flush_every_second(server: &Server, site: &Rc<Site>) {
    let site = Rc::downgrade(site);
    server
        .controller()
        .spawn(async move {
            while let Some(site) = site.upgrade() {
                if let Some(log) = &site.log {
                    log.flush();
                }
                drop(site);
                onstream::sleep(Duration::from_secs(1)).await;
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
