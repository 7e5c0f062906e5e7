//! `--unix PATH`: the socket file's life. A socket file left by a server that died
//! (nothing listening on it) is replaced at start; a live one, or a path that is not a
//! socket at all, is an error, never removed. On a clean exit the file this process
//! made is removed, so the next start finds the path free.

use std::{
    io,
    os::unix::{fs::FileTypeExt, fs::MetadataExt, net::UnixStream},
    path::{Path, PathBuf},
};

/// Clears the way for a socket at `path`: removes a stale socket file, refuses the rest.
pub fn prepare(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot use {}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "cannot listen on {}: a server is already listening there",
            path.display()
        )),
        // Nothing listens: the file outlived its server.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display())),
        Err(e) => Err(format!("cannot use {}: {e}", path.display())),
    }
}

/// Removes the socket file when dropped, if it is still the one bound at start (not one
/// another server has put there since).
#[derive(Debug)]
pub struct RemoveOnExit {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl RemoveOnExit {
    /// Call right after binding `path`.
    pub fn new(path: &Path) -> RemoveOnExit {
        RemoveOnExit {
            path: path.to_owned(),
            identity: identity(path),
        }
    }
}

impl Drop for RemoveOnExit {
    fn drop(&mut self) {
        if self.identity.is_some() && identity(&self.path) == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}
