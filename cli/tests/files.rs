//! Files: types, validators, conditional requests, byte ranges, precompressed siblings.

mod common;
use common::Onstream;

fn with_files(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        let root = dir.join("root");
        std::fs::write(root.join("hello.txt"), "Hello, World!\n").unwrap();
        std::fs::write(root.join("data.bin"), (0u8..=255).collect::<Vec<u8>>()).unwrap();
        std::fs::write(root.join("page.html"), "<p>plain</p>").unwrap();
        std::fs::write(root.join("page.html.gz"), "GZIPPED").unwrap();
        std::fs::write(root.join("page.html.br"), "BROTLI").unwrap();
        std::fs::write(root.join("empty"), "").unwrap();
    })
}

#[test]
fn get_sends_the_file_with_its_type_length_and_validators() {
    let s = with_files(&["--tls", "off"]);
    let r = s.get("/hello.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("14"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    assert!(r.header("last-modified").unwrap().ends_with(" GMT"));

    let r = s.get("/data.bin");
    assert_eq!(r.body, (0u8..=255).collect::<Vec<u8>>());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));

    let r = s.get("/empty");
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
}

#[test]
fn head_has_the_length_of_get_and_no_body() {
    let s = with_files(&[]);
    let r = s.request("HEAD", "/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("14"));
    assert!(r.body.is_empty());
}

#[test]
fn if_none_match_and_if_modified_since_give_304() {
    let s = with_files(&[]);
    let first = s.get("/hello.txt");
    let etag = first.header("etag").unwrap().to_owned();
    let lm = first.header("last-modified").unwrap().to_owned();

    let r = s.request("GET", "/hello.txt", &[("if-none-match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let weak = format!("W/{etag}");
    let r = s.request(
        "GET",
        "/hello.txt",
        &[("if-none-match", &format!("\"other\", {weak}"))],
    );
    assert_eq!(r.status, 304, "weak comparison for If-None-Match");

    let r = s.request("GET", "/hello.txt", &[("if-modified-since", &lm)]);
    assert_eq!(r.status, 304);

    // If-None-Match takes precedence over If-Modified-Since.
    let r = s.request(
        "GET",
        "/hello.txt",
        &[("if-none-match", "\"other\""), ("if-modified-since", &lm)],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn failed_if_match_and_if_unmodified_since_give_412() {
    let s = with_files(&[]);
    let r = s.request("GET", "/hello.txt", &[("if-match", "\"nope\"")]);
    assert_eq!(r.status, 412);
    let r = s.request(
        "GET",
        "/hello.txt",
        &[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    );
    assert_eq!(r.status, 412);
    let etag = s.get("/hello.txt").header("etag").unwrap().to_owned();
    assert_eq!(
        s.request("GET", "/hello.txt", &[("if-match", &etag)])
            .status,
        200
    );
    assert_eq!(
        s.request("GET", "/hello.txt", &[("if-match", "*")]).status,
        200
    );
}

#[test]
fn a_single_range_gives_206_with_content_range() {
    let s = with_files(&[]);
    let r = s.request("GET", "/data.bin", &[("range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/256"));
    assert_eq!(r.body, (10u8..20).collect::<Vec<u8>>());

    let r = s.request("GET", "/data.bin", &[("range", "bytes=-6")]);
    assert_eq!(r.header("content-range"), Some("bytes 250-255/256"));
    assert_eq!(r.body, (250u8..=255).collect::<Vec<u8>>());

    let r = s.request("GET", "/data.bin", &[("range", "bytes=200-")]);
    assert_eq!(r.body.len(), 56);
}

#[test]
fn several_ranges_give_multipart_byteranges() {
    let s = with_files(&[]);
    let r = s.request("GET", "/data.bin", &[("range", "bytes=0-1, 100-102")]);
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    assert_eq!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2);
    assert!(text.contains("Content-Range: bytes 0-1/256"), "{text}");
    assert!(text.contains("Content-Range: bytes 100-102/256"), "{text}");
    assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    let part = r
        .body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &r.body[i + 4..i + 6])
        .unwrap();
    assert_eq!(part, &[0, 1]);
}

#[test]
fn an_unsatisfiable_range_gives_416() {
    let s = with_files(&[]);
    let r = s.request("GET", "/data.bin", &[("range", "bytes=300-400")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */256"));
    // A header we cannot parse is ignored: the whole file.
    let r = s.request("GET", "/data.bin", &[("range", "bytes=oops")]);
    assert_eq!((r.status, r.body.len()), (200, 256));
}

#[test]
fn if_range_with_a_stale_validator_gives_the_whole_file() {
    let s = with_files(&[]);
    let etag = s.get("/data.bin").header("etag").unwrap().to_owned();
    let r = s.request(
        "GET",
        "/data.bin",
        &[("range", "bytes=0-0"), ("if-range", &etag)],
    );
    assert_eq!(r.status, 206);
    let r = s.request(
        "GET",
        "/data.bin",
        &[("range", "bytes=0-0"), ("if-range", "\"stale\"")],
    );
    assert_eq!((r.status, r.body.len()), (200, 256));
}

#[test]
fn precompressed_siblings_are_served_when_accepted() {
    let s = with_files(&[]);
    let r = s.request("GET", "/page.html", &[("accept-encoding", "gzip, br")]);
    assert_eq!(r.text(), "BROTLI");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let br_etag = r.header("etag").unwrap().to_owned();

    let r = s.request("GET", "/page.html", &[("accept-encoding", "gzip")]);
    assert_eq!(r.text(), "GZIPPED");
    assert_eq!(r.header("content-encoding"), Some("gzip"));

    let r = s.request(
        "GET",
        "/page.html",
        &[("accept-encoding", "br;q=0, gzip;q=0")],
    );
    assert_eq!(r.text(), "<p>plain</p>");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    assert_ne!(r.header("etag"), Some(br_etag.as_str()));

    let r = s.get("/page.html");
    assert_eq!(r.text(), "<p>plain</p>");
    // Every answer for a URL carries the same Vary, sibling or not.
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    assert_eq!(s.get("/hello.txt").header("vary"), Some("accept-encoding"));
}
