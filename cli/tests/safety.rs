//! Nothing outside the served root is ever sent: `..` in every spelling, backslashes,
//! NUL, symlinks that lead out. And methods the command does not serve get 405.

mod common;
use common::Onstream;

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";

fn with_secret_next_to_root(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
        let root = dir.join("root");
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("a/ok.txt"), "ok").unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("rel-link")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("a/ok.txt", root.join("inside-link")).unwrap();
    })
}

fn raw_get(s: &Onstream, target: &str) -> common::Response {
    s.raw(format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
}

#[test]
fn dot_dot_in_any_spelling_never_leaves_the_root() {
    let s = with_secret_next_to_root(&[]);
    for target in [
        "/../secret.txt",
        "/a/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/a/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/a/..%2F..%2Fsecret.txt",
        "/.%2e/secret.txt",
    ] {
        let r = raw_get(&s, target);
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{target}: {}",
            r.status
        );
        assert!(!r.text().contains(SECRET), "{target} leaked the file");
    }
    // A `..` that stays inside is fine.
    assert_eq!(raw_get(&s, "/a/../a/ok.txt").status, 200);
}

#[test]
fn backslashes_and_nul_bytes_are_refused() {
    let s = with_secret_next_to_root(&[]);
    for target in [
        "/a\\ok.txt",
        "/a%5cok.txt",
        "/..%5csecret.txt",
        "/a/ok.txt%00.png",
        "/%00",
    ] {
        let r = raw_get(&s, target);
        assert!(matches!(r.status, 400 | 404), "{target}: {}", r.status);
    }
}

#[test]
fn symlinks_out_of_the_root_are_refused_and_inside_ones_served() {
    let s = with_secret_next_to_root(&[]);
    for target in ["/abs-link", "/rel-link", "/up/secret.txt", "/up/"] {
        let r = raw_get(&s, target);
        assert_eq!(r.status, 403, "{target}");
        assert!(!r.text().contains(SECRET));
    }
    assert_eq!(raw_get(&s, "/inside-link").text(), "ok");
}

#[test]
fn other_methods_get_405_with_allow() {
    let s = with_secret_next_to_root(&[]);
    for method in ["POST", "DELETE", "PUT", "OPTIONS", "PATCH"] {
        let r = s.request(method, "/a/ok.txt", &[("content-length", "0")]);
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn a_request_target_that_is_not_a_path_gets_400() {
    let s = with_secret_next_to_root(&[]);
    assert_eq!(raw_get(&s, "*").status, 400);
}
