//! `--upload` from a browser: POST to a directory's own URL. A `multipart/form-data`
//! body (the listing's upload form, `curl -F file=@x URL/dir/`) stores each part that
//! has a filename as a file of that name in the directory; a `mkdir` field (multipart,
//! or `application/x-www-form-urlencoded`: `curl -d mkdir=NAME`) makes a folder.
//!
//! All or nothing: each file is streamed to a temporary file in the directory
//! (`upload::TempFile`, the one PUT uses, never whole in memory), and only once the
//! whole body has been read and every part accepted are the folders made and the files
//! flushed and renamed into place (replacing files of the same name, as PUT does). A
//! refusal, a body over `--max-upload-size` (counted over the whole request), a client
//! that goes away mid-part: the temporary files are removed and nothing changes.
//!
//! Answers: `303 See Other` back to the directory when the client takes `text/html`
//! (a browser's form submission, so a reload does not post again); else (XHR, curl)
//! `201 Created` with one line per name made, a folder's with a trailing `/`, as
//! `text/plain`. Refusals are `text/plain` with the reason: 400 (a bad name: empty,
//! `.` or `..`, with `/`, `\` or NUL, over 255 bytes, a dot file without `--hidden`;
//! nothing to do; a malformed body), 409 (the name is taken by a directory, or by
//! anything for a new folder), 413 (over the size limit, or more than [`MAX_PARTS`]
//! parts), 415 (another content type), 507 (the disk is full) or 500 (another failure
//! to store). POST to anything but a directory is 405.
//!
//! The parser is `multer`, which wants a `Send` stream; a request body is read through
//! the (`!Send`) `Stream`, so a pump on the same task feeds it through a channel of one
//! chunk: memory stays bounded by a chunk or two plus what multer holds while it looks
//! for a part's headers or a boundary, which is itself bounded ([`MAX_BUFFERED`]).

use std::{
    cell::{Cell, RefCell},
    ffi::OsStr,
    fs::File,
    os::unix::ffi::OsStrExt,
    pin::pin,
    rc::Rc,
};

use bytes::Bytes;
use futures_util::future::{select, Either};
use onstream::{Headers, Stream};

use crate::{
    beneath::{self, Root},
    entries, listing,
    path::Target,
    site::{status_page, Sent},
    upload::{self, TempFile},
};

/// The most parts one POST may have: each file part holds an open temporary file until
/// the end of the body, and each part costs a little parsing; 10,000 tiny parts would
/// otherwise be as cheap to send as they are costly to take.
pub const MAX_PARTS: usize = 1000;

/// How far the bytes read from the client may run ahead of the part data multer has
/// handed back: what it holds while looking for a part's headers (which never end, in an
/// attack) or before the first boundary. Beyond it the body is refused as malformed.
const MAX_BUFFERED: u64 = 1 << 20;

/// The longest `mkdir` value, or urlencoded body, that is read.
const MAX_FIELD: usize = 4096;

/// The longest file name Linux takes (NAME_MAX).
const MAX_NAME: usize = 255;

/// Handles a POST to `target` with `--upload`; `limit` bounds the whole body, `hidden`
/// allows dot-file names.
pub async fn post(
    root: &Root,
    stream: &Stream,
    req: &Headers,
    target: &Target,
    limit: u64,
    hidden: bool,
) -> onstream::Result<Sent> {
    let dir = match root.open_dir(&target.relative) {
        Ok(dir) => dir,
        Err(e) if beneath::escaped(&e) || e.kind() == std::io::ErrorKind::PermissionDenied => {
            return status_page(stream, "POST", 403, &[]).await;
        }
        // Only directories take a POST.
        Err(_) => return status_page(stream, "POST", 405, &[("allow", "GET, HEAD, PUT")]).await,
    };
    let declared = req
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return refuse(stream, Refusal::TooLarge).await;
    }
    let content_type = req.get("content-type").unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let plan = match mime.as_str() {
        "multipart/form-data" => match multer::parse_boundary(content_type) {
            Ok(boundary) => read_multipart(stream, &dir, boundary, limit, hidden).await?,
            Err(_) => Err(Refusal::Malformed("no multipart boundary")),
        },
        "application/x-www-form-urlencoded" => read_urlencoded(stream, &dir, hidden).await?,
        _ => Err(Refusal::UnsupportedType),
    };
    let plan = match plan {
        Ok(plan) if plan.is_empty() => return refuse(stream, Refusal::Nothing).await,
        Ok(plan) => plan,
        Err(refusal) => return refuse(stream, refusal).await,
    };
    let made = match plan.carry_out(&dir) {
        Ok(made) => made,
        Err(refusal) => return refuse(stream, refusal).await,
    };
    let accept = req.get_comma_separated("accept").unwrap_or_default();
    if String::from_utf8_lossy(&accept).contains("text/html") {
        let location = listing::dir_href(&target.relative);
        return status_page(stream, "POST", 303, &[("location", &location)]).await;
    }
    text(stream, 201, &made).await
}

