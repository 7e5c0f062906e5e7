//! Directories: the slash redirect, index.html, the listing and its links, --no-listing.

mod common;
use common::Onstream;
use std::os::unix::ffi::OsStrExt;

const TRICKY: [&[u8]; 7] = [
    b"a b.txt",
    b"hash#name",
    b"what?.txt",
    b"100%.txt",
    "caf\u{e9} \u{1F600}.txt".as_bytes(),
    b"quote\"<tag>&amp",
    b"latin1-\xe9.bin",
];

fn with_tree(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        let root = dir.join("root");
        for name in TRICKY {
            let name = std::ffi::OsStr::from_bytes(name);
            std::fs::write(root.join(name), name.as_bytes()).unwrap();
        }
        std::fs::create_dir(root.join("sub dir")).unwrap();
        std::fs::write(root.join("sub dir/inner.txt"), "inner").unwrap();
        std::fs::create_dir(root.join("site")).unwrap();
        std::fs::write(root.join("site/index.html"), "<h1>index</h1>").unwrap();
    })
}

#[test]
fn a_directory_without_its_slash_is_redirected_with_the_query_kept() {
    let s = with_tree(&[]);
    let r = s.get("/sub%20dir?x=1");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub%20dir/?x=1"));
    // The form `//host` must never come out of a redirect (it would be another site).
    let r = s.get("//site");
    assert_eq!(r.header("location"), Some("/site/"));
}

#[test]
fn index_html_is_served_for_its_directory() {
    let s = with_tree(&[]);
    let r = s.get("/site/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<h1>index</h1>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
}

#[test]
fn the_listing_escapes_names_and_every_link_resolves_to_its_file() {
    let s = with_tree(&[]);
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(!page.contains("quote\"<tag>"), "names are escaped");
    assert!(page.contains("quote&quot;&lt;tag&gt;&amp;amp"), "{page}");
    assert!(
        page.find("sub dir/").unwrap() < page.find("a b.txt").unwrap(),
        "directories first"
    );

    let hrefs: Vec<String> = page
        .split("href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect();
    for name in TRICKY {
        let served: Vec<Vec<u8>> = hrefs
            .iter()
            .filter(|h| !h.ends_with('/'))
            .map(|h| s.get(&format!("/{h}")))
            .filter(|r| r.status == 200)
            .map(|r| r.body)
            .collect();
        assert!(
            served.iter().any(|body| body == name),
            "no link of the listing serves {:?} (links: {hrefs:?})",
            String::from_utf8_lossy(name)
        );
    }
    let sub = hrefs.iter().find(|h| h.starts_with("sub")).unwrap();
    let r = s.get(&format!("/{sub}"));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("inner.txt"));
    assert!(
        r.text().contains("href=\"../\""),
        "a parent link below the root"
    );
}

#[test]
fn head_of_a_listing_has_its_length_and_no_body() {
    let s = with_tree(&[]);
    let get = s.get("/");
    let head = s.request("HEAD", "/", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), get.header("content-length"));
}

#[test]
fn no_listing_answers_403_but_still_serves_index_html() {
    let s = with_tree(&["--no-listing"]);
    assert_eq!(s.get("/").status, 403);
    assert_eq!(s.get("/site/").status, 200);
}

#[test]
fn a_listing_revalidates_with_its_weak_etag() {
    let s = with_tree(&[]);
    let etag = s.get("/").header("etag").unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let r = s.request("GET", "/", &[("if-none-match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    // A new file changes the page, and so its validator.
    std::fs::write(s.root().join("new.txt"), "new").unwrap();
    let r = s.request("GET", "/", &[("if-none-match", &etag)]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("new.txt"));
}
