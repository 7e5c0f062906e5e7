//! From a request's `:path` to a path relative to the served root, before the filesystem
//! is touched: the query is cut off, percent-escapes are decoded *once*, and the segments
//! are normalised. Anything that could reach outside the root by its spelling — `..`
//! above the root (plain or `%2e%2e`), backslashes, NUL bytes — is refused here;
//! symlinks that lead out are the opener's business ([`crate::beneath`]).

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::PathBuf};

/// A request path that is safe to look up under the root.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Relative to the root; empty for the root itself.
    pub relative: PathBuf,
    /// The decoded, normalised URL path (`/a b/c`), for listings and redirects.
    pub decoded: String,
    /// Whether the URL ended in `/` (a directory is asked for as such).
    pub trailing_slash: bool,
}

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not an origin-form path (`*`, absolute-form, empty).
    NotAPath,
    /// A segment that tries to leave the root or could be read differently by the
    /// filesystem (`..` above the root, `\`, NUL).
    Unsafe,
}

/// Resolves a request's `:path`.
pub fn resolve(raw: &str) -> Result<Target, Refused> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(Refused::NotAPath);
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    if bytes.contains(&0) || bytes.contains(&b'\\') {
        return Err(Refused::Unsafe);
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in bytes.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(Refused::Unsafe);
                }
            }
            s => segments.push(s),
        }
    }
    let trailing_slash = bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes.ends_with(b"/..");
    let relative: PathBuf = segments.iter().map(|s| OsStr::from_bytes(s)).collect();
    let mut decoded = String::from("/");
    decoded.push_str(&String::from_utf8_lossy(&segments.join(&b'/')));
    Ok(Target {
        relative,
        decoded,
        trailing_slash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(raw: &str) -> Result<String, Refused> {
        resolve(raw).map(|t| t.relative.to_string_lossy().into_owned())
    }

    #[test]
    fn plain_paths_map_to_relative_ones() {
        assert_eq!(rel("/").unwrap(), "");
        assert_eq!(rel("/a/b.txt").unwrap(), "a/b.txt");
        assert_eq!(rel("//a///b/").unwrap(), "a/b");
        assert_eq!(rel("/a/./b").unwrap(), "a/b");
        assert_eq!(rel("/a/b?x=../../etc").unwrap(), "a/b");
    }

    #[test]
    fn escapes_are_decoded_once() {
        assert_eq!(rel("/a%20b/%C3%BC").unwrap(), "a b/ü");
        assert_eq!(rel("/100%25").unwrap(), "100%");
        // %252e%252e decodes to the literal name "%2e%2e", not to "..".
        assert_eq!(rel("/%252e%252e/x").unwrap(), "%2e%2e/x");
        assert_eq!(rel("/a%3Fb").unwrap(), "a?b");
    }

    #[test]
    fn dot_dot_inside_the_root_is_normalised() {
        assert_eq!(rel("/a/../b").unwrap(), "b");
        assert_eq!(rel("/a/%2e%2e/b").unwrap(), "b");
        let t = resolve("/a/b/..").unwrap();
        assert_eq!(t.relative, PathBuf::from("a"));
        assert!(t.trailing_slash);
    }

    #[test]
    fn leaving_the_root_is_refused() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/%2e%2e/%2e%2e/x",
            "/..%2f..%2fetc",
        ] {
            assert_eq!(resolve(raw), Err(Refused::Unsafe), "{raw}");
        }
    }

    #[test]
    fn backslashes_and_nul_are_refused() {
        for raw in ["/a\\b", "/a%5c..%5c..%5cetc", "/a%00.txt", "/%00"] {
            assert_eq!(resolve(raw), Err(Refused::Unsafe), "{raw}");
        }
    }

    #[test]
    fn non_origin_forms_are_not_paths() {
        assert_eq!(resolve("*"), Err(Refused::NotAPath));
        assert_eq!(resolve("http://x/"), Err(Refused::NotAPath));
        assert_eq!(resolve(""), Err(Refused::NotAPath));
    }

    #[test]
    fn the_decoded_path_is_normalised() {
        let t = resolve("/a%20b//c/./").unwrap();
        assert_eq!(t.decoded, "/a b/c");
        assert!(t.trailing_slash);
        assert_eq!(resolve("/").unwrap().decoded, "/");
    }

    #[test]
    fn non_utf8_names_survive() {
        let t = resolve("/caf%E9").unwrap();
        assert_eq!(t.relative.as_os_str().as_bytes(), b"caf\xe9");
    }
}