/// Why a POST is refused; each maps to a status and a line of text.
#[derive(Debug)]
enum Refusal {
    BadName(&'static str),
    Taken,
    TooLarge,
    TooManyParts,
    Malformed(&'static str),
    Nothing,
    UnsupportedType,
    /// The server could not store what was sent (a full disk, no descriptors left).
    Storage(std::io::Error),
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::BadName(_) | Refusal::Malformed(_) | Refusal::Nothing => 400,
            Refusal::Taken => 409,
            Refusal::TooLarge | Refusal::TooManyParts => 413,
            Refusal::UnsupportedType => 415,
            Refusal::Storage(e) => match e.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT) => 507,
                _ => 500,
            },
        }
    }

    fn reason(&self) -> String {
        match self {
            Refusal::BadName(why) => format!("bad name: {why}"),
            Refusal::Taken => "the name is taken".to_owned(),
            Refusal::TooLarge => "the upload is larger than --max-upload-size".to_owned(),
            Refusal::TooManyParts => format!("more than {MAX_PARTS} parts"),
            Refusal::Malformed(why) => format!("malformed body: {why}"),
            Refusal::Nothing => "no file and no folder name".to_owned(),
            Refusal::UnsupportedType => {
                "send multipart/form-data or application/x-www-form-urlencoded".to_owned()
            }
            Refusal::Storage(e) => format!("cannot store the upload: {e}"),
        }
    }
}

/// What a POST will do once its whole body is in: folders to make, then temporary files
/// to rename into place.
#[derive(Default)]
struct Plan {
    folders: Vec<Vec<u8>>,
    files: Vec<(Vec<u8>, TempFile)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.folders.is_empty() && self.files.is_empty()
    }

    /// Makes the folders, then flushes and renames the files; returns one line per name.
    fn carry_out(mut self, dir: &File) -> Result<String, Refusal> {
        let mut made = String::new();
        for name in &self.folders {
            match rustix::fs::mkdirat(dir, OsStr::from_bytes(name), 0o755.into()) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => return Err(Refusal::Taken),
                Err(e) => return Err(Refusal::Storage(e.into())),
            }
            made.push_str(&String::from_utf8_lossy(name));
            made.push_str("/\n");
        }
        for (name, tmp) in &mut self.files {
            match tmp.persist(OsStr::from_bytes(name)) {
                Ok(()) => {}
                // A directory put there since the part was checked.
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => return Err(Refusal::Taken),
                Err(e) => return Err(Refusal::Storage(e)),
            }
            made.push_str(&String::from_utf8_lossy(name));
            made.push('\n');
        }
        Ok(made)
    }
}

/// Checks a name for a new file or folder in a directory: one plain segment that the
/// server will serve back.
fn check_name(name: &[u8], hidden: bool) -> Result<(), Refusal> {
    let why = if name.is_empty() {
        "empty"
    } else if name == b"." || name == b".." {
        "`.` or `..`"
    } else if name.contains(&b'/') || name.contains(&b'\\') {
        "it contains `/` or `\\`"
    } else if name.contains(&0) {
        "it contains NUL"
    } else if name.len() > MAX_NAME {
        "longer than 255 bytes"
    } else if upload::is_temporary_name(name) {
        "reserved for temporary uploads"
    } else if !hidden && entries::is_hidden_name(name) {
        "a dot file (served only with --hidden)"
    } else {
        return Ok(());
    };
    Err(Refusal::BadName(why))
}

/// Whether `name` in `dir` is free for a file: nothing there, or a file (replaced).
fn file_may_go(dir: &File, name: &[u8]) -> bool {
    match rustix::fs::statat(
        dir,
        OsStr::from_bytes(name),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(stat) => !rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir(),
        Err(_) => true,
    }
}

