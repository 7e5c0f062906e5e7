//! `--upload` from a browser or curl: POST of multipart/form-data (or a urlencoded
//! `mkdir`) to a directory's own URL. Each refusal leaves the directory as it was: no
//! file, no temporary file.

mod common;
use common::{Onstream, Response};
use std::{
    io::Write,
    net::TcpStream,
    os::unix::ffi::OsStrExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

const BOUNDARY: &str = "----onstreamTestBoundary7MA4YWxkTrZu0gW";

fn uploads(extra: &[&str]) -> Onstream {
    let mut args = vec!["--upload", "--quiet"];
    args.extend_from_slice(extra);
    Onstream::start(&args, |dir| {
        std::fs::create_dir(dir.join("root/docs")).unwrap();
        std::fs::write(dir.join("root/docs/existing.txt"), "old").unwrap();
        std::fs::create_dir(dir.join("root/docs/folder")).unwrap();
    })
}

/// Names in `dir`, dot files (temporary uploads) included.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const UNTOUCHED: [&str; 2] = ["existing.txt", "folder"];

/// One part: `(field name, Some(filename) for a file, data)`.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "content-disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     content-type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("content-disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post(s: &Onstream, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| *k == "content-type") {
        req.push_str(&format!(
            "content-type: multipart/form-data; boundary={BOUNDARY}\r\n"
        ));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    s.raw(&req)
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl runs (Debian: curl)");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (body.to_owned(), status.to_owned())
}

