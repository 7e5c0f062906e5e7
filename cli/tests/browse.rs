//! The listing page as a browser without JavaScript gets it: breadcrumbs, sort links
//! (`?sort=name|size|time&order=asc|desc`), the filter box and the upload forms, and a
//! large directory.

mod common;
use common::Onstream;
use std::time::{Duration, SystemTime};

fn tree(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("a b/c")).unwrap();
        let now = SystemTime::now();
        for (name, size, age) in [("small", 1, 30), ("large", 3000, 20), ("medium", 200, 10)] {
            let path = root.join("a b").join(name);
            std::fs::write(&path, vec![b'x'; size]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(now - Duration::from_secs(age * 3600))
                .unwrap();
        }
    })
}

/// The names in the table of `path`'s listing, in order, without the parent link.
fn rows(s: &Onstream, path: &str) -> Vec<String> {
    let r = s.get(path);
    assert_eq!(r.status, 200, "{path}");
    let page = r.text();
    let body = &page[page.find("<tbody>").unwrap()..page.find("</tbody>").unwrap()];
    body.split("<a href=\"")
        .skip(1)
        .map(|rest| {
            let text = &rest[rest.find('>').unwrap() + 1..];
            text[..text.find("</a>").unwrap()].to_owned()
        })
        .filter(|name| name != "../")
        .collect()
}

#[test]
fn sort_links_order_by_name_size_and_time_both_ways() {
    let s = tree(&[]);
    let cases = [
        ("", ["c/", "large", "medium", "small"]),
        ("?sort=name&order=desc", ["c/", "small", "medium", "large"]),
        ("?sort=size&order=asc", ["c/", "small", "medium", "large"]),
        ("?sort=size&order=desc", ["c/", "large", "medium", "small"]),
        ("?sort=time&order=asc", ["c/", "small", "large", "medium"]),
        ("?sort=time&order=desc", ["c/", "medium", "large", "small"]),
    ];
    for (query, expected) in cases {
        assert_eq!(rows(&s, &format!("/a%20b/{query}")), expected, "{query}");
    }
    // The headers link to those queries; the current column's flips.
    let page = s.get("/a%20b/?sort=size&order=asc").text();
    assert!(
        page.contains("href=\"?sort=size&amp;order=desc\""),
        "{page}"
    );
    assert!(page.contains("href=\"?sort=name&amp;order=asc\""));
    assert!(page.contains("href=\"?sort=time&amp;order=asc\""));
}

#[test]
fn breadcrumbs_link_each_directory_of_the_path() {
    let s = tree(&[]);
    let page = s.get("/a%20b/c/").text();
    let h1 = &page[page.find("<h1>").unwrap()..page.find("</h1>").unwrap()];
    let hrefs: Vec<&str> = h1
        .split("href=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert_eq!(hrefs, ["/", "/a%20b/", "/a%20b/c/"]);
    for href in hrefs {
        assert_eq!(s.get(href).status, 200, "{href}");
    }
}

#[test]
fn the_page_is_usable_on_a_phone_and_without_script() {
    let s = tree(&[]);
    let r = s.get("/");
    let csp = r.header("content-security-policy").expect("a policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"));
    let page = r.text();
    assert!(page.contains("<meta name=\"viewport\" content=\"width=device-width"));
    assert!(page.contains("@media(max-width:30em)"));
    // The filter box is shown by the script only; without script nothing is broken.
    assert!(page.contains("<input id=\"filter\" type=\"search\""));
    assert!(!page.contains("<form"), "no upload form without --upload");
    let with_upload = Onstream::start(&["--upload"], |_| {});
    let page = with_upload.get("/").text();
    assert!(page.contains("<form id=\"upload\" method=\"post\" enctype=\"multipart/form-data\">"));
}

/// Not a timing test: the page of a directory this large is made at all, whole and in
/// order (sorting by keys computed once; no per-entry rescans).
#[test]
fn a_directory_of_30000_entries_is_listed_whole() {
    const N: usize = 30_000;
    let s = Onstream::start(&["--quiet"], |dir| {
        let big = dir.join("root/big");
        std::fs::create_dir(&big).unwrap();
        for i in 0..N {
            std::fs::File::create(big.join(format!("f{i:05}"))).unwrap();
        }
    });
    let names = rows(&s, "/big/?sort=name&order=desc");
    assert_eq!(names.len(), N);
    assert_eq!(names[0], format!("f{:05}", N - 1));
    assert_eq!(names[N - 1], "f00000");
}

fn with_readmes(args: &[&str]) -> Onstream {
    Onstream::start(args, |dir| {
        let root = dir.join("root");
        std::fs::write(
            root.join("README.md"),
            "# Welcome\n\nSee [the docs](docs/).\n\n<script>alert(1)</script>\n\n\
             [click](javascript:alert(2))\n",
        )
        .unwrap();
        // 1 GiB, sparse: never read, never rendered.
        std::fs::create_dir(root.join("huge")).unwrap();
        let huge = std::fs::File::create(root.join("huge/README.md")).unwrap();
        huge.set_len(1 << 30).unwrap();
        // A README that is a link out of the root is not shown.
        std::fs::write(dir.join("outside.md"), "# SECRET HEADING").unwrap();
        std::fs::create_dir(root.join("linked")).unwrap();
        std::os::unix::fs::symlink("../../outside.md", root.join("linked/README.md")).unwrap();
    })
}

#[test]
fn readme_renders_markdown_below_the_listing_without_its_html() {
    let s = with_readmes(&["--readme"]);
    let page = s.get("/").text();
    let table_end = page.find("</table>").unwrap();
    let heading = page.find("<h1>Welcome</h1>").expect("rendered");
    assert!(heading > table_end, "below the listing");
    assert!(page.contains("<a href=\"docs/\">the docs</a>"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("javascript:"));
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script"
    );

    let page = s.get("/huge/").text();
    assert!(
        page.contains("is larger than 1 MiB: not shown here"),
        "{page}"
    );
    let page = s.get("/linked/").text();
    assert!(!page.contains("SECRET"));
    assert!(!page.contains("class=\"readme\""));
}

#[test]
fn without_readme_no_readme_is_rendered() {
    let s = with_readmes(&[]);
    let page = s.get("/").text();
    assert!(!page.contains("<h1>Welcome</h1>"));
    assert!(page.contains(">README.md</a>"));
}
