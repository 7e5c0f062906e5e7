//! `onstream`: serve a directory over HTTP/1.1, HTTP/2 and TLS — the `python -m
//! http.server` of the HTTP/2 era, built on the onstream library's public API.
//!
//! - `args`: the command line.
//! - `launch`: listening (TCP, unix, systemd socket activation, inetd), signals and
//!   the step loop.
//! - `site`: the request handler; `path` and `beneath` keep it inside the root;
//!   `conditional`, `range`, `entries`, `listing`, `readme`, `upload` and `form` are
//!   its parts.
//! - `access_log`: one line per request.
//! - `share`: the URLs the banner prints, `--qr`, `--open`.
//! - `unix_socket`: `--unix`'s socket file (stale ones replaced, removed at exit).

mod access_log;
mod args;
mod beneath;
mod conditional;
mod entries;
mod form;
mod launch;
mod listing;
mod path;
mod range;
mod readme;
mod share;
mod site;
mod unix_socket;
mod upload;

fn main() {
    let args = <args::Args as clap::Parser>::parse();
    if let Err(e) = launch::run(args) {
        eprintln!("onstream: {e}");
        std::process::exit(1);
    }
}
