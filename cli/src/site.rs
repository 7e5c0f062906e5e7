//! The request handler: what the `onstream` command answers. GET and HEAD of files
//! (validators, conditional requests, byte ranges, precompressed siblings), directories
//! (index.html, else a listing), PUT and POST (`form`) with `--upload`, a WebSocket echo
//! route, 404 for dot files without `--hidden`, and a clear status for everything else.
//! Built on the library's public API only.

use std::{
    fs::{File, Metadata},
    io::{self, Read, Seek, SeekFrom},
    path::Path,
    rc::Rc,
    time::Instant,
};

use onstream::{Headers, Stream};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::{
    access_log::{AccessLog, Record, Request},
    allow, app, archive, auth,
    beneath::{self, Root},
    compress,
    conditional::{self, Precondition, Validators},
    entries, form, listing,
    path::{self, Refused, Target},
    range::{self, Ranges},
    readme,
    response_headers::write_head,
    upload,
};

/// What the command serves and how.
#[derive(Debug)]
pub struct Site {
    pub root: Root,
    pub listing: bool,
    /// `Some(limit)` when PUT is allowed.
    pub upload: Option<u64>,
    pub ws_echo: Option<String>,
    pub log: Option<Rc<AccessLog>>,
    /// `--hidden`, `--readme`: what listings show and which names are served.
    pub browse: entries::Browse,
    /// `--allow-from`: empty allows every peer.
    pub allow_from: Vec<allow::Cidr>,
    /// `--auth`: empty asks for no credentials.
    pub users: auth::Users,
    /// `--cors`: OPTIONS is answered as a preflight.
    pub cors: bool,
    /// `--spa`: missing extensionless paths get the root's index page.
    pub spa: bool,
    /// `--index`: the names a directory URL serves, in order.
    pub index: Vec<String>,
    /// `--compress`: `None` when off.
    pub compress: Option<compress::Settings>,
}

/// The status and body size of an answer, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub status: u16,
    pub bytes: u64,
}

/// Answers one request; every outcome is logged.
pub async fn handle(site: Rc<Site>, stream: Stream) -> onstream::Result<()> {
    let started = Instant::now();
    let req = stream.get_headers().await?;
    let mut entry = LogEntry {
        site: &site,
        stream: &stream,
        req: &req,
        started,
        sent: None,
    };
    let result = site.respond(&stream, &req).await;
    entry.sent = result.as_ref().ok().copied();
    drop(entry);
    result.map(drop)
}

/// The access-log line of one request, written when the handler ends — or when its
/// task is dropped unfinished (a download cut at the shutdown timeout), which an
/// `await` followed by a log call would never see.
struct LogEntry<'a> {
    site: &'a Site,
    stream: &'a Stream,
    req: &'a Headers,
    started: Instant,
    /// `None` until the handler ended well.
    sent: Option<Sent>,
}

impl Drop for LogEntry<'_> {
    fn drop(&mut self) {
        let Some(log) = &self.site.log else {
            return;
        };
        // Failed or cut short: the head may or may not have gone out; nginx logs 499
        // for a client that went away, a clearer signal than a made-up 200.
        let sent = self.sent.unwrap_or(Sent {
            status: 499,
            bytes: 0,
        });
        let req = self.req;
        let user = if self.site.users.is_empty() || sent.status == 401 {
            None
        } else {
            self.site
                .users
                .admitted_user(req.get_bytes("authorization"))
        };
        log.log(&Record {
            peer: self.stream.peer_addr(),
            user,
            request: Request::Parsed {
                method: req.get(":method").unwrap_or("-"),
                target: req.get(":path").unwrap_or("-"),
                version: match self.stream.version() {
                    http::Version::HTTP_2 => "HTTP/2.0",
                    http::Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
            },
            status: sent.status,
            bytes: sent.bytes,
            referer: req.get("referer"),
            user_agent: req.get("user-agent"),
            duration: self.started.elapsed(),
        });
    }
}