/// Whether anything is at `name` in `dir`.
fn exists(dir: &File, name: &[u8]) -> bool {
    rustix::fs::statat(
        dir,
        OsStr::from_bytes(name),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .is_ok()
}

/// The client's side of the body, as multer sees it.
type Chunk = Result<Bytes, std::io::Error>;

/// Reads a multipart body: `Ok(Err(refusal))` for what the client got wrong,
/// `Err` when reading the body failed (the client went away, or stalled: 408).
async fn read_multipart(
    stream: &Stream,
    dir: &File,
    boundary: String,
    limit: u64,
    hidden: bool,
) -> onstream::Result<Result<Plan, Refusal>> {
    let (mut tx, rx) = futures_channel::mpsc::channel::<Chunk>(0);
    // Set by the pump when it stops the body early; read once multer has failed.
    let stopped: RefCell<Option<Result<Refusal, onstream::Error>>> = RefCell::new(None);
    let read = Cell::new(0u64);
    let handed_back = Cell::new(0u64);

    let pump = async {
        loop {
            let chunk = match stream.get_next_chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    *stopped.borrow_mut() = Some(Err(e));
                    break;
                }
            };
            read.set(read.get() + chunk.len() as u64);
            if read.get() > limit {
                *stopped.borrow_mut() = Some(Ok(Refusal::TooLarge));
                break;
            }
            if read.get().saturating_sub(handed_back.get()) > MAX_BUFFERED {
                *stopped.borrow_mut() = Some(Ok(Refusal::Malformed("a part's headers never end")));
                break;
            }
            if std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_err()
                || tx.start_send(Ok(chunk)).is_err()
            {
                return;
            }
        }
        // The body stopped early: multer must fail, not see a clean end.
        if stopped.borrow().is_some() && std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_ok()
        {
            let _ = tx.start_send(Err(std::io::Error::other("stopped")));
        }
        drop(tx);
    };

    let parse = async {
        let mut multipart = multer::Multipart::new(rx, boundary);
        let mut plan = Plan::default();
        let mut n_parts = 0;
        // One descriptor of the directory for all the files of this POST.
        let mut shared_dir: Option<Rc<File>> = None;
        loop {
            let mut field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => return Ok(plan),
                Err(_) => return Err(Refusal::Malformed("not multipart/form-data")),
            };
            n_parts += 1;
            if n_parts > MAX_PARTS {
                return Err(Refusal::TooManyParts);
            }
            let disposition = field
                .headers()
                .get("content-disposition")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            let file_name = field.file_name().map(|name| name.as_bytes().to_vec());
            let is_mkdir = field.name() == Some("mkdir");
            match file_name {
                // A browser sends an empty file input as a part named "" with no data.
                Some(name) if name.is_empty() => drain(&mut field, &handed_back).await?,
                Some(name) => {
                    check_name(&name, hidden)?;
                    if !file_may_go(dir, &name) {
                        return Err(Refusal::Taken);
                    }
                    let shared = match &shared_dir {
                        Some(shared) => shared.clone(),
                        None => Rc::new(dir.try_clone().map_err(Refusal::Storage)?),
                    };
                    shared_dir = Some(shared.clone());
                    let mut tmp = TempFile::create_in(shared).map_err(Refusal::Storage)?;
                    while let Some(chunk) = next(&mut field, &handed_back).await? {
                        tmp.write_all(&chunk).map_err(Refusal::Storage)?;
                    }
                    // Closed as soon as it is whole: the parts that follow do not keep
                    // it open.
                    tmp.finish_writing().map_err(Refusal::Storage)?;
                    plan.files.push((name, tmp));
                }
                // A filename multer cannot read (not UTF-8, or only RFC 5987's
                // `filename*=`): a file all the same, not a field to ignore.
                None if memchr_filename(&disposition) => {
                    return Err(Refusal::BadName("not UTF-8, or only filename*="));
                }
                None if is_mkdir => {
                    let mut name = Vec::new();
                    while let Some(chunk) = next(&mut field, &handed_back).await? {
                        name.extend_from_slice(&chunk);
                        if name.len() > MAX_FIELD {
                            return Err(Refusal::BadName("longer than 255 bytes"));
                        }
                    }
                    let name = trim(&name).to_vec();
                    if name.is_empty() {
                        continue;
                    }
                    check_name(&name, hidden)?;
                    if exists(dir, &name) {
                        return Err(Refusal::Taken);
                    }
                    plan.folders.push(name);
                }
                // Other fields (a submit button's name, say) are read and ignored.
                None => drain(&mut field, &handed_back).await?,
            }
        }
    };

    let result = match select(pin!(parse), pin!(pump)).await {
        Either::Left((result, _pump)) => result,
        Either::Right(((), parse)) => parse.await,
    };
    match (result, stopped.into_inner()) {
        (Ok(plan), _) => Ok(Ok(plan)),
        // What stopped the body explains multer's failure.
        (Err(_), Some(Ok(refusal))) => Ok(Err(refusal)),
        (Err(_), Some(Err(e))) => Err(e),
        (Err(refusal), None) => Ok(Err(refusal)),
    }
}

