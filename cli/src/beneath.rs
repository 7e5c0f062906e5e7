//! Opening files strictly beneath the served root. On Linux ≥ 5.6 this is one
//! `openat2(RESOLVE_BENEATH)` call: the kernel refuses any resolution — `..`, an absolute
//! symlink, a relative one that climbs out — that would leave the root, with no window
//! between a check and the open. Where `openat2` is missing (older kernels, seccomp
//! filters that answer `ENOSYS`), the path is canonicalised and checked instead.
//!
//! With `--follow-symlinks` ([`Root::follow_symlinks`]) reads may follow symlinks out of
//! the root (request paths still cannot climb out: `path.rs` refuses `..` above the
//! root); directories opened for writing ([`Root::open_dir`]) stay beneath it always.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

/// The served directory.
#[derive(Debug)]
pub struct Root {
    dir: File,
    path: PathBuf,
    /// `--follow-symlinks`: [`Root::open`] follows symlinks wherever they lead.
    follow: bool,
}

/// Set once `openat2` turned out not to exist here.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Root {
    /// Opens the directory to serve; errors name what is wrong with it.
    pub fn new(path: &Path) -> io::Result<Root> {
        let path = std::fs::canonicalize(path)?;
        let dir = File::open(&path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok(Root {
            dir,
            path,
            follow: false,
        })
    }

    /// Lets [`Root::open`] follow symlinks out of the root (`--follow-symlinks`).
    pub fn follow_symlinks(mut self, follow: bool) -> Root {
        self.follow = follow;
        self
    }

    /// Whether [`Root::open`] follows symlinks out of the root.
    pub fn follows_symlinks(&self) -> bool {
        self.follow
    }

    /// The root's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `relative` (empty: the root) read-only. An escape from the root fails with
    /// [`escaped`]-kind errors (`EXDEV`, `ELOOP`), a missing file with `NotFound`.
    /// With [`Root::follow_symlinks`] symlinks are followed wherever they lead.
    pub fn open(&self, relative: &Path) -> io::Result<File> {
        self.open_with(relative, libc::O_RDONLY, self.follow)
    }

    /// Opens the directory `relative` (empty: the root), always beneath the root: it is
    /// where uploads are written.
    pub fn open_dir(&self, relative: &Path) -> io::Result<File> {
        self.open_with(relative, libc::O_RDONLY | libc::O_DIRECTORY, false)
    }

    fn open_with(&self, relative: &Path, flags: libc::c_int, follow: bool) -> io::Result<File> {
        // O_NONBLOCK: opening a FIFO someone left in the tree must not hang the loop; it
        // changes nothing for regular files and directories.
        let flags = flags | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.openat2(relative, flags, follow) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.open_checked(relative, flags, follow)
    }

    fn openat2(&self, relative: &Path, flags: libc::c_int, follow: bool) -> io::Result<File> {
        let name = if relative.as_os_str().is_empty() {
            CString::new(".")
        } else {
            CString::new(relative.as_os_str().as_bytes())
        }
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: open_how is plain old data; zeroed is a valid (all-default) value.
        #[allow(unsafe_code)]
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = if follow {
            libc::RESOLVE_NO_MAGICLINKS
        } else {
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS
        };
        // SAFETY: every pointer is valid for the call; the size is the struct's own.
        #[allow(unsafe_code)]
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
        #[allow(unsafe_code)]
        Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
    }

    fn open_checked(&self, relative: &Path, flags: libc::c_int, follow: bool) -> io::Result<File> {
        let full = std::fs::canonicalize(self.path.join(relative))?;
        if !follow && !full.starts_with(&self.path) {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags & !libc::O_RDONLY)
            .open(full)
    }
}

/// Whether an open failed because the path would leave the root.
pub fn escaped(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EXDEV | libc::ELOOP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_out_of_the_root_are_refused_and_inside_ones_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root_dir = tmp.path().join("root");
        std::fs::create_dir(&root_dir).unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::fs::write(root_dir.join("file"), "f").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root_dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../secret", root_dir.join("rel")).unwrap();
        std::os::unix::fs::symlink("file", root_dir.join("inside")).unwrap();
        std::os::unix::fs::symlink("/", root_dir.join("slash")).unwrap();
        let root = Root::new(&root_dir).unwrap();
        for name in ["abs", "rel", "slash/etc/passwd"] {
            let e = root.open(Path::new(name)).unwrap_err();
            assert!(escaped(&e), "{name}: {e}");
        }
        assert!(root.open(Path::new("inside")).is_ok());
        assert!(root.open(Path::new("")).is_ok());
        assert_eq!(
            root.open(Path::new("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let root = root.follow_symlinks(true);
        for name in ["abs", "rel", "slash/etc/passwd"] {
            assert!(root.open(Path::new(name)).is_ok(), "{name}");
        }
        let e = root.open_dir(Path::new("slash")).unwrap_err();
        assert!(escaped(&e), "open_dir stays beneath: {e}");
    }
}
