//! Serving web applications: index file names (`--index`), the single-page-application
//! fallback (`--spa`) and CORS preflights (`--cors`).
//!
//! `--spa` follows the usual single-page-application rule (as `serve -s` and caddy's
//! `try_files {path} /index.html`), narrowed: a GET or HEAD of a path that does not exist
//! is answered with the root's index page, 200, unless the path's last segment has an
//! extension (`/app/settings` gets the page; `/missing.js`, `/logo.png` stay 404). A
//! script or image that is missing then fails as such instead of receiving HTML, which
//! browsers report as a confusing MIME-type error.

use std::path::Path;

/// Whether `--spa` answers a missing `relative` path with the index page.
pub fn spa_fallback_applies(method: &str, relative: &Path) -> bool {
    if method != "GET" && method != "HEAD" {
        return false;
    }
    match relative.file_name() {
        None => true,
        Some(name) => !name.as_encoded_bytes()[1..].contains(&b'.'),
    }
}

/// Parses one `--index` name: a plain file name (no `/`, not `.` or `..`).
pub fn parse_index(value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        return Err(format!("{value:?} is not a file name"));
    }
    Ok(value.to_owned())
}

/// The fields of a 204 answer to a CORS preflight (`OPTIONS` with
/// `Access-Control-Request-Method`), or to any `OPTIONS` when `--cors` is on.
///
/// The requested headers are echoed back when they are a plain list of field names:
/// a static server has no reason to refuse any, and `*` does not cover `Authorization`.
pub fn preflight(upload: bool, request_headers: Option<&str>) -> Vec<(&'static str, String)> {
    let methods = if upload {
        "GET, HEAD, PUT, OPTIONS"
    } else {
        "GET, HEAD, OPTIONS"
    };
    let mut fields = vec![
        ("allow", methods.to_owned()),
        ("access-control-allow-methods", methods.to_owned()),
        ("access-control-max-age", "86400".to_owned()),
    ];
    if let Some(requested) = request_headers.filter(|v| is_name_list(v)) {
        fields.push(("access-control-allow-headers", requested.trim().to_owned()));
    }
    fields
}

fn is_name_list(value: &str) -> bool {
    value.len() <= 1024
        && value.split(',').all(|name| {
            let name = name.trim();
            !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spa_fallback_only_for_extensionless_gets() {
        assert!(spa_fallback_applies("GET", Path::new("app/settings")));
        assert!(spa_fallback_applies("HEAD", Path::new("")));
        assert!(spa_fallback_applies("GET", Path::new("a.b/c")));
        assert!(spa_fallback_applies("GET", Path::new(".well-known")));
        assert!(!spa_fallback_applies("GET", Path::new("missing.js")));
        assert!(!spa_fallback_applies("PUT", Path::new("app")));
    }

    #[test]
    fn index_names_are_plain_names() {
        assert!(parse_index("index.htm").is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(parse_index(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflight_echoes_plain_header_lists_only() {
        let f = preflight(false, Some("content-type, x-token"));
        assert!(f.contains(&(
            "access-control-allow-headers",
            "content-type, x-token".into()
        )));
        let f = preflight(true, Some("bad header\r\n"));
        assert!(f.iter().all(|(n, _)| *n != "access-control-allow-headers"));
        assert!(f.contains(&(
            "access-control-allow-methods",
            "GET, HEAD, PUT, OPTIONS".into()
        )));
    }
}
