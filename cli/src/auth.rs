//! `--auth`: HTTP Basic authentication (RFC 7617) against the users given on the command
//! line, compared in constant time.
//!
//! Every password is kept only as its SHA-256 digest, whether it was given in clear
//! (`user:password`) or already hashed (`user:sha256:HEX`). A request's password is hashed
//! the same way, so the comparison is always between 32-byte values: its time depends
//! neither on where the first differing byte is nor on the password's length. The user
//! names are compared as SHA-256 digests too, and every configured user is compared on
//! every request (no early exit), so the time does not tell which names exist.
//!
//! This module does not send the 401: the site does, before it touches the file system.

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// The realm and charset sent in `WWW-Authenticate` (RFC 7617 §2.1: UTF-8 is the only
/// charset allowed there, and it tells browsers to encode non-ASCII credentials as UTF-8).
pub const CHALLENGE: &str = "Basic realm=\"onstream\", charset=\"UTF-8\"";

/// One `--auth` user.
#[derive(Clone)]
pub struct Credential {
    /// Kept for messages only; matching uses `user_digest`.
    user: String,
    user_digest: [u8; 32],
    password_digest: [u8; 32],
}

impl std::fmt::Debug for Credential {
    // The digest of a weak password is as good as the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The users allowed in; empty means no authentication.
#[derive(Debug, Clone, Default)]
pub struct Users(Vec<Credential>);

impl Users {
    pub fn new(credentials: Vec<Credential>) -> Users {
        Users(credentials)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an `Authorization` field value (or its absence) names one of the users
    /// with the right password.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let user_digest = sha256(&user);
        let password_digest = sha256(&password);
        let mut admitted = subtle::Choice::from(0);
        for credential in &self.0 {
            admitted |= credential.user_digest.ct_eq(&user_digest)
                & credential.password_digest.ct_eq(&password_digest);
        }
        admitted.into()
    }

    /// The name of the user an `Authorization` value admits, for the access log's user
    /// field (after [`Users::admits`] said yes: this lookup need not be constant-time).
    pub fn admitted_user(&self, authorization: Option<&[u8]>) -> Option<&str> {
        if !self.admits(authorization) {
            return None;
        }
        let (user, _) = authorization.and_then(basic_credentials)?;
        let digest = sha256(&user);
        self.0
            .iter()
            .find(|c| c.user_digest == digest)
            .map(|c| c.user.as_str())
    }
}

/// Parses one `--auth` value: `user:password`, or `user:sha256:HEX` with the password's
/// SHA-256 as 64 hex digits. The value is split at its first colon, so a password may hold
/// colons; a user name cannot (RFC 7617 §2). A password that is itself `sha256:` followed
/// by 64 hex digits is read as a digest.
pub fn parse_credential(value: &str) -> Result<Credential, String> {
    let (user, secret) = value
        .split_once(':')
        .ok_or_else(|| "expected USER:PASSWORD or USER:sha256:HEX".to_owned())?;
    if user.is_empty() {
        return Err("the user name is empty".to_owned());
    }
    if user.chars().any(char::is_control) {
        return Err("the user name holds a control character".to_owned());
    }
    let password_digest = match secret.strip_prefix("sha256:").map(parse_hex) {
        Some(Some(digest)) => digest,
        _ if secret.starts_with("sha256:") && secret.len() != 7 + 64 => {
            return Err("sha256: must be followed by 64 hex digits".to_owned())
        }
        _ => sha256(secret.as_bytes()),
    };
    Ok(Credential {
        user: user.to_owned(),
        user_digest: sha256(user.as_bytes()),
        password_digest,
    })
}

/// The user and password of a `Basic` `Authorization` value (the scheme name is
/// case-insensitive, RFC 9110 §11.1), split at the first colon.
fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use aws_lc_rs::digest;
    let digest = digest::digest(&digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
        .into_bytes()
    }

    fn users(values: &[&str]) -> Users {
        Users::new(
            values
                .iter()
                .map(|v| parse_credential(v).unwrap())
                .collect(),
        )
    }

    #[test]
    fn a_clear_password_admits_only_its_user() {
        let u = users(&["alice:secret", "bob:hunter2"]);
        assert!(u.admits(Some(&basic("alice:secret"))));
        assert!(u.admits(Some(&basic("bob:hunter2"))));
        assert!(!u.admits(Some(&basic("alice:hunter2"))));
        assert!(!u.admits(Some(&basic("carol:secret"))));
        assert!(!u.admits(Some(&basic("alice:secre"))));
        assert!(!u.admits(None));
    }

    #[test]
    fn the_value_is_split_at_the_first_colon() {
        let u = users(&["alice:pa:ss:word"]);
        assert!(u.admits(Some(&basic("alice:pa:ss:word"))));
        assert!(!u.admits(Some(&basic("alice:pa"))));
    }

    #[test]
    fn a_sha256_digest_stands_for_the_password() {
        // printf %s secret | sha256sum
        let u = users(&[
            "alice:sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
        ]);
        assert!(u.admits(Some(&basic("alice:secret"))));
        assert!(!u.admits(Some(&basic(
            "alice:sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        ))));
        assert!(parse_credential("alice:sha256:abc").is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse_credential("nocolon").is_err());
        assert!(parse_credential(":password").is_err());
        assert!(
            parse_credential("alice:").is_ok(),
            "an empty password is a choice"
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_garbage_is_refused() {
        let u = users(&["alice:secret"]);
        let mut lower = basic("alice:secret");
        lower[..5].copy_from_slice(b"basic");
        assert!(u.admits(Some(&lower)));
        assert!(!u.admits(Some(b"Bearer abc")));
        assert!(!u.admits(Some(b"Basic !!!")));
        assert!(!u.admits(Some(b"Basic")));
        assert!(!u.admits(Some(&basic("alicesecret"))));
    }
}
