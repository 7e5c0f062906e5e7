//! The command's request-path resolution (`cli/src/path.rs`): whatever `:path` a client
//! sends, a resolved path is relative, made only of plain names (no `..`, `.`, root or
//! prefix), holds no NUL or backslash, stays under the root when joined to it, and its
//! decoded form has the same segments.
//!
//! The cli is a binary crate; path.rs needs only std and percent-encoding, so it is
//! compiled in here as a module rather than giving the cli a library target.
#![no_main]

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cli/src/path.rs"]
mod path;

fuzz_target!(|data: &[u8]| {
    // The server hands the site valid UTF-8 only (`Headers::get`).
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(target) = path::resolve(raw) else {
        return;
    };
    let bytes = target.relative.as_os_str().as_bytes();
    assert!(
        !bytes.contains(&0),
        "NUL in {:?} from {raw:?}",
        target.relative
    );
    assert!(
        !bytes.contains(&b'\\'),
        "\\ in {:?} from {raw:?}",
        target.relative
    );
    let mut names = 0;
    for component in target.relative.components() {
        assert!(
            matches!(component, Component::Normal(_)),
            "{component:?} in {:?} from {raw:?}",
            target.relative
        );
        names += 1;
    }
    let root = Path::new("/srv/site");
    assert!(
        root.join(&target.relative).starts_with(root),
        "{:?} from {raw:?} leaves the root",
        target.relative
    );
    assert!(
        target.decoded.starts_with('/'),
        "decoded {:?}",
        target.decoded
    );
    let segments: Vec<&str> = target
        .decoded
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        segments.len(),
        names,
        "decoded {:?} vs {:?}",
        target.decoded,
        target.relative
    );
    assert!(
        !segments.iter().any(|s| *s == "." || *s == ".."),
        "decoded {:?} from {raw:?}",
        target.decoded
    );
});