impl Site {
    async fn respond(&self, stream: &Stream, req: &Headers) -> onstream::Result<Sent> {
        let method = req.get(":method").unwrap_or("");
        let raw_path = req.get(":path").unwrap_or("");
        // Who may ask comes before anything else, the file system included.
        if !allow::allowed(&self.allow_from, stream.peer_addr().map(|a| a.ip())) {
            return status_page(stream, method, 403, &[]).await;
        }
        // Preflights carry no credentials (Fetch), so with --auth they must be answered
        // before it; the answer says nothing about the files.
        if self.cors && method == "OPTIONS" {
            let fields = app::preflight(
                self.upload.is_some(),
                req.get("access-control-request-headers"),
            );
            let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
            return status_page(stream, method, 204, &fields).await;
        }
        if !self.users.is_empty() && !self.users.admits(req.get_bytes("authorization")) {
            return status_page(
                stream,
                method,
                401,
                &[("www-authenticate", auth::CHALLENGE)],
            )
            .await;
        }
        if let Some(echo) = &self.ws_echo {
            if raw_path.split('?').next() == Some(echo.as_str()) {
                return websocket_echo(stream).await;
            }
        }
        let target = match path::resolve(raw_path) {
            Ok(t) => t,
            Err(Refused::NotAPath) => return status_page(stream, method, 400, &[]).await,
            Err(Refused::Unsafe) => return status_page(stream, method, 404, &[]).await,
        };
        // Dot files are neither listed nor served nor written without `--hidden`.
        if entries::is_refused_path(&target.relative, self.browse.hidden) {
            return status_page(stream, method, 404, &[]).await;
        }
        match method {
            "GET" | "HEAD" => self.get(stream, req, method, &target).await,
            "PUT" if self.upload.is_some() => {
                upload::put(&self.root, stream, req, &target, self.upload.unwrap_or(0)).await
            }
            "POST" if self.upload.is_some() => {
                let (limit, hidden) = (self.upload.unwrap_or(0), self.browse.hidden);
                form::post(&self.root, stream, req, &target, limit, hidden).await
            }
            _ => {
                let allow = if self.upload.is_some() {
                    "GET, HEAD, PUT"
                } else {
                    "GET, HEAD"
                };
                status_page(stream, method, 405, &[("allow", allow)]).await
            }
        }
    }

    async fn get(
        &self,
        stream: &Stream,
        req: &Headers,
        method: &str,
        target: &Target,
    ) -> onstream::Result<Sent> {
        let file = match self.root.open(&target.relative) {
            Ok(f) => f,
            Err(e) if self.spa && e.kind() == io::ErrorKind::NotFound => {
                return self.spa_index(stream, req, method, target, &e).await;
            }
            Err(e) => return io_error_page(stream, method, &e).await,
        };
        let md = file.metadata()?;
        if md.is_file() {
            if target.trailing_slash {
                return status_page(stream, method, 404, &[]).await;
            }
            return serve_file(stream, req, method, self, &target.relative, file, md).await;
        }
        if !md.is_dir() {
            return status_page(stream, method, 403, &[]).await;
        }
        if !target.trailing_slash {
            let mut location = encode_path(&target.decoded);
            location.push('/');
            if let Some((_, query)) = req.get(":path").unwrap_or("").split_once('?') {
                location.push('?');
                location.push_str(query);
            }
            return status_page(stream, method, 301, &[("location", &location)]).await;
        }
        if let Some(format) = archive::requested(req.get(":path").unwrap_or("")) {
            drop(file);
            return archive::respond(self, stream, method, target, format).await;
        }
        for name in &self.index {
            let index = target.relative.join(name);
            if let Ok(f) = self.root.open(&index) {
                let md = f.metadata()?;
                if md.is_file() {
                    return serve_file(stream, req, method, self, &index, f, md).await;
                }
            }
        }
        if !self.listing {
            return status_page(stream, method, 403, &[]).await;
        }
        let readme = (self.browse.readme)
            .then(|| readme::for_directory(&self.root, &target.relative))
            .flatten();
        let entries = match entries::read(&self.root, &target.relative, file, self.browse.hidden) {
            Ok(entries) => entries,
            Err(e) => return io_error_page(stream, method, &e).await,
        };
        let query = req
            .get(":path")
            .unwrap_or("")
            .split_once('?')
            .map(|(_, q)| q);
        let options = listing::Page {
            sort: listing::Sort::from_query(query),
            upload: self.upload.is_some(),
            readme: readme.as_deref(),
        };
        let page = listing::render_page(&target.relative, entries, &options);
        // A weak validator from the page itself: a browser revalidating a listing gets
        // 304 while the directory is unchanged (the page is made anew either way).
        let validators = Validators {
            etag: format!("W/\"{:x}\"", {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                page.hash(&mut h);
                h.finish()
            }),
            last_modified: None,
        };
        let mut head = Headers::new();
        head.append(":status", "200");
        head.append("etag", validators.etag.clone());
        head.append("cache-control", "no-cache");
        if let Some(sent) = answer_preconditions(stream, req, method, &validators, &head).await? {
            return Ok(sent);
        }
        head.append("content-security-policy", listing::CSP);
        head.append("content-type", "text/html; charset=utf-8");
        send_whole(stream, method, head, page.as_bytes()).await
    }
}

