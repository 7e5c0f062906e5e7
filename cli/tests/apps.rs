//! Headers and web applications: `--header`, `--cors` (with preflight), `--spa`,
//! `--index`, `--no-cache` / `--cache-control`.

mod common;
#[path = "common/curl.rs"]
mod curl;

use common::Onstream;
use curl::curl;

fn app(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        let root = dir.join("root");
        std::fs::write(root.join("index.html"), "<p>the app</p>").unwrap();
        std::fs::write(root.join("app.js"), "console.log(1)").unwrap();
        std::fs::create_dir(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/index.htm"), "<p>docs htm</p>").unwrap();
        std::fs::write(root.join("docs/default.html"), "<p>docs default</p>").unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
    })
}

fn url(s: &Onstream, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", s.port)
}

#[test]
fn extra_headers_and_cache_control_go_on_every_response() {
    let s = app(&[
        "--header",
        "X-Frame-Options: DENY",
        "--header",
        "Content-Security-Policy: default-src 'self'",
        "--cache-control",
        "public, max-age=60",
    ]);
    let first = s.get("/app.js");
    let etag = first.header("etag").unwrap().to_owned();
    for r in [
        first,
        s.get("/missing"),
        s.get("/docs"),
        s.get("/empty/"),
        s.request("HEAD", "/index.html", &[]),
        s.request("GET", "/app.js", &[("if-none-match", &etag)]),
        s.request("GET", "/app.js", &[("range", "bytes=0-1")]),
        s.request("DELETE", "/app.js", &[]),
    ] {
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{}", r.status);
        assert_eq!(
            r.header("content-security-policy"),
            Some("default-src 'self'")
        );
        assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    }
    let r = curl(&["--http2-prior-knowledge"], &url(&s, "/app.js"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

#[test]
fn no_cache_replaces_every_cache_control() {
    let s = app(&["--no-cache"]);
    for path in ["/app.js", "/empty/", "/nope"] {
        assert_eq!(
            s.get(path).header("cache-control"),
            Some("no-cache"),
            "{path}"
        );
    }
    let s = app(&[]);
    assert_eq!(s.get("/app.js").header("cache-control"), None);
}

#[test]
fn bad_headers_exit_2_with_a_message() {
    common::assert_usage_errors(&[
        &["--header", "no colon"][..],
        &["--header", "bad name: x"],
        &["--header", "x: a\r\nInjected: 1"],
        &["--header", "Content-Length: 1"],
        &["--cache-control", "a\nb"],
        &["--no-cache", "--cache-control", "max-age=1"],
        &["--index", "a/b"],
    ]);
}

#[test]
fn cors_allows_any_origin_and_answers_preflights_before_auth() {
    let s = app(&["--cors", "--auth", "alice:secret"]);
    let r = curl(
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: http://example.com",
            "-H",
            "Access-Control-Request-Method: GET",
            "-H",
            "Access-Control-Request-Headers: authorization, x-token",
        ],
        &url(&s, "/app.js"),
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, x-token")
    );
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert!(r.body.is_empty());

    let r = curl(
        &["-u", "alice:secret", "-H", "Origin: http://example.com"],
        &url(&s, "/app.js"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = curl(&["--http2-prior-knowledge"], &url(&s, "/app.js"));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    let plain = app(&[]);
    let r = plain.request("OPTIONS", "/app.js", &[]);
    assert_eq!(r.status, 405, "no preflight without --cors");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn spa_serves_the_index_for_missing_paths_without_an_extension() {
    let s = app(&["--spa"]);
    for path in ["/dashboard", "/users/42/edit", "/docs/missing"] {
        let r = s.get(path);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "<p>the app</p>"),
            "{path}"
        );
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
    assert_eq!(s.request("HEAD", "/dashboard", &[]).status, 200);
    for path in ["/missing.js", "/img/logo.png"] {
        assert_eq!(s.get(path).status, 404, "{path}");
    }
    assert_eq!(
        s.get("/app.js").text(),
        "console.log(1)",
        "files are served"
    );
    assert_eq!(s.get("/../etc/passwd").status, 404);
    let r = curl(&["--http2-prior-knowledge"], &url(&s, "/deep/link"));
    assert_eq!((r.status, r.text().as_str()), (200, "<p>the app</p>"));

    let plain = app(&[]);
    assert_eq!(plain.get("/dashboard").status, 404);
}

#[test]
fn index_names_are_tried_in_order() {
    let s = app(&["--index", "default.html,index.htm", "--index", "index.html"]);
    assert_eq!(s.get("/docs/").text(), "<p>docs default</p>");
    assert_eq!(s.get("/").text(), "<p>the app</p>");
    let s = app(&["--index", "index.htm", "--no-listing"]);
    assert_eq!(s.get("/docs/").text(), "<p>docs htm</p>");
    assert_eq!(s.get("/").status, 403, "no index.htm at the root");
}