#[test]
fn curl_uploads_two_files_in_one_post_and_the_listing_shows_them() {
    let s = uploads(&[]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("one.txt"), "first file").unwrap();
    std::fs::write(tmp.path().join("two words.bin"), vec![7u8; 100_000]).unwrap();
    let url = format!("http://127.0.0.1:{}/docs/", s.port);
    let one = format!("file=@{}", tmp.path().join("one.txt").display());
    let two = format!("file=@{}", tmp.path().join("two words.bin").display());
    let (body, status) = curl(&["-F", &one, "-F", &two, &url]);
    assert_eq!(status, "201 1.1");
    assert_eq!(body, "one.txt\ntwo words.bin\n");
    let docs = s.root().join("docs");
    assert_eq!(std::fs::read(docs.join("one.txt")).unwrap(), b"first file");
    assert_eq!(
        std::fs::read(docs.join("two words.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(
        names(&docs),
        ["existing.txt", "folder", "one.txt", "two words.bin"]
    );
    let listing = s.get("/docs/").text();
    assert!(listing.contains(">one.txt</a>") && listing.contains(">two words.bin</a>"));
    // The same name again replaces the file, as PUT does.
    std::fs::write(tmp.path().join("one.txt"), "second version").unwrap();
    let (_, status) = curl(&["-F", &one, &url]);
    assert_eq!(status, "201 1.1");
    assert_eq!(
        std::fs::read(docs.join("one.txt")).unwrap(),
        b"second version"
    );
}

#[test]
fn curl_uploads_over_http2_and_makes_folders() {
    let s = uploads(&[]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("h2.txt"), "over h2c").unwrap();
    let url = format!("http://127.0.0.1:{}/docs/folder/", s.port);
    let file = format!("file=@{}", tmp.path().join("h2.txt").display());
    let (body, status) = curl(&["--http2-prior-knowledge", "-F", &file, &url]);
    assert_eq!((body.as_str(), status.as_str()), ("h2.txt\n", "201 2"));
    assert_eq!(
        std::fs::read(s.root().join("docs/folder/h2.txt")).unwrap(),
        b"over h2c"
    );
    // New folders: urlencoded (curl -d) and multipart, over HTTP/2 too.
    let (body, status) = curl(&["--http2-prior-knowledge", "-d", "mkdir=new+one", &url]);
    assert_eq!((body.as_str(), status.as_str()), ("new one/\n", "201 2"));
    let (body, status) = curl(&["-F", "mkdir=second", &url]);
    assert_eq!((body.as_str(), status.as_str()), ("second/\n", "201 1.1"));
    assert!(s.root().join("docs/folder/new one").is_dir());
    assert!(s.root().join("docs/folder/second").is_dir());
    let (_, status) = curl(&["-F", "mkdir=second", &url]);
    assert_eq!(status, "409 1.1", "taken");
}

#[test]
fn a_browser_form_post_is_answered_303_back_to_the_directory() {
    let s = uploads(&[]);
    let body = multipart(&[("file", Some("from form.txt"), b"form data")]);
    let r = post(
        &s,
        "/docs/",
        &body,
        &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/docs/"));
    assert_eq!(
        std::fs::read(s.root().join("docs/from form.txt")).unwrap(),
        b"form data"
    );
    // Posting to the directory without its slash works too; the answer has it.
    let body = multipart(&[("mkdir", None, b"made by form")]);
    let r = post(&s, "/docs", &body, &[("accept", "text/html")]);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/docs/"));
    assert!(s.root().join("docs/made by form").is_dir());
    // The way back is exact for a directory whose name is not UTF-8.
    std::fs::create_dir(s.root().join(std::ffi::OsStr::from_bytes(b"caf\xe9"))).unwrap();
    let body = multipart(&[("mkdir", None, b"inner")]);
    let r = post(&s, "/caf%E9/", &body, &[("accept", "text/html")]);
    assert_eq!(r.header("location"), Some("/caf%E9/"));
    // An empty file input (a form submitted with no file chosen) is no upload.
    let body = multipart(&[("file", Some(""), b"")]);
    assert_eq!(post(&s, "/docs/", &body, &[]).status, 400);
}

#[test]
fn bad_names_get_400_and_leave_nothing_even_after_a_good_part() {
    let s = uploads(&[]);
    let long = "x".repeat(256);
    for bad in [
        "../escape.txt",
        "a/b.txt",
        "..",
        ".",
        ".env",
        "a\\b",
        long.as_str(),
    ] {
        let body = multipart(&[
            ("file", Some("good.txt"), b"good"),
            ("file", Some(bad), b"bad"),
        ]);
        let r = post(&s, "/docs/", &body, &[]);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains("bad name"), "{bad}: {}", r.text());
        assert_eq!(names(&s.root().join("docs")), UNTOUCHED, "{bad}");
        let body = multipart(&[("mkdir", None, bad.as_bytes())]);
        assert_eq!(post(&s, "/docs/", &body, &[]).status, 400, "mkdir {bad}");
    }
    assert!(!s.dir.path().join("escape.txt").exists());
    // NUL can only come in a field's data (or an urlencoded body), never a header.
    let body = multipart(&[("mkdir", None, b"a\0b")]);
    assert_eq!(post(&s, "/docs/", &body, &[]).status, 400);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for bad in [
        "mkdir=a%00b",
        "mkdir=..",
        "mkdir=a%2Fb",
        "mkdir=",
        "other=1",
    ] {
        let r = post(&s, "/docs/", bad.as_bytes(), &form);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // A part with neither a filename nor the mkdir name does nothing: 400.
    let body = multipart(&[("comment", None, b"hello")]);
    assert_eq!(post(&s, "/docs/", &body, &[]).status, 400);
    assert_eq!(names(&s.root().join("docs")), UNTOUCHED);
    // A percent-escape in a name is just characters.
    let body = multipart(&[("file", Some("a%2Fb"), b"literal")]);
    assert_eq!(post(&s, "/docs/", &body, &[]).status, 201);
    assert_eq!(
        std::fs::read(s.root().join("docs/a%2Fb")).unwrap(),
        b"literal"
    );
    // A name taken by a directory.
    let body = multipart(&[("file", Some("folder"), b"x")]);
    assert_eq!(post(&s, "/docs/", &body, &[]).status, 409);
    assert!(s.root().join("docs/folder").is_dir());
}

#[test]
fn dot_file_names_are_taken_with_hidden() {
    let s = uploads(&["--hidden"]);
    let body = multipart(&[("file", Some(".env"), b"A=1")]);
    assert_eq!(post(&s, "/docs/", &body, &[]).status, 201);
    assert_eq!(s.get("/docs/.env").text(), "A=1");
}

#[test]
fn over_the_limit_gets_413_and_leaves_nothing() {
    let s = uploads(&["--max-upload-size", "10K"]);
    // Declared: refused before the body is read.
    let body = multipart(&[("file", Some("big"), &[b'x'; 20_000])]);
    let r = post(&s, "/docs/", &body, &[]);
    assert_eq!(r.status, 413);
    // Chunked, the limit crossed in the second file, after the first was whole.
    let body = multipart(&[
        ("file", Some("small"), &[b's'; 6000]),
        ("file", Some("big"), &[b'b'; 6000]),
    ]);
    let mut req = format!(
        "POST /docs/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\n\
         transfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for piece in body.chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = s.raw(&req);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(names(&s.root().join("docs")), UNTOUCHED);
}

#[test]
fn more_than_1000_parts_get_413_and_leave_nothing() {
    let s = uploads(&[]);
    let names_owned: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
    let parts: Vec<Part<'_>> = names_owned
        .iter()
        .map(|n| ("file", Some(n.as_str()), &b"x"[..]))
        .collect();
    let r = post(&s, "/docs/", &multipart(&parts), &[]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("more than 1000 parts"));
    assert_eq!(names(&s.root().join("docs")), UNTOUCHED);
}

#[test]
fn malformed_bodies_get_400_and_leave_nothing() {
    let s = uploads(&[]);
    // A file part whose closing boundary never comes.
    let mut body = format!(
        "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"open\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&[b'o'; 50_000]);
    assert_eq!(post(&s, "/docs/", &body, &[]).status, 400);
    // Part headers that never end: refused once 1 MiB is held, not buffered to the limit.
    let mut body =
        format!("--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"x\"\r\nx-long: ")
            .into_bytes();
    body.extend_from_slice(&vec![b'h'; 3 << 19]);
    let r = post(&s, "/docs/", &body, &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("headers never end"), "{}", r.text());
    // Not multipart at all, a multipart type without a boundary, another type.
    assert_eq!(post(&s, "/docs/", b"garbage", &[]).status, 400);
    let r = post(
        &s,
        "/docs/",
        b"x",
        &[("content-type", "multipart/form-data")],
    );
    assert_eq!(r.status, 400);
    let r = post(&s, "/docs/", b"{}", &[("content-type", "application/json")]);
    assert_eq!(r.status, 415);
    assert_eq!(names(&s.root().join("docs")), UNTOUCHED);
}

#[test]
fn a_client_that_stops_mid_part_leaves_nothing() {
    let s = uploads(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let head = format!(
        "POST /docs/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n\
         --{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&[b'c'; 100_000]).unwrap();
    // The temporary file exists while the part streams in...
    let docs = s.root().join("docs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&docs).len() == UNTOUCHED.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(names(&docs).len(), UNTOUCHED.len() + 1, "a temporary file");
    assert!(!s.get("/docs/").text().contains("onstream-upload"));
    // ...and is gone once the client is.
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&docs) != UNTOUCHED && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(names(&docs), UNTOUCHED);
    assert_eq!(s.get("/docs/").status, 200);
}

#[test]
fn post_goes_to_directories_only_and_only_with_upload() {
    let s = uploads(&[]);
    let body = multipart(&[("file", Some("x"), b"x")]);
    let r = post(&s, "/docs/existing.txt", &body, &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT"));
    assert_eq!(post(&s, "/missing/", &body, &[]).status, 405);
    assert_eq!(post(&s, "/.git/", &body, &[]).status, 404);
    let plain = Onstream::start(&["--quiet"], |dir| {
        std::fs::create_dir(dir.join("root/docs")).unwrap();
    });
    let r = post(&plain, "/docs/", &body, &[]);
    assert_eq!(r.status, 405);
    assert_eq!(names(&plain.root().join("docs")), Vec::<String>::new());
}

/// A POST that stops sending mid-part without closing: 408 after `--body-read-timeout`,
/// and the temporary file is removed.
#[test]
fn a_stalled_post_is_answered_408_and_leaves_nothing() {
    let s = uploads(&["--body-read-timeout", "0.3"]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /docs/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n\
         --{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"slow\"\r\n\r\nab"
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut out);
    assert_eq!(Response::parse(&out).status, 408);
    assert_eq!(names(&s.root().join("docs")), UNTOUCHED);
}

/// A POST of many files holds two descriptors while it streams in (the directory and
/// the file being written), not two per file received so far: 10 such requests of
/// 1,000 parts each used to hold 20,000 of the server's descriptors.
#[test]
fn a_post_of_many_files_holds_few_descriptors_while_it_streams() {
    let s = uploads(&[]);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.child.id()))
            .unwrap()
            .count()
    };
    let before = fds();
    let parts: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("f{i}.txt"), vec![b'x'; 10]))
        .collect();
    let refs: Vec<Part<'_>> = parts
        .iter()
        .map(|(name, data)| ("file", Some(name.as_str()), data.as_slice()))
        .collect();
    let body = multipart(&refs);
    // Everything but the closing boundary: the POST stays open with 500 files in.
    let cut = body.len() - format!("--{BOUNDARY}--\r\n").len();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let head = format!(
        "POST /docs/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body[..cut]).unwrap();
    let docs = s.root().join("docs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&docs).len() < UNTOUCHED.len() + 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        names(&docs).len(),
        UNTOUCHED.len() + 500,
        "500 temporary files"
    );
    let during = fds();
    assert!(
        during <= before + 8,
        "{before} descriptors before, {during} during"
    );
    c.write_all(&body[cut..]).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut c, &mut answer).unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(names(&docs).len(), UNTOUCHED.len() + 500);
}
