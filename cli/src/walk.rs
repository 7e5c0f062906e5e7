//! Walking a directory tree for an archive, strictly beneath the served root.
//!
//! Every directory and file is opened through [`Root`] (`openat2(RESOLVE_BENEATH)`), and a
//! directory's names are read through the descriptor that was opened, so nothing outside
//! the root is ever read, whatever the tree holds or how it changes during the walk:
//! - a symlink whose target is outside the root (or dangling) is left out;
//! - a symlink to a file inside the root is archived as that file's content;
//! - a symlink to a directory is left out, even inside the root: following it could loop
//!   (`a -> .`), and its content is in the archive under its real name anyway;
//! - FIFOs, sockets and devices are left out; so are names starting with `.` unless the
//!   site serves hidden files (`Site::hidden`);
//! - entries that cannot be opened or read (permissions) are left out, not fatal;
//! - at most [`MAX_DEPTH`] directories deep: deeper ones are left out.
//!
//! Memory is bounded by the depth, not the size of the tree: one open directory stream per
//! level, read lazily, in the file system's order (sorting would mean holding a whole
//! directory's names, which could be millions).

use std::{
    fs::{File, ReadDir},
    io,
    os::{fd::AsRawFd, unix::ffi::OsStrExt, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use crate::beneath::Root;

/// How many directories deep the walk goes: each level holds an open directory stream.
pub const MAX_DEPTH: usize = 64;

/// One thing to archive.
#[derive(Debug)]
pub struct Item {
    /// The path below the walked directory (never empty, no leading or trailing `/`).
    pub path: PathBuf,
    pub kind: Kind,
    /// Seconds since the epoch (0 for earlier times).
    pub mtime: u64,
    /// Permission bits (`0o777` at most).
    pub mode: u32,
}

#[derive(Debug)]
pub enum Kind {
    Dir,
    /// An open regular file and its size when it was opened: exactly that many bytes are
    /// archived (the archive's header is written before the data).
    File {
        file: File,
        size: u64,
    },
}

/// A depth-first walk below one directory of the root.
#[derive(Debug)]
pub struct Walk<'a> {
    root: &'a Root,
    /// The walked directory, relative to the root.
    base: PathBuf,
    hidden: bool,
    /// One open directory stream per level being walked, with its path relative to the root.
    stack: Vec<(PathBuf, ReadDir)>,
}

impl<'a> Walk<'a> {
    /// Starts below `base` (relative to the root); fails if it cannot be read.
    pub fn new(root: &'a Root, base: &Path, hidden: bool) -> io::Result<Walk<'a>> {
        let entries = read_dir(root, base)?;
        Ok(Walk {
            root,
            base: base.to_owned(),
            hidden,
            stack: vec![(base.to_owned(), entries)],
        })
    }

    fn item(&self, relative: &Path, kind: Kind, md: &std::fs::Metadata) -> Item {
        Item {
            path: relative
                .strip_prefix(&self.base)
                .unwrap_or(relative)
                .to_owned(),
            kind,
            mtime: u64::try_from(md.mtime()).unwrap_or(0),
            mode: md.mode() & 0o777,
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            let (dir, entries) = self.stack.last_mut()?;
            let Some(entry) = entries.next() else {
                self.stack.pop();
                continue;
            };
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            if !self.hidden && name.as_bytes().starts_with(b".") {
                continue;
            }
            let relative = dir.join(&name);
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                if self.stack.len() >= MAX_DEPTH {
                    continue;
                }
                let Ok(dir) = self.root.open_dir(&relative) else {
                    continue;
                };
                let (Ok(md), Ok(entries)) =
                    (dir.metadata(), read_dir_of(self.root, &relative, &dir))
                else {
                    continue;
                };
                let item = self.item(&relative, Kind::Dir, &md);
                self.stack.push((relative, entries));
                return Some(item);
            }
            if file_type.is_file() || file_type.is_symlink() {
                // A symlink out of the root fails here (EXDEV, ELOOP), as for a request.
                let Ok(file) = self.root.open(&relative) else {
                    continue;
                };
                let Ok(md) = file.metadata() else { continue };
                if !md.is_file() {
                    continue;
                }
                let size = md.len();
                return Some(self.item(&relative, Kind::File { file, size }, &md));
            }
        }
    }
}

/// The names in directory `relative`, read through a descriptor opened beneath the root.
fn read_dir(root: &Root, relative: &Path) -> io::Result<ReadDir> {
    let dir = root.open_dir(relative)?;
    read_dir_of(root, relative, &dir)
}

fn read_dir_of(root: &Root, relative: &Path, dir: &File) -> io::Result<ReadDir> {
    // /proc/self/fd/N names the very directory opened (not whatever is at its path now);
    // without /proc, the path is the only way left.
    std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .or_else(|_| std::fs::read_dir(root.path().join(relative)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn names(walk: Walk<'_>) -> BTreeSet<String> {
        walk.map(|item| {
            let slash = if matches!(item.kind, Kind::Dir) {
                "/"
            } else {
                ""
            };
            format!("{}{slash}", item.path.display())
        })
        .collect()
    }

    #[test]
    fn symlinks_out_hidden_files_and_specials_are_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("root");
        std::fs::create_dir_all(r.join("d/e")).unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::fs::write(r.join("a"), "a").unwrap();
        std::fs::write(r.join("d/b"), "b").unwrap();
        std::fs::write(r.join("d/e/c"), "c").unwrap();
        std::fs::write(r.join(".env"), "x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../secret", r.join("d/rel")).unwrap();
        std::os::unix::fs::symlink("/", r.join("slash")).unwrap();
        std::os::unix::fs::symlink("a", r.join("inside")).unwrap();
        std::os::unix::fs::symlink(".", r.join("loop")).unwrap();
        std::os::unix::fs::symlink("nowhere", r.join("dangling")).unwrap();
        let c = std::ffi::CString::new(r.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        #[allow(unsafe_code)]
        unsafe {
            libc::mkfifo(c.as_ptr(), 0o644)
        };
        let root = Root::new(&r).unwrap();
        let want: BTreeSet<String> = ["a", "d/", "d/b", "d/e/", "d/e/c", "inside"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(names(Walk::new(&root, Path::new(""), false).unwrap()), want);
        let mut with_hidden = want.clone();
        with_hidden.insert(".env".into());
        assert_eq!(
            names(Walk::new(&root, Path::new(""), true).unwrap()),
            with_hidden
        );
        let below: BTreeSet<String> = ["b", "e/", "e/c"].into_iter().map(String::from).collect();
        assert_eq!(
            names(Walk::new(&root, Path::new("d"), false).unwrap()),
            below
        );
        assert!(Walk::new(&root, Path::new("slash"), false).is_err());
    }

    #[test]
    fn the_depth_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let mut deep = tmp.path().to_owned();
        for _ in 0..MAX_DEPTH + 5 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let root = Root::new(tmp.path()).unwrap();
        let n = Walk::new(&root, Path::new(""), false).unwrap().count();
        assert_eq!(n, MAX_DEPTH - 1, "the walked directory is one level");
    }
}
