//! Compression on the fly: gzip, brotli and zstd for compressible files without a
//! precompressed sibling, as the client's Accept-Encoding asks; identity for ranges, small
//! and incompressible files; a weak ETag per coding; HEAD like GET; HTTP/2 too.

mod common;
#[path = "common/curl.rs"]
mod curl;

use common::Onstream;
use curl::curl;
use std::io::Read;

/// 200 KiB of text that compresses well but not trivially.
fn text() -> Vec<u8> {
    (0..20_000u32)
        .flat_map(|i| format!("line {i:>5} of the served text\n").into_bytes())
        .collect()
}

fn site(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        let root = dir.join("root");
        std::fs::write(root.join("big.txt"), text()).unwrap();
        std::fs::write(root.join("app.js"), text()).unwrap();
        std::fs::write(root.join("data.json"), text()).unwrap();
        std::fs::write(root.join("small.txt"), "tiny").unwrap();
        std::fs::write(root.join("photo.png"), text()).unwrap();
        std::fs::write(root.join("page.html"), text()).unwrap();
        std::fs::write(root.join("page.html.gz"), "GZIPPED SIBLING").unwrap();
    })
}

fn url(s: &Onstream, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", s.port)
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(bytes).unwrap(),
        other => panic!("{other}"),
    }
    out
}

#[test]
fn each_coding_decodes_to_the_exact_file_over_h1_and_h2() {
    let s = site(&[]);
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        for coding in ["gzip", "br", "zstd"] {
            for path in ["/big.txt", "/app.js", "/data.json"] {
                let accept = format!("Accept-Encoding: {coding}");
                // curl decodes (a real client's decoder) …
                let r = curl(&[version, "--compressed", "-H", &accept], &url(&s, path));
                assert_eq!(r.status, 200);
                assert_eq!(r.header("content-encoding"), Some(coding), "{path}");
                assert_eq!(r.header("content-length"), None);
                assert_eq!(r.header("vary"), Some("accept-encoding"));
                assert!(
                    r.body == text(),
                    "{version} {coding} {path}: curl's decoding differs"
                );
                // … and so does this test, from the raw bytes.
                let raw = curl(&[version, "-H", &accept], &url(&s, path));
                assert!(raw.body.len() < text().len() / 3, "{coding}: compressed");
                assert!(decode(coding, &raw.body) == text(), "{coding} {path}");
            }
        }
    }
}

#[test]
fn the_client_s_preference_and_q_values_are_followed() {
    let s = site(&[]);
    let coding = |accept: &str| {
        let r = s.request("HEAD", "/big.txt", &[("accept-encoding", accept)]);
        assert_eq!(r.status, 200);
        r.header("content-encoding").map(str::to_owned)
    };
    assert_eq!(coding("gzip, deflate, br, zstd").as_deref(), Some("br"));
    assert_eq!(coding("gzip, zstd").as_deref(), Some("zstd"));
    assert_eq!(coding("br;q=0.2, gzip;q=0.8").as_deref(), Some("gzip"));
    assert_eq!(coding("br;q=0, zstd;q=0, gzip;q=0"), None);
    assert_eq!(coding("*;q=0"), None);
    assert_eq!(coding("identity"), None);
    assert_eq!(coding("deflate"), None);
}

#[test]
fn small_incompressible_and_precompressed_files_are_not_compressed_again() {
    let s = site(&[]);
    let all = [("accept-encoding", "gzip, br, zstd")];
    let r = s.request("GET", "/small.txt", &all);
    assert_eq!(
        (r.header("content-encoding"), r.text().as_str()),
        (None, "tiny")
    );
    let r = s.request("GET", "/photo.png", &all);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, text());
    let r = s.request("GET", "/page.html", &all);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.text(), "GZIPPED SIBLING", "the sibling wins");
}

#[test]
fn ranges_are_answered_in_identity() {
    let s = site(&[]);
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(
            &[version, "--compressed", "-r", "100-199"],
            &url(&s, "/big.txt"),
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.body, &text()[100..200]);
        let etag = r.header("etag").unwrap();
        assert!(etag.starts_with('"'), "the identity ETag is strong: {etag}");
    }
}

#[test]
fn each_coding_has_its_own_weak_etag_that_if_none_match_understands() {
    let s = site(&[]);
    let get = |accept: &str, inm: Option<&str>| {
        let mut headers = vec![("accept-encoding", accept)];
        if let Some(tag) = inm {
            headers.push(("if-none-match", tag));
        }
        s.request("GET", "/big.txt", &headers)
    };
    let identity = get("identity", None).header("etag").unwrap().to_owned();
    let mut tags = vec![identity.clone()];
    for coding in ["gzip", "br", "zstd"] {
        let r = get(coding, None);
        let tag = r.header("etag").unwrap().to_owned();
        assert!(
            tag.starts_with("W/\"") && tag.ends_with(&format!("-{coding}\"")),
            "{tag}"
        );
        assert!(!tags.contains(&tag));
        tags.push(tag.clone());
        let r = get(coding, Some(&tag));
        assert_eq!(r.status, 304, "{coding}");
        assert_eq!(r.header("etag"), Some(tag.as_str()));
        assert!(r.body.is_empty());
        // Another representation's tag does not match.
        assert_eq!(get(coding, Some(&identity)).status, 200);
    }
    assert_eq!(get("identity", Some(&tags[1])).status, 200);
    assert_eq!(get("identity", Some(&identity)).status, 304);
    // Over HTTP/2 with curl too.
    let r = curl(
        &[
            "--http2-prior-knowledge",
            "-H",
            "Accept-Encoding: br",
            "-H",
            &format!("If-None-Match: {}", tags[2]),
        ],
        &url(&s, "/big.txt"),
    );
    assert_eq!(r.status, 304);
}

#[test]
fn head_gives_the_headers_of_get_and_no_body() {
    let s = site(&[]);
    let accept = [("accept-encoding", "zstd")];
    let head = s.request("HEAD", "/big.txt", &accept);
    let get = curl(&["-H", "Accept-Encoding: zstd"], &url(&s, "/big.txt"));
    assert!(head.body.is_empty());
    for name in [
        "content-encoding",
        "content-type",
        "etag",
        "vary",
        "last-modified",
        "content-length",
    ] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    let r = curl(
        &[
            "--http2-prior-knowledge",
            "-I",
            "-H",
            "Accept-Encoding: gzip",
        ],
        &url(&s, "/big.txt"),
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.body.is_empty());
}

#[test]
fn compress_off_and_the_size_cap_send_identity() {
    let s = site(&["--compress", "off"]);
    let r = s.request("GET", "/big.txt", &[("accept-encoding", "gzip, br, zstd")]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, text());
    let s = site(&["--compress-max-size", "100K"]);
    let r = s.request("GET", "/big.txt", &[("accept-encoding", "gzip")]);
    assert_eq!(
        r.header("content-encoding"),
        None,
        "200 KiB is over the cap"
    );
    assert_eq!(
        r.header("content-length"),
        Some(text().len().to_string().as_str())
    );
}
