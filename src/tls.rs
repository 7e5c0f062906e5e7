//! TLS: lua-http's `tls` option (`Tls::On` / `Off` / `Auto`) and `ctx` (a
//! `rustls::ServerConfig`), certificates from PEM files or made up on the spot, and the
//! server side of a handshake.
//!
//! Choices: rustls on aws-lc-rs, rustls's own default provider (the `aws-lc-rs`
//! feature, on by default), or on ring (`default-features = false, features = ["ring"]`):
//! aws-lc-rs halves the cost of an X25519 key exchange, see `provider`. ALPN chosen by
//! the *server's* preference (rustls walks the server's list, so the h2-first order wins
//! where lua-http took the client's first choice, DESIGN.md §4 item 7), set from the
//! `version` option; a self-signed certificate from `rcgen` when none is given, as
//! lua-http does, with its SHA-256 fingerprint logged so a user can check what a client
//! was shown. Sniffing which connections speak TLS is in `sniff.rs`.

/// The rustls server configuration these functions make and `Options::tls_config` takes.
pub use rustls::ServerConfig;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::{
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    error::{Error, Result},
    options::Version,
};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether connections use TLS (lua-http's `tls` option: `true`, `false`, `nil`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tls {
    /// Cleartext only (lua-http `tls = false`; default port 80).
    Off,
    /// TLS only (lua-http `tls = true`; default port 443).
    On,
    /// Both on one port: each connection's first byte decides (lua-http `tls = nil`, the
    /// default). A port must be given: there is no default port for a mixed listener.
    #[default]
    Auto,
}

/// The ALPN protocols for a `version` option, most preferred first: rustls picks the
/// first of these that the client offers.
fn alpn(version: Version) -> Vec<Vec<u8>> {
    let protocols: &[&[u8]] = match version {
        Version::Http1 => &[b"http/1.1"],
        Version::Http10 => &[b"http/1.0"],
        Version::Http2 => &[b"h2"],
        Version::Any => &[b"h2", b"http/1.1"],
    };
    protocols.iter().map(|p| p.to_vec()).collect()
}

/// A TLS server configuration from a PEM certificate chain and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1), with onstream's ALPN protocols.
///
/// ```no_run
/// let config = onstream::tls::config_from_pem_files("cert.pem", "key.pem")?;
/// let opts = onstream::Options::new().tls(onstream::Tls::On).tls_config(config);
/// # Ok::<(), onstream::Error>(())
/// ```
pub fn config_from_pem_files(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>> {
    let (cert, key) = (cert.as_ref(), key.as_ref());
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::config(format!("read certificates from {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::config(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::config(format!("read private key from {}: {e}", key.display())))?;
    config_from_der(chain, key)
}

/// A TLS server configuration from DER certificates and key, with onstream's ALPN.
pub fn config_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| Error::config(format!("TLS configuration: {e}")))?;
    config.alpn_protocols = alpn(Version::Any);
    Ok(Arc::new(config))
}

// Without a provider rustls would only fail at run time, at the first configuration.
#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!(
    "onstream needs a TLS crypto provider: the `aws-lc-rs` feature (the default) or `ring`"
);

/// The crypto provider of the configurations made here. Most of a TLS 1.3 handshake's
/// server CPU is its key exchange (X25519, also in a resumed one) and, when not resumed,
/// its ECDSA signature: measured by bench/tls-handshakes, aws-lc-rs does X25519 in about
/// half ring's time and draws random numbers without a getrandom(2) call each (ring makes
/// eight per handshake), so a handshake costs ~10-15 % less server CPU on it. With both
/// features on, aws-lc-rs, as rcgen also prefers it then.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// A new self-signed certificate for `host` (its CN and subject alternative name; an IP
/// address becomes an IP SAN), valid from a day ago for a year, its configuration, and
/// its SHA-256 fingerprint.
pub fn self_signed(host: &str) -> Result<(Arc<ServerConfig>, String)> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])
        .map_err(|e| Error::config(format!("self-signed certificate for {host}: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host.to_owned());
    // Made anew at each start, so it need not outlive the process by much (rcgen's
    // default runs from 1975 to 4096): from a day back, for a client whose clock is a
    // little behind, to a year ahead.
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - DAY;
    params.not_after = now + 365 * DAY;
    let key =
        rcgen::KeyPair::generate().map_err(|e| Error::config(format!("generate a key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::config(format!("self-signed certificate for {host}: {e}")))?;
    let der = cert.der().clone();
    let fingerprint = fingerprint(&der);
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| Error::config(format!("self-signed key: {e}")))?;
    Ok((config_from_der(vec![der], key)?, fingerprint))
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…` (what browsers show).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    // The provider's crate: the same `digest` API in both, and no second crypto library.
    #[cfg(feature = "aws-lc-rs")]
    use aws_lc_rs::digest;
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    use ring::digest;
    let digest = digest::digest(&digest::SHA256, cert.as_ref());
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// The configuration a server uses: the caller's or a fresh self-signed one for `host`,
/// offering the ALPN protocols of `version`. Returns the fingerprint when it made the
/// certificate.
pub(crate) fn server_config(
    given: Option<&Arc<ServerConfig>>,
    host: &str,
    version: Version,
) -> Result<(Arc<ServerConfig>, Option<String>)> {
    let (config, fingerprint) = match given {
        Some(config) => (config.clone(), None),
        None => {
            let (config, fp) = self_signed(host)?;
            tracing::info!("TLS: self-signed certificate for {host}, SHA-256 fingerprint {fp}");
            (config, Some(fp))
        }
    };
    let wanted = alpn(version);
    if config.alpn_protocols == wanted {
        return Ok((config, fingerprint));
    }
    let mut config = (*config).clone();
    config.alpn_protocols = wanted;
    Ok((Arc::new(config), fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_prefers_h2_and_has_a_fingerprint() {
        let (config, fp) = self_signed("127.0.0.1").unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(fp.len(), 95);
        assert!(fp.split(':').all(|b| b.len() == 2));
    }

    #[test]
    fn the_version_option_decides_alpn() {
        let (config, _) = self_signed("localhost").unwrap();
        let (used, fp) = server_config(Some(&config), "localhost", Version::Http1).unwrap();
        assert_eq!(used.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(fp.is_none());
        let (used, _) = server_config(Some(&config), "localhost", Version::Http2).unwrap();
        assert_eq!(used.alpn_protocols, [b"h2".to_vec()]);
    }
}
