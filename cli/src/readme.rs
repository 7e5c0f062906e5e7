//! `--readme`: a directory's README.md rendered below its listing, as GitHub and
//! miniserve do.
//!
//! A README is someone's file, shown on the server's page, so it is rendered as data:
//! raw HTML in it (blocks and inline) is shown as text, never passed through, and link
//! and image URLs with a scheme other than http, https or mailto (`javascript:`,
//! `data:`, `vbscript:`, …) become `#`. Markdown is rendered by pulldown-cmark
//! (CommonMark plus tables, strikethrough, task lists and footnotes), which escapes
//! all text and attributes. A README over [`MAX_README`] is not rendered; the page
//! says so and links it.

use std::{io::Read, path::Path};

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

use crate::beneath::Root;

/// The largest README rendered: rendering costs time and memory in proportion, on the
/// loop, for each listing request.
pub const MAX_README: u64 = 1 << 20;

/// The names looked for, in order.
const NAMES: [&str; 3] = ["README.md", "readme.md", "Readme.md"];

/// The HTML to show below the listing of `relative`, if it has a README (a regular
/// file, reached as a request for it would be).
pub fn for_directory(root: &Root, relative: &Path) -> Option<String> {
    for name in NAMES {
        let Ok(file) = root.open(&relative.join(name)) else {
            continue;
        };
        let Ok(md) = file.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        if md.len() > MAX_README {
            return Some(too_large(name));
        }
        let mut bytes = Vec::with_capacity(md.len() as usize);
        // `take`: a file that grew since its size was read is still cut at the bound.
        if file.take(MAX_README + 1).read_to_end(&mut bytes).is_err() {
            continue;
        }
        if bytes.len() as u64 > MAX_README {
            return Some(too_large(name));
        }
        return Some(render(&String::from_utf8_lossy(&bytes)));
    }
    None
}

fn too_large(name: &str) -> String {
    format!("<p><em><a href=\"{name}\">{name}</a> is larger than 1 MiB: not shown here.</em></p>\n")
}

/// `markdown` as HTML, with raw HTML escaped and unsafe URLs replaced.
pub fn render(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// `url` if it is relative or http(s)/mailto, else `#`.
///
/// Browsers drop ASCII tabs and newlines anywhere in a URL and leading control
/// characters and spaces before reading its scheme (WHATWG URL), so `java\tscript:` is
/// `javascript:`: the scheme is read the same way here.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let cleaned: String = url
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let cleaned = cleaned.trim_start_matches(|c: char| c <= ' ');
    let scheme_end = cleaned.find([':', '/', '?', '#']);
    match scheme_end {
        Some(i) if cleaned[i..].starts_with(':') => {
            let scheme = cleaned[..i].to_ascii_lowercase();
            if matches!(scheme.as_str(), "http" | "https" | "mailto") {
                url
            } else {
                CowStr::Borrowed("#")
            }
        }
        _ => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered() {
        let html =
            render("# Title\n\nSome *text* and `code`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<em>text</em>"));
        assert!(html.contains("<code>code</code>"));
        assert!(html.contains("<table>"));
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        for evil in [
            "<script>alert(1)</script>",
            "hello <img src=x onerror=alert(1)> there",
            "<div>\n<iframe src=\"https://evil\"></iframe>\n</div>",
            "<!-- comment --><style>body{display:none}</style>",
        ] {
            let html = render(evil);
            for tag in ["<script", "<img", "<iframe", "<style", "<div", "<!--"] {
                assert!(!html.contains(tag), "{evil:?} gave {html}");
            }
            assert!(html.contains("&lt;"), "{evil:?} gave {html}");
        }
    }

    #[test]
    fn unsafe_link_schemes_become_a_fragment() {
        for evil in [
            "[x](javascript:alert(1))",
            "[x](JavaScript:alert(1))",
            "[x](<java\tscript:alert(1)>)",
            "[x](&#106;avascript:alert(1))",
            "[x](data:text/html;base64,PHNjcmlwdD4=)",
            "![x](vbscript:msgbox)",
            "[x]\n\n[x]: javascript:alert(1)",
            "<javascript:alert(1)>",
        ] {
            let html = render(evil);
            let urls: Vec<&str> = ["href=\"", "src=\""]
                .iter()
                .flat_map(|attr| html.split(attr).skip(1))
                .map(|rest| &rest[..rest.find('"').unwrap()])
                .collect();
            assert!(!urls.is_empty(), "{evil:?} gave {html}");
            for url in urls {
                assert_eq!(url, "#", "{evil:?} gave {html}");
            }
        }
        for fine in [
            (
                "[x](https://example.org/a?b#c)",
                "https://example.org/a?b#c",
            ),
            ("[x](other.md)", "other.md"),
            ("[x](sub/dir/)", "sub/dir/"),
            ("[x](#section)", "#section"),
            ("[x](mailto:a@example.org)", "mailto:a@example.org"),
            ("[x](/a:b)", "/a:b"),
            ("[x](./a:b)", "./a:b"),
        ] {
            let html = render(fine.0);
            assert!(html.contains(&format!("href=\"{}\"", fine.1)), "{html}");
        }
    }
}
