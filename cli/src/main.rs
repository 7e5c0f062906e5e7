//! `onstream`: serve a directory over HTTP/1.1, HTTP/2 and TLS — the `python -m
//! http.server` of the HTTP/2 era, built on the onstream library's public API.
//!
//! - `args`: the command line.
//! - `launch`: listening (TCP, unix, systemd socket activation, inetd), signals and
//!   the step loop.
//! - `site`: the request handler; `path` and `beneath` keep it inside the root;
//!   `conditional`, `range`, `compress`, `entries`, `listing`, `readme`, `upload` and
//!   `form` are its parts.
//! - `allow` and `auth`: who may ask (`--allow-from`, `--auth`).
//! - `app` (`--index`, `--spa`, CORS preflights) and `response_headers` (`--header`,
//!   `--cors`, `--no-cache`, `--cache-control`).
//! - `archive` (`?download=zip|tar|tar.gz` on a folder): `walk` beneath the root,
//!   `tar_format` and `zip_format` written as a stream.
//! - `access_log`: one line per request.
//! - `share`: the URLs the banner prints, `--qr`, `--open`.
//! - `unix_socket`: `--unix`'s socket file (stale ones replaced, removed at exit).

mod access_log;
mod allow;
mod app;
mod archive;
mod args;
mod auth;
mod beneath;
mod calendar;
mod compress;
mod conditional;
mod entries;
mod form;
mod launch;
mod listing;
mod path;
mod range;
mod readme;
mod response_headers;
mod share;
mod site;
mod tar_format;
mod unix_socket;
mod upload;
mod walk;
mod yield_now;
mod zip_format;

fn main() {
    let args = <args::Args as clap::Parser>::parse();
    if let Err(e) = launch::run(args) {
        eprintln!("onstream: {e}");
        std::process::exit(1);
    }
}