impl Site {
    /// `--spa`: the root's index page for a missing path without an extension, else the
    /// error `e` as usual.
    async fn spa_index(
        &self,
        stream: &Stream,
        req: &Headers,
        method: &str,
        target: &Target,
        e: &io::Error,
    ) -> onstream::Result<Sent> {
        if app::spa_fallback_applies(method, &target.relative) {
            for name in &self.index {
                if let Ok(f) = self.root.open(Path::new(name)) {
                    let md = f.metadata()?;
                    if md.is_file() {
                        return serve_file(stream, req, method, self, Path::new(name), f, md).await;
                    }
                }
            }
        }
        io_error_page(stream, method, e).await
    }
}

/// Serves a regular file: validators and preconditions, a precompressed sibling when the
/// client takes it, then the whole file, one range, or several as multipart/byteranges.
async fn serve_file(
    stream: &Stream,
    req: &Headers,
    method: &str,
    site: &Site,
    relative: &Path,
    file: File,
    md: Metadata,
) -> onstream::Result<Sent> {
    let get = |name: &str| {
        req.get_comma_separated(name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let content_type = content_type(relative);
    let (mut file, md, encoding) = precompressed(&site.root, relative, req, file, md);
    let on_the_fly = match (&site.compress, encoding) {
        (Some(settings), None) if !req.has("range") => compress::choose(
            settings,
            get("accept-encoding").as_deref(),
            &content_type,
            md.len(),
        ),
        _ => None,
    };
    let mut validators = Validators::from_metadata(&md);
    if let Some(enc) = encoding {
        validators = validators.with_suffix(enc.token);
    }
    if let Some(coding) = on_the_fly {
        validators = validators.with_suffix(coding.token());
        validators.etag.insert_str(0, "W/");
    }
    let mut head = Headers::new();
    head.append(":status", "200");
    head.append("etag", validators.etag.clone());
    if let Some(lm) = validators.last_modified_header() {
        head.append("last-modified", lm);
    }
    // Every file answer says it may vary by Accept-Encoding, whether or not a sibling
    // was found: a cache must see the same Vary on every answer for one URL (REDbot's
    // VARY_INCONSISTENT), and looking for siblings on every request would cost two
    // failed opens.
    head.append("vary", "accept-encoding");
    if let Some(sent) = answer_preconditions(stream, req, method, &validators, &head).await? {
        return Ok(sent);
    }
    if let Some(coding) = on_the_fly {
        head.append("content-type", content_type);
        let bytes = compress::send(stream, method, head, file, coding).await?;
        return Ok(Sent { status: 200, bytes });
    }
    head.append("accept-ranges", "bytes");
    if let Some(enc) = encoding {
        head.append("content-encoding", enc.token);
    }
    let len = md.len();
    let ranges = match req.get("range") {
        Some(h) if method == "GET" && conditional::if_range_allows(get, &validators) => {
            range::parse(h, len)
        }
        _ => Ranges::Full,
    };
    match ranges {
        Ranges::Full => {
            head.append("content-type", content_type);
            head.append("content-length", len.to_string());
            send_file(stream, method, head, file, 0..len).await
        }
        Ranges::Unsatisfiable => {
            let content_range = format!("bytes */{len}");
            status_page(stream, method, 416, &[("content-range", &content_range)]).await
        }
        Ranges::Satisfiable(ranges) if ranges.len() == 1 => {
            let r = ranges[0].clone();
            head.upsert(":status", "206");
            head.append("content-type", content_type);
            head.append("content-range", range::content_range(&r, len));
            head.append("content-length", (r.end - r.start).to_string());
            send_file(stream, method, head, file, r).await
        }
        Ranges::Satisfiable(ranges) => {
            let body = range::multipart(&ranges, len, Some(&content_type));
            head.upsert(":status", "206");
            head.append("content-type", body.content_type.clone());
            head.append("content-length", body.content_length.to_string());
            let head_only = method == "HEAD";
            write_head(stream, &head, head_only).await?;
            if head_only {
                return Ok(Sent {
                    status: 206,
                    bytes: 0,
                });
            }
            for part in &body.parts {
                stream.write_chunk(&part.head, false).await?;
                write_range(stream, &mut file, part.range.clone()).await?;
            }
            stream.write_chunk(&body.tail, true).await?;
            Ok(Sent {
                status: 206,
                bytes: body.content_length,
            })
        }
    }
}

/// Evaluates the request's preconditions against `validators`: `Some` when they decided
/// the answer (304 with `head`'s validators, or 412) and it was sent.
async fn answer_preconditions(
    stream: &Stream,
    req: &Headers,
    method: &str,
    validators: &Validators,
    head: &Headers,
) -> onstream::Result<Option<Sent>> {
    let get = |name: &str| {
        req.get_comma_separated(name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    match conditional::evaluate(method, get, validators) {
        Precondition::Proceed => Ok(None),
        Precondition::NotModified => {
            let mut head = head.clone();
            head.upsert(":status", "304");
            write_head(stream, &head, true).await?;
            Ok(Some(Sent {
                status: 304,
                bytes: 0,
            }))
        }
        Precondition::Failed => status_page(stream, method, 412, &[]).await.map(Some),
    }
}

/// A content coding we may find precompressed next to a file.
#[derive(Debug, Clone, Copy)]
struct Encoding {
    token: &'static str,
    extension: &'static str,
}

const PRECOMPRESSED: [Encoding; 2] = [
    Encoding {
        token: "br",
        extension: "br",
    },
    Encoding {
        token: "gzip",
        extension: "gz",
    },
];

/// The representation to send: the first precompressed sibling (`.br`, then `.gz`) that
/// the client accepts and that is a regular file, else the file itself. Siblings are
/// looked for only when the request has an `Accept-Encoding`.
fn precompressed(
    root: &Root,
    relative: &Path,
    req: &Headers,
    file: File,
    md: Metadata,
) -> (File, Metadata, Option<Encoding>) {
    let Some(accept) = req
        .get_comma_separated("accept-encoding")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
    else {
        return (file, md, None);
    };
    for enc in PRECOMPRESSED {
        if !accepts(&accept, enc.token) {
            continue;
        }
        let mut name = relative.as_os_str().to_owned();
        name.push(".");
        name.push(enc.extension);
        let Ok(sibling) = root.open(Path::new(&name)) else {
            continue;
        };
        match sibling.metadata() {
            Ok(sibling_md) if sibling_md.is_file() => return (sibling, sibling_md, Some(enc)),
            _ => continue,
        }
    }
    (file, md, None)
}

/// Whether an `Accept-Encoding` value allows `coding` (RFC 9110 §12.5.3): named with a
/// non-zero q, or covered by `*` with a non-zero q and not named with q=0.
fn accepts(accept_encoding: &str, coding: &str) -> bool {
    let mut star = None;
    for element in accept_encoding.split(',') {
        let mut params = element.split(';');
        let name = params.next().unwrap_or("").trim();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        let named = name.eq_ignore_ascii_case(coding)
            || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip"));
        if named {
            return q > 0.0;
        }
        if name == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

/// `Content-Type` by extension; text gets `charset=utf-8`, unknown extensions
/// `application/octet-stream` (nginx's `default_type`).
fn content_type(relative: &Path) -> String {
    let mime = mime_guess::from_path(relative).first_raw();
    match mime {
        Some(m) if m.starts_with("text/") || m == "application/javascript" => {
            format!("{m}; charset=utf-8")
        }
        Some(m) => m.to_owned(),
        None => "application/octet-stream".to_owned(),
    }
}

async fn send_file(
    stream: &Stream,
    method: &str,
    head: Headers,
    mut file: File,
    range: std::ops::Range<u64>,
) -> onstream::Result<Sent> {
    let status = head
        .get(":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    if method == "HEAD" || range.is_empty() {
        write_head(stream, &head, true).await?;
        return Ok(Sent { status, bytes: 0 });
    }
    write_head(stream, &head, false).await?;
    let bytes = range.end - range.start;
    if range.start > 0 {
        file.seek(SeekFrom::Start(range.start))?;
    }
    // sendfile(2) over cleartext HTTP/1.1 for large bodies; copied otherwise.
    stream.write_body_from_file(file, Some(bytes)).await?;
    Ok(Sent { status, bytes })
}

/// Writes `range` of `file` as one part of a multipart body.
async fn write_range(
    stream: &Stream,
    file: &mut File,
    range: std::ops::Range<u64>,
) -> onstream::Result<()> {
    if range.start > 0 {
        file.seek(SeekFrom::Start(range.start))?;
    }
    let mut left = range.end - range.start;
    while left > 0 {
        let want = left.min(CHUNK);
        // `read_to_end` fills spare capacity without zeroing it first, and `take` stops
        // it at `want` without an extra read.
        let mut buf = Vec::with_capacity(want as usize);
        (&mut *file).take(want).read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        left -= buf.len() as u64;
        stream.write_chunk(buf, false).await?;
    }
    Ok(())
}

/// How much of a multipart part is read per write: memory stays bounded.
const CHUNK: u64 = 64 * 1024;

/// Sends `body` whole (nothing for HEAD, with the length a GET would get).
async fn send_whole(
    stream: &Stream,
    method: &str,
    mut head: Headers,
    body: &[u8],
) -> onstream::Result<Sent> {
    let status = head
        .get(":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    head.append("content-length", body.len().to_string());
    if method == "HEAD" {
        write_head(stream, &head, true).await?;
        return Ok(Sent { status, bytes: 0 });
    }
    write_head(stream, &head, false).await?;
    stream.write_chunk(body, true).await?;
    Ok(Sent {
        status,
        bytes: body.len() as u64,
    })
}

/// A short plain-text page for a status, with `extra` header fields.
pub async fn status_page(
    stream: &Stream,
    method: &str,
    status: u16,
    extra: &[(&str, &str)],
) -> onstream::Result<Sent> {
    let mut head = Headers::new();
    head.append(":status", status.to_string());
    for (name, value) in extra {
        head.append(name, value.to_string());
    }
    if status == 304 || status == 204 {
        write_head(stream, &head, true).await?;
        return Ok(Sent { status, bytes: 0 });
    }
    head.append("content-type", "text/plain; charset=utf-8");
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body = format!("{status} {reason}\n");
    send_whole(stream, method, head, body.as_bytes()).await
}

/// 404 for what is not there, 403 for what may not be seen (permissions, a symlink out
/// of the root), 500 for the rest.
async fn io_error_page(stream: &Stream, method: &str, e: &io::Error) -> onstream::Result<Sent> {
    let status = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => 404,
        io::ErrorKind::PermissionDenied => 403,
        _ if beneath::escaped(e) => 403,
        _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => 414,
        _ => 500,
    };
    status_page(stream, method, status, &[]).await
}

/// Bytes of a decoded URL path that must be escaped again in a `Location`.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn encode_path(decoded: &str) -> String {
    utf8_percent_encode(decoded, PATH).to_string()
}

/// `--ws-echo`: every text or binary message is sent back.
async fn websocket_echo(stream: &Stream) -> onstream::Result<Sent> {
    let mut ws =
        match onstream::websocket::accept(stream, onstream::websocket::Options::new()).await {
            Ok(ws) => ws,
            // Not a valid WebSocket request: `accept` has answered it (400, or 426 for a
            // wrong version), and the log says so rather than blame the client for leaving.
            Err(e) if matches!(e.kind(), onstream::ErrorKind::Protocol(_)) => {
                let status = e.status().unwrap_or(400);
                return Ok(Sent { status, bytes: 0 });
            }
            Err(e) => return Err(e),
        };
    while let Some(msg) = ws.recv().await? {
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
    }
    Ok(Sent {
        status: 101,
        bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_follows_q_values_and_star() {
        assert!(accepts("gzip, br", "br"));
        assert!(accepts("gzip;q=0.5", "gzip"));
        assert!(!accepts("gzip;q=0", "gzip"));
        assert!(!accepts("deflate", "br"));
        assert!(accepts("*", "br"));
        assert!(!accepts("*, br;q=0", "br"));
        assert!(!accepts("*;q=0", "gzip"));
        assert!(accepts("x-gzip", "gzip"));
        assert!(!accepts("", "gzip"));
    }

    #[test]
    fn text_types_get_a_charset() {
        assert_eq!(
            content_type(Path::new("a.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(
            content_type(Path::new("a.unknownext")),
            "application/octet-stream"
        );
    }

    #[test]
    fn locations_are_escaped_again() {
        assert_eq!(encode_path("/a b/c#d?e"), "/a%20b/c%23d%3Fe");
        assert_eq!(encode_path("/ü"), "/%C3%BC");
    }
}
