//! What listings show and what is served: dot files (`--hidden`), symlinks out of the
//! root (the defect 8: their targets' size and date leaked into listings, and
//! their links gave 403), `--follow-symlinks`, and entries the server would refuse.

mod common;
use common::Onstream;
use std::os::unix::fs::symlink;

/// 7 KiB, so its size would be recognisable in a listing.
const SECRET_SIZE: usize = 7 * 1024 + 3;

/// A root with dot files, links in and out of it, a dangling link and a socket, next
/// to a secret file and a secret directory.
fn tree(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        std::fs::write(dir.join("secret.txt"), "S".repeat(SECRET_SIZE)).unwrap();
        std::fs::create_dir(dir.join("secret-dir")).unwrap();
        std::fs::write(dir.join("secret-dir/inner.txt"), "inner secret").unwrap();
        let root = dir.join("root");
        std::fs::write(root.join("plain.txt"), "plain").unwrap();
        std::fs::write(root.join(".env"), "PASSWORD=hunter2").unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "[core]").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/.hidden"), "h").unwrap();
        symlink(dir.join("secret.txt"), root.join("abs-out")).unwrap();
        symlink("../secret.txt", root.join("rel-out")).unwrap();
        symlink("../secret-dir", root.join("dir-out")).unwrap();
        symlink("plain.txt", root.join("in-link")).unwrap();
        symlink("sub", root.join("in-dir")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
        std::os::unix::net::UnixListener::bind(root.join("a-socket")).unwrap();
    })
}

/// The names linked from a listing's table (directories with their `/`).
fn listed(s: &Onstream, path: &str) -> Vec<String> {
    let r = s.get(path);
    assert_eq!(r.status, 200, "{path}");
    let page = r.text();
    let body = &page[page.find("<tbody>").unwrap()..page.find("</tbody>").unwrap()];
    let mut names: Vec<String> = body
        .split("<a href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .filter(|href| href != "../")
        .collect();
    names.sort();
    names
}

#[test]
fn links_out_of_the_root_are_not_listed_and_leak_no_metadata() {
    let s = tree(&[]);
    let page = s.get("/").text();
    assert_eq!(listed(&s, "/"), ["in-dir/", "in-link", "plain.txt", "sub/"]);
    for leaked in [
        "abs-out",
        "rel-out",
        "dir-out",
        "dangling",
        "a-socket",
        "7.0 KiB",
        &SECRET_SIZE.to_string(),
    ] {
        assert!(!page.contains(leaked), "{leaked} in {page}");
    }
    // And every link listed is served.
    for href in listed(&s, "/") {
        assert_eq!(s.get(&format!("/{href}")).status, 200, "{href}");
    }
    for target in ["/abs-out", "/rel-out", "/dir-out/", "/dir-out/inner.txt"] {
        assert_eq!(s.get(target).status, 403, "{target}");
    }
}

#[test]
fn dot_files_are_neither_listed_nor_served_by_default() {
    let s = tree(&[]);
    assert!(!s.get("/").text().contains(".env"));
    assert_eq!(listed(&s, "/sub/"), Vec::<String>::new());
    for target in [
        "/.env",
        "/.git/",
        "/.git/config",
        "/.git",
        "/sub/.hidden",
        "/%2egit/config",
        "/sub/..%2f.env",
    ] {
        let r = s.get(target);
        assert_eq!(r.status, 404, "{target}");
        assert!(!r.text().contains("hunter2"));
    }
    let r = s.request("HEAD", "/.env", &[]);
    assert_eq!(r.status, 404);
}

#[test]
fn hidden_lists_and_serves_dot_files() {
    let s = tree(&["--hidden"]);
    assert_eq!(
        listed(&s, "/"),
        [".env", ".git/", "in-dir/", "in-link", "plain.txt", "sub/"]
    );
    assert_eq!(s.get("/.env").text(), "PASSWORD=hunter2");
    assert_eq!(s.get("/.git/config").text(), "[core]");
    assert_eq!(listed(&s, "/sub/"), [".hidden"]);
}

#[test]
fn follow_symlinks_serves_and_lists_links_out_of_the_root() {
    let s = tree(&["--follow-symlinks"]);
    assert_eq!(
        listed(&s, "/"),
        [
            "abs-out",
            "dir-out/",
            "in-dir/",
            "in-link",
            "plain.txt",
            "rel-out",
            "sub/"
        ]
    );
    assert!(s.get("/").text().contains("7.0 KiB"), "the target's size");
    assert_eq!(s.get("/abs-out").body.len(), SECRET_SIZE);
    assert_eq!(s.get("/dir-out/inner.txt").text(), "inner secret");
    // `..` in the request itself still cannot climb out.
    let r = s.raw(b"GET /../secret.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert_eq!(r.status, 404);
}

#[test]
fn partial_uploads_are_never_served_and_dot_files_never_written_without_hidden() {
    let s = tree(&["--hidden", "--upload"]);
    std::fs::write(s.root().join(".onstream-upload-1-1"), "partial").unwrap();
    assert_eq!(s.get("/.onstream-upload-1-1").status, 404);
    assert!(!s.get("/").text().contains("onstream-upload"));

    let s = tree(&["--upload"]);
    let r =
        s.raw(b"PUT /.env2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx");
    assert_eq!(r.status, 404);
    assert!(!s.root().join(".env2").exists());
    let r = s.raw(
        b"PUT /.git/hooks-x HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx",
    );
    assert_eq!(r.status, 404);
}