/// The next piece of a part's data, counted as handed back.
async fn next(
    field: &mut multer::Field<'_>,
    handed_back: &Cell<u64>,
) -> Result<Option<Bytes>, Refusal> {
    match field.chunk().await {
        Ok(Some(chunk)) => {
            handed_back.set(handed_back.get() + chunk.len() as u64);
            Ok(Some(chunk))
        }
        Ok(None) => Ok(None),
        Err(_) => Err(Refusal::Malformed("a part does not end")),
    }
}

/// Reads a part to its end (rather than letting multer skip it uncounted).
async fn drain(field: &mut multer::Field<'_>, handed_back: &Cell<u64>) -> Result<(), Refusal> {
    while next(field, handed_back).await?.is_some() {}
    Ok(())
}

/// Whether a Content-Disposition value names a `filename` parameter.
fn memchr_filename(disposition: &[u8]) -> bool {
    disposition
        .to_ascii_lowercase()
        .windows(b"filename".len())
        .any(|w| w == b"filename")
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Reads an urlencoded body (at most [`MAX_FIELD`] bytes) for its `mkdir` field.
async fn read_urlencoded(
    stream: &Stream,
    dir: &File,
    hidden: bool,
) -> onstream::Result<Result<Plan, Refusal>> {
    let mut body = Vec::new();
    while let Some(chunk) = stream.get_next_chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_FIELD {
            return Ok(Err(Refusal::TooLarge));
        }
    }
    let mut plan = Plan::default();
    for pair in body.split(|b| *b == b'&') {
        let Some(value) = pair.strip_prefix(b"mkdir=") else {
            continue;
        };
        let value: Vec<u8> = value
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        let name: Vec<u8> = percent_encoding::percent_decode(&value).collect();
        let name = trim(&name).to_vec();
        if let Err(refusal) = check_name(&name, hidden) {
            return Ok(Err(refusal));
        }
        if exists(dir, &name) {
            return Ok(Err(Refusal::Taken));
        }
        plan.folders.push(name);
    }
    Ok(Ok(plan))
}

async fn refuse(stream: &Stream, refusal: Refusal) -> onstream::Result<Sent> {
    let status = refusal.status();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    text(
        stream,
        status,
        &format!("{status} {reason}: {}\n", refusal.reason()),
    )
    .await
}

async fn text(stream: &Stream, status: u16, body: &str) -> onstream::Result<Sent> {
    let mut head = Headers::new();
    head.append(":status", status.to_string());
    head.append("content-type", "text/plain; charset=utf-8");
    head.append("content-length", body.len().to_string());
    head.append("cache-control", "no-store");
    stream.write_headers(&head, false).await?;
    stream.write_chunk(body, true).await?;
    Ok(Sent {
        status,
        bytes: body.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_one_plain_segment() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"../x",
            b"a\\b",
            b"a\0b",
            b".env",
            b".onstream-upload-1-2",
            &[b'x'; 256],
        ] {
            assert!(
                check_name(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [&b"a.txt"[..], b"a b", b"%2F", b"x..", b"\xff", &[b'x'; 255]] {
            assert!(check_name(good, false).is_ok(), "{good:?}");
        }
        assert!(check_name(b".env", true).is_ok());
        assert!(check_name(b".onstream-upload-1-2", true).is_err());
        assert!(check_name(b"..", true).is_err());
    }

    #[test]
    fn trimming_keeps_inner_spaces() {
        assert_eq!(trim(b"  a b \r\n"), b"a b");
        assert_eq!(trim(b"   "), b"");
    }
}
