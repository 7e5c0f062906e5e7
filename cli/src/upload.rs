//! `--upload`: PUT writes the request body to a temporary file beside the target and
//! renames it into place once the body is complete, so a cut connection, an oversized
//! body or a failed write leaves nothing half-written (the temporary file is removed
//! when it is dropped). Answers 201 for a new file, 204 for a replaced one (as nginx's
//! WebDAV module), 409 when the parent directory is missing or the target is one, 413
//! beyond `--max-upload-size`, 412 when a precondition fails.
//!
//! Everything after the parent directory is opened (beneath the root, see `beneath`)
//! goes through that directory's descriptor — creating the temporary file, renaming it,
//! removing it — so swapping a parent for a symlink meanwhile cannot send the upload
//! outside the root. The file's data is flushed to disk before the rename and the
//! directory after it, so a 201/204 means the upload survives a crash; those flushes
//! block this worker's loop for as long as the disk takes.

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{self, Write},
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::ffi::OsStrExt,
    },
    rc::Rc,
    sync::atomic::{AtomicU64, Ordering},
};

use onstream::{Headers, Stream};

use crate::{
    beneath::{self, Root},
    conditional::{self, Precondition, Validators},
    path::Target,
    site::{status_page, Sent},
};

/// Handles a PUT of `target` with a body of at most `limit` bytes.
pub async fn put(
    root: &Root,
    stream: &Stream,
    req: &Headers,
    target: &Target,
    limit: u64,
) -> onstream::Result<Sent> {
    if target.relative.as_os_str().is_empty() || target.trailing_slash {
        return status_page(stream, "PUT", 409, &[]).await;
    }
    let declared = req
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return status_page(stream, "PUT", 413, &[]).await;
    }
    let parent = target.relative.parent().unwrap_or(&target.relative);
    let Some(name) = target.relative.file_name() else {
        return status_page(stream, "PUT", 409, &[]).await;
    };
    let dir = match root.open_dir(parent) {
        Ok(dir) => dir,
        Err(e) => {
            let status = if beneath::escaped(&e) || e.kind() == std::io::ErrorKind::PermissionDenied
            {
                403
            } else {
                409
            };
            return status_page(stream, "PUT", status, &[]).await;
        }
    };
    let existing = match root.open(&target.relative) {
        Ok(f) => Some(f.metadata()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if beneath::escaped(&e) => return status_page(stream, "PUT", 403, &[]).await,
        Err(e) => return Err(e.into()),
    };
    if existing.as_ref().is_some_and(|md| !md.is_file()) {
        return status_page(stream, "PUT", 409, &[]).await;
    }
    let get = |name: &str| {
        req.get_comma_separated(name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let precondition = match &existing {
        Some(md) => conditional::evaluate("PUT", get, &Validators::from_metadata(md)),
        // Nothing there: If-Match (even `*`) fails, If-None-Match: * holds.
        None if req.has("if-match") => Precondition::Failed,
        None => Precondition::Proceed,
    };
    if precondition != Precondition::Proceed {
        return status_page(stream, "PUT", 412, &[]).await;
    }

    let mut tmp = TempFile::create_in(Rc::new(dir))?;
    let mut total: u64 = 0;
    while let Some(chunk) = stream.get_next_chunk().await? {
        total += chunk.len() as u64;
        if total > limit {
            // The temporary file goes with `tmp`; the rest of the body is the
            // connection's business (drained or the connection closed).
            return status_page(stream, "PUT", 413, &[]).await;
        }
        tmp.write_all(&chunk)?;
    }
    tmp.persist(name)?;
    let status = if existing.is_some() { 204 } else { 201 };
    status_page(stream, "PUT", status, &[]).await
}

/// A file being uploaded, created in (and named relative to) its directory's descriptor;
/// removed when dropped unless it was persisted.
pub struct TempFile {
    /// Shared by the files of one POST: a 1,000-part upload holds one directory
    /// descriptor, not 1,000.
    dir: Rc<File>,
    name: CString,
    /// `None` once [`TempFile::finish_writing`] closed it (the data is on disk by then).
    file: Option<File>,
    persisted: bool,
}

/// The start of every temporary upload's name: listings never show such files.
const TEMP_PREFIX: &str = ".onstream-upload-";

/// Whether `name` is one of our temporary upload files.
pub fn is_temporary_name(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes())
}

/// Makes temporary names unique within this process; the pid makes them unique between
/// processes (and O_EXCL catches whatever is left).
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    pub fn create_in(dir: Rc<File>) -> io::Result<TempFile> {
        for _ in 0..16 {
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let name = CString::new(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
                .expect("no NUL in a formatted name");
            // O_EXCL | O_NOFOLLOW: a new regular file of ours, never whatever sits there.
            let flags =
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: `name` is a valid C string and `dir` an open directory descriptor.
            #[allow(unsafe_code)]
            let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o644) };
            if fd >= 0 {
                // SAFETY: the kernel just returned this descriptor; nobody else owns it.
                #[allow(unsafe_code)]
                let file = unsafe { File::from_raw_fd(fd) };
                return Ok(TempFile {
                    dir,
                    name,
                    file: Some(file),
                    persisted: false,
                });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary upload name",
        ))
    }

    /// Appends `data`.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(data),
            None => Err(io::Error::other("the temporary file was closed")),
        }
    }

    /// Flushes the data to disk and closes the file, keeping its name until
    /// [`TempFile::persist`] or drop: an upload of many files holds a descriptor only for
    /// the one being written.
    pub fn finish_writing(&mut self) -> io::Result<()> {
        match self.file.take() {
            Some(file) => file.sync_all(),
            None => Ok(()),
        }
    }

    /// Flushes the data, renames the file to `name` in its directory (replacing what was
    /// there, a symlink itself rather than its target), then flushes the directory.
    pub fn persist(&mut self, name: &OsStr) -> io::Result<()> {
        self.finish_writing()?;
        let target = CString::new(name.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = self.dir.as_raw_fd();
        // SAFETY: both names are valid C strings relative to the same open directory.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::renameat(fd, self.name.as_ptr(), fd, target.as_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.persisted = true;
        self.dir.sync_all()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // SAFETY: a valid C string relative to an open directory descriptor.
            #[allow(unsafe_code)]
            unsafe {
                libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_dropped_upload_leaves_nothing_and_a_persisted_one_replaces_a_symlink_itself() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("link")).unwrap();

        let mut tmp = TempFile::create_in(Rc::new(File::open(root.path()).unwrap())).unwrap();
        tmp.write_all(b"half").unwrap();
        drop(tmp);
        assert_eq!(names(root.path()), ["link"]);

        let mut tmp = TempFile::create_in(Rc::new(File::open(root.path()).unwrap())).unwrap();
        tmp.write_all(b"new").unwrap();
        tmp.persist(OsStr::new("link")).unwrap();
        drop(tmp);
        assert_eq!(names(root.path()), ["link"]);
        assert!(!std::fs::symlink_metadata(root.path().join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(root.path().join("link")).unwrap(), b"new");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
