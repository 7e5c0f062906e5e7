//! What a directory listing shows, read through the directory's own descriptor (the one
//! opened beneath the root, see `beneath`), never again by path: an entry is shown only
//! if a click on its link would be served.
//!
//! - Dot files are left out unless `--hidden` (and `site` refuses to serve them).
//! - An entry is looked at without following symlinks (`fstatat(AT_SYMLINK_NOFOLLOW)`
//!   relative to the directory's descriptor). A symlink is then resolved as a request
//!   for it would be: beneath the root (`Root::open`), so a link that leads out of the
//!   root, dangles or loops is left out, and nothing of what it points at (size, date,
//!   whether it exists) reaches the page. With `--follow-symlinks` links are followed
//!   wherever they lead, and the target's metadata is shown.
//! - Anything that is neither a regular file nor a directory (sockets, FIFOs, devices)
//!   would be answered 403, so it is left out.
//! - The upload module's temporary files are never shown.
//!
//! Cost: one `getdents64` per batch and one `fstatat` per entry (plus one open per
//! symlink); memory grows with the number of entries shown, linearly.

use std::{
    ffi::OsString,
    fs::File,
    io,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

use rustix::fs::{AtFlags, Dir, FileType, Stat};

use crate::{beneath::Root, listing::Entry, upload};

/// How directories are shown and which names are served.
#[derive(Debug, Clone, Copy, Default)]
pub struct Browse {
    /// `--hidden`: dot files are listed and served; without it they are neither (404).
    pub hidden: bool,
    /// `--readme`: a directory's README.md is rendered below its listing.
    pub readme: bool,
}

/// Whether `name` is a dot file, shown and served only with `--hidden`.
pub fn is_hidden_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
}

/// Whether a request for `relative` is answered 404 whatever the file system holds: a
/// dot file without `hidden`, or (always) one of the upload module's temporary files,
/// which hold partial uploads.
pub fn is_refused_path(relative: &Path, hidden: bool) -> bool {
    relative.iter().any(|segment| {
        let name = segment.as_bytes();
        upload::is_temporary_name(name) || (!hidden && is_hidden_name(name))
    })
}

/// Reads the entries of `dir` (the directory at `relative` under `root`, already opened
/// through `root`) that a listing may show; `hidden` shows dot files.
pub fn read(root: &Root, relative: &Path, dir: File, hidden: bool) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut dir = Dir::new(dir)?;
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || upload::is_temporary_name(name) {
            continue;
        }
        if !hidden && is_hidden_name(name) {
            continue;
        }
        let name = OsString::from_vec(name.to_vec());
        let fd = dir.fd()?;
        let stat = match rustix::fs::statat(fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            // Gone since it was listed.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let shown = if FileType::from_raw_mode(stat.st_mode).is_symlink() {
            if root.follows_symlinks() {
                // Whatever it leads to, as `Root::open` would follow it.
                rustix::fs::statat(fd, name.as_os_str(), AtFlags::empty())
                    .ok()
                    .and_then(|stat| shown_stat(name, &stat))
            } else {
                // As a request for it would resolve it: beneath the root, or not at all.
                root.open(&relative.join(&name))
                    .and_then(|file| file.metadata())
                    .ok()
                    .and_then(|md| shown_metadata(name, &md))
            }
        } else {
            shown_stat(name, &stat)
        };
        entries.extend(shown);
    }
    Ok(entries)
}

fn shown_stat(name: OsString, stat: &Stat) -> Option<Entry> {
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile && kind != FileType::Directory {
        return None;
    }
    let modified = if stat.st_mtime >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(
            stat.st_mtime as u64,
            stat.st_mtime_nsec as u32,
        ))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(stat.st_mtime.unsigned_abs()))
    };
    Some(Entry {
        name,
        is_dir: kind == FileType::Directory,
        size: u64::try_from(stat.st_size).unwrap_or(0),
        modified,
    })
}

fn shown_metadata(name: OsString, md: &std::fs::Metadata) -> Option<Entry> {
    if !md.is_file() && !md.is_dir() {
        return None;
    }
    Some(Entry {
        name,
        is_dir: md.is_dir(),
        size: md.len(),
        modified: md.modified().ok(),
    })
}

/// The entries' names, sorted, directories with a `/`.
#[cfg(test)]
fn names(entries: &[Entry]) -> Vec<String> {
    let mut names: Vec<String> = entries
        .iter()
        .map(|e| {
            let mut name = e.name.to_string_lossy().into_owned();
            if e.is_dir {
                name.push('/');
            }
            name
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(tmp.path().join("secret"), "s".repeat(12345)).unwrap();
        std::fs::write(root.join("file"), "f").unwrap();
        std::fs::write(root.join(".env"), "KEY=1").unwrap();
        std::fs::write(root.join(".onstream-upload-1-2"), "partial").unwrap();
        symlink(tmp.path().join("secret"), root.join("abs-out")).unwrap();
        symlink("../secret", root.join("rel-out")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("file", root.join("in-file")).unwrap();
        symlink("sub", root.join("in-dir")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        tmp
    }

    fn list(tmp: &tempfile::TempDir, hidden: bool, follow: bool) -> Vec<Entry> {
        let root = Root::new(&tmp.path().join("root"))
            .unwrap()
            .follow_symlinks(follow);
        let dir = root.open(Path::new("")).unwrap();
        read(&root, Path::new(""), dir, hidden).unwrap()
    }

    #[test]
    fn links_out_of_the_root_dangling_ones_and_specials_are_left_out() {
        let tmp = tree();
        assert_eq!(
            names(&list(&tmp, false, false)),
            ["file", "in-dir/", "in-file", "sub/"]
        );
    }

    #[test]
    fn hidden_shows_dot_files_but_never_upload_temporaries() {
        let tmp = tree();
        assert_eq!(
            names(&list(&tmp, true, false)),
            [".env", "file", "in-dir/", "in-file", "sub/"]
        );
    }

    #[test]
    fn following_symlinks_shows_their_targets() {
        let tmp = tree();
        let entries = list(&tmp, false, true);
        assert_eq!(
            names(&entries),
            ["abs-out", "file", "in-dir/", "in-file", "rel-out", "slash/", "sub/"]
        );
        let out = entries.iter().find(|e| e.name == "abs-out").unwrap();
        assert_eq!(out.size, 12345);
    }

    #[test]
    fn temporary_uploads_are_refused_even_with_hidden() {
        assert!(is_refused_path(Path::new("a/.onstream-upload-1-2"), true));
        assert!(is_refused_path(Path::new(".env"), false));
        assert!(!is_refused_path(Path::new(".env"), true));
        assert!(!is_refused_path(Path::new("a/b"), false));
    }

    #[test]
    fn hidden_paths_are_recognised_in_any_segment() {
        assert!(is_refused_path(Path::new(".git/config"), false));
        assert!(is_refused_path(Path::new("a/.env"), false));
        assert!(!is_refused_path(Path::new("a/b.txt"), false));
        assert!(!is_refused_path(Path::new(""), false));
    }
}
