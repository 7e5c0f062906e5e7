//! The command line (clap): every option of the `onstream` command, with its default.

use clap::{Parser, ValueEnum};
use std::{path::PathBuf, time::Duration};

/// Serve a directory over HTTP/1.1, HTTP/2 and TLS.
///
/// By default both http:// and https:// work on one port (TLS is detected per
/// connection) with a self-signed certificate made at start; its SHA-256 fingerprint is
/// printed with the URLs.
#[derive(Debug, Parser)]
#[command(name = "onstream", version)]
pub struct Args {
    /// The directory to serve.
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,

    /// The TCP port (0: any free port).
    #[arg(long, short, default_value_t = 8000)]
    pub port: u16,

    /// Listen on a unix socket at PATH instead of TCP.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["bind", "port"])]
    pub unix: Option<PathBuf>,

    /// The unix socket's permissions, in octal (e.g. 660).
    #[arg(long, value_parser = parse_mode, requires = "unix")]
    pub mode: Option<u32>,

    /// TLS: on, off, or auto (decided per connection by its first byte).
    #[arg(long, value_enum, default_value_t = TlsMode::Auto)]
    pub tls: TlsMode,

    /// The certificate chain (PEM) instead of a self-signed certificate.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Speak HTTP/1.x only.
    #[arg(long, conflicts_with = "http2_only")]
    pub http1_only: bool,

    /// Speak HTTP/2 only (TLS with ALPN h2, or cleartext prior knowledge).
    #[arg(long)]
    pub http2_only: bool,

    /// Loops (threads) serving the port; default: one per available core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// At most this many connections at once (per worker); more wait in the kernel's
    /// backlog.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Seconds a new connection may take to send its first request (and finish TLS).
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub connection_setup_timeout: Option<Duration>,

    /// Seconds an idle keep-alive connection is kept between requests.
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub intra_stream_timeout: Option<Duration>,

    /// Seconds a client may take to send a request's headers once it started.
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub header_read_timeout: Option<Duration>,

    /// Seconds an upload may go without a byte arriving before it is answered 408 [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub body_read_timeout: Option<Duration>,

    /// Seconds a response may wait for a client that reads nothing before it is cut [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub send_timeout: Option<Duration>,

    /// Seconds in-flight requests get to finish after SIGINT or SIGTERM (0: cut them at
    /// once).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "10")]
    pub shutdown_timeout: Duration,

    /// Answer 403 for directories without index.html instead of listing them.
    #[arg(long)]
    pub no_listing: bool,

    /// List and serve dot files (.git/, .env, …); without it they are left out of
    /// listings and answered 404.
    #[arg(long)]
    pub hidden: bool,

    /// Follow symlinks that lead out of the served directory (listings then show what
    /// they point at); without it such links are answered 403 and left out of listings.
    /// Uploads are always written beneath the directory.
    #[arg(long)]
    pub follow_symlinks: bool,

    /// Render a directory's README.md (Markdown; raw HTML in it is shown as text; at most
    /// 1 MiB) below its listing.
    #[arg(long)]
    pub readme: bool,

    /// Accept uploads: PUT, and POST of multipart/form-data to a directory (the
    /// listing's upload form, `curl -F file=@x URL/dir/`) or of a `mkdir` field (new
    /// folder). Bodies are written to temporary files, renamed into place when whole.
    #[arg(long)]
    pub upload: bool,

    /// The largest upload (a PUT body, or a whole POST): bytes, or with a suffix (K, M,
    /// G, T and KiB, MiB, …: powers of 1024; KB, MB, GB, TB: powers of 1000), decimals
    /// allowed (1.5G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1G")]
    pub max_upload_size: u64,

    /// Serve a WebSocket echo at this URL path (e.g. /echo).
    #[arg(long, value_name = "PATH")]
    pub ws_echo: Option<String>,

    /// No access log.
    #[arg(long, short)]
    pub quiet: bool,

    /// The access log's format.
    #[arg(long, value_enum, default_value_t = LogFormat::Common)]
    pub log_format: LogFormat,

    /// Print the first LAN URL (else the first URL) as a QR code, to open it on a phone.
    #[arg(long)]
    pub qr: bool,

    /// Open a browser on the first LAN URL (else the first URL) once listening
    /// ($BROWSER, else the desktop's default).
    #[arg(long)]
    pub open: bool,

    /// Serve the one connection on standard input (inetd's `nowait` mode), then exit.
    #[arg(long, conflicts_with_all = ["unix"])]
    pub inetd: bool,
}

/// `--tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// TLS on every connection.
    On,
    /// Cleartext only.
    Off,
    /// TLS or cleartext, by the connection's first byte.
    Auto,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// NCSA common log format.
    Common,
    /// Common plus referer and user agent (nginx's and Apache's `combined`).
    Combined,
    /// One JSON object per line (tracing's JSON formatter).
    Json,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 660"))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

/// A timeout: a positive number of seconds. Zero is refused rather than taken as "no
/// timeout": every limit has to hold, and at 0 most connections would be dropped at once.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_seconds(s)? {
        Duration::ZERO => Err(format!(
            "{s:?}: a timeout must be more than 0 seconds (there is no \"no timeout\")"
        )),
        d => Ok(d),
    }
}

/// A size: `100`, `512K`, `100MB` (10^6), `100MiB` or `100M` (2^20), `1.5G`.
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size such as 512K, 100MB, 100MiB or 1.5G");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let power: u32 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 1,
        "m" | "mib" | "mb" => 2,
        "g" | "gib" | "gb" => 3,
        "t" | "tib" | "tb" => 4,
        _ => return Err(bad()),
    };
    let base: u64 = if unit.len() == 2 && power > 0 {
        1000
    } else {
        1024
    };
    let scale = base.pow(power);
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(scale).ok_or_else(bad);
    }
    // Decimals: exact enough for sizes (f64 holds integers to 2^53 exactly).
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (n * scale as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_modes_and_seconds_parse() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("100 mib"), Ok(100 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2kb"), Ok(2000));
        for bad in ["x", "", "1.2.3M", "-1", "1Q", "99999999999T", ".", "1e3"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0.0").is_err());
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert!(parse_mode("9").is_err());
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_seconds("-1").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
