//! The directory listing page: one small, self-contained HTML5 document (inline CSS and
//! script, nothing fetched) that lists a directory's entries with their sizes and dates.
//!
//! The page works without JavaScript: breadcrumbs link every segment of the path, the
//! column headers are sort links (`?sort=name|size|time&order=asc|desc`, as caddy's
//! browse template), and with `--upload` plain forms post files or a new folder's name
//! to the directory's own URL. The inline script only adds to it: a filter box over
//! the rows, and uploads by XHR with a progress bar, from the form or dropped anywhere
//! on the page.
//!
//! This module reads no directory: the caller gathers the entries (and decides which to
//! show) and serves the page as `text/html; charset=utf-8`. What it owns is the two
//! encodings a file name goes through: HTML-escaped for display, percent-encoded from its
//! raw bytes for the link, so that every name, even one that is not UTF-8, links back to
//! itself.

use std::{
    cmp::Reverse,
    ffi::OsString,
    fmt::Write as _,
    os::unix::ffi::OsStrExt,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What a link's path segment leaves as is: RFC 3986's unreserved characters. Everything else
/// is percent-encoded, including `/` (not in a name anyway), `%`, `?` and `#` (which would
/// end the path), and `:` (which would make `a:b` read as a URL with scheme `a`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The units of `human_size`, each 1024 times the one before.
const SIZE_UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// Inline so the page needs no second request and works offline. `color-scheme` lets the
/// browser pick its own light or dark colours; the date column gives way on narrow screens so
/// names keep room on a phone.
const STYLE: &str = "\
:root{color-scheme:light dark;font-family:system-ui,sans-serif}\
body{max-width:60em;margin:0 auto;padding:0 1em}\
body.drop{outline:3px dashed #48f;outline-offset:-6px}\
h1{font-size:1.25em;overflow-wrap:anywhere}\
table{width:100%;border-collapse:collapse}\
th,td{padding:.3em .5em;text-align:left}\
tr+tr{border-top:1px solid #8884}\
td:first-child{overflow-wrap:anywhere}\
.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}\
a{text-decoration:none}a:hover{text-decoration:underline}\
input,button{font:inherit;max-width:100%}\
.tools{display:flex;flex-wrap:wrap;gap:.5em;align-items:center;margin:.5em 0}\
.tools form{display:flex;flex-wrap:wrap;gap:.5em;align-items:center}\
#filter{flex:1 1 100%}\
.tools input[type=file]{max-width:17em}\
progress{width:10em}\
.readme{margin:2em 0;padding-top:1em;border-top:1px solid #8884;overflow-wrap:anywhere}\
.readme pre{overflow-x:auto}.readme img{max-width:100%}\
footer{margin:1em 0;font-size:.8em;opacity:.6}\
@media(max-width:30em){.d{display:none}body{padding:0 .5em}th,td{padding:.3em .25em}}";

/// The page's only script (progressive enhancement: nothing on the page needs it). It
/// shows the filter box, which hides the rows whose name does not contain what is
/// typed, and, with the upload form, sends files by XHR (from the form or dropped on the
/// page) with a progress bar, then reloads the listing. It must never contain the
/// characters `</` (it is inlined in a `<script>` element).
const SCRIPT: &str = "\
(function(){\
var f=document.getElementById('filter');\
if(f){f.hidden=false;f.addEventListener('input',function(){\
var q=f.value.toLowerCase(),rows=document.querySelectorAll('tbody tr');\
for(var i=0;i<rows.length;i++){var r=rows[i];\
r.hidden=q!==''&&r.cells[0].textContent.toLowerCase().indexOf(q)<0;}});}\
var u=document.getElementById('upload');if(!u)return;\
var input=u.querySelector('input[type=file]'),bar=u.querySelector('progress'),\
msg=document.getElementById('upload-status');\
function send(files){\
var data=new FormData();for(var i=0;i<files.length;i++)data.append('file',files[i],files[i].name);\
var x=new XMLHttpRequest();x.open('POST',location.pathname);\
x.setRequestHeader('accept','text/plain');\
bar.hidden=false;bar.value=0;msg.textContent='Uploading '+files.length+' file(s)';\
x.upload.onprogress=function(e){if(e.lengthComputable)bar.value=e.loaded/e.total;};\
x.onload=function(){if(x.status<300){msg.textContent='Done';location.reload();}\
else{bar.hidden=true;msg.textContent='Upload failed: '+x.responseText;}};\
x.onerror=function(){bar.hidden=true;msg.textContent='Upload failed';};\
x.send(data);}\
window.onstreamUpload=send;\
u.addEventListener('submit',function(e){e.preventDefault();if(input.files.length)send(input.files);});\
var b=document.body;\
document.addEventListener('dragover',function(e){e.preventDefault();b.classList.add('drop');});\
document.addEventListener('dragleave',function(){b.classList.remove('drop');});\
document.addEventListener('drop',function(e){e.preventDefault();b.classList.remove('drop');\
if(e.dataTransfer&&e.dataTransfer.files.length)send(e.dataTransfer.files);});\
})();";

/// The `Content-Security-Policy` of a listing page: nothing is loaded from elsewhere,
/// and the only script that may run is [`SCRIPT`] (by its SHA-256, base64), so even
/// markup that slipped into the page (a file name, a README) could run nothing. Images
/// (a README's) from the server itself only; forms and XHR post to the server only; the
/// page may be framed by the server's own pages only.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     script-src 'sha256-kLRr8oCg8QA5POacY2ilkrOLdJ6sDGunmcxk25XQ3c8='; img-src 'self' data:; connect-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'self'";

/// One entry of a directory, as the caller found it.
#[derive(Debug)]
pub struct Entry {
    /// The name in the directory, raw: it need not be UTF-8.
    pub name: OsString,
    /// Whether following the link lists a directory; it decides the group, the trailing `/`
    /// and whether a size is shown.
    pub is_dir: bool,
    /// Bytes; not shown for directories.
    pub size: u64,
    /// `None` shows as `-` (the file system does not say, or the entry vanished).
    pub modified: Option<SystemTime>,
}

/// The column a listing is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Column {
    #[default]
    Name,
    Size,
    Time,
}

/// The order of a listing's rows: `?sort=name|size|time&order=asc|desc`; anything else
/// (a missing or unknown value) is the default, by name ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
}

impl Sort {
    /// The order a request's query asks for (`None`: no query).
    pub fn from_query(query: Option<&str>) -> Sort {
        let mut sort = Sort::default();
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("sort", "name") => sort.column = Column::Name,
                ("sort", "size") => sort.column = Column::Size,
                ("sort", "time") => sort.column = Column::Time,
                ("order", "asc") => sort.descending = false,
                ("order", "desc") => sort.descending = true,
                _ => {}
            }
        }
        sort
    }
}

/// What the page offers beyond the entries.
#[derive(Debug, Default)]
pub struct Page<'a> {
    /// The order of the rows.
    pub sort: Sort,
    /// `--upload`: the upload and new-folder forms.
    pub upload: bool,
    /// HTML to show below the table (a rendered README, already safe).
    pub readme: Option<&'a str>,
}

/// The HTML page listing `entries` of the directory at URL path `dir_path` (percent-DECODED,
/// always starting and ending with '/', e.g. "/a b/ü/"), sorted by name.
#[cfg(test)]
pub fn render(dir_path: &str, entries: Vec<Entry>) -> String {
    let relative = Path::new(dir_path.trim_matches('/'));
    render_page(relative, entries, &Page::default())
}

/// The HTML page listing `entries` of the directory at `relative` (raw bytes, as under the
/// root: empty for the root itself).
///
/// Directories come first, then files, whatever the column. By name: case-insensitively
/// and then bytewise, so the order is total and stable; by size or time: ties (and
/// directories, by size) by name. Hidden (dot) files are listed like the others: choosing
/// what to show is the caller's business.
pub fn render_page(relative: &Path, mut entries: Vec<Entry>, page: &Page<'_>) -> String {
    sort_entries(&mut entries, page.sort);

    let mut dir_path = String::from("/");
    if !relative.as_os_str().is_empty() {
        dir_path.push_str(&String::from_utf8_lossy(relative.as_os_str().as_bytes()));
        dir_path.push('/');
    }
    let title = escape_html(&dir_path);
    let breadcrumbs = breadcrumbs(relative);
    let header = |column: Column, label: &str, class: &str| {
        // The current column's link flips its order; another column's starts ascending.
        let (order, arrow) = match (page.sort.column == column, page.sort.descending) {
            (true, false) => ("desc", " \u{25b2}"),
            (true, true) => ("asc", " \u{25bc}"),
            (false, _) => ("asc", ""),
        };
        let key = match column {
            Column::Name => "name",
            Column::Size => "size",
            Column::Time => "time",
        };
        format!("<th{class}><a href=\"?sort={key}&amp;order={order}\">{label}{arrow}</a></th>")
    };
    let name_th = header(Column::Name, "Name", "");
    let size_th = header(Column::Size, "Size", " class=\"n\"");
    let time_th = header(Column::Time, "Modified (UTC)", " class=\"d\"");
    let mut html = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Index of {title}</title>\n\
         <style>{STYLE}</style>\n\
         </head>\n\
         <body>\n\
         <h1>Index of {breadcrumbs}</h1>\n\
         <div class=\"tools\">\
         <input id=\"filter\" type=\"search\" placeholder=\"Filter\" aria-label=\"Filter the names\" hidden>"
    );
    if page.upload {
        html.push_str(
            "<form id=\"upload\" method=\"post\" enctype=\"multipart/form-data\">\
             <input type=\"file\" name=\"file\" multiple required aria-label=\"Files to upload\">\
             <button>Upload</button><small>or drop files on the page</small>\
             <progress max=\"1\" value=\"0\" hidden></progress>\
             <span id=\"upload-status\" role=\"status\"></span></form>\
             <form method=\"post\" enctype=\"multipart/form-data\">\
             <input name=\"mkdir\" placeholder=\"New folder\" required aria-label=\"New folder name\">\
             <button>Create folder</button></form>",
        );
    }
    let _ = write!(
        html,
        "</div>\n<table>\n\
         <thead><tr>{name_th}{size_th}{time_th}</tr></thead>\n\
         <tbody>\n"
    );
    if !relative.as_os_str().is_empty() {
        html.push_str(
            "<tr><td><a href=\"../\">../</a></td><td class=\"n\"></td><td class=\"d\"></td></tr>\n",
        );
    }
    // One row per entry, written straight into the page: with 1,000 entries, formatting
    // each piece into a String of its own first cost more than reading the directory.
    html.reserve(entries.len() * 160);
    for entry in &entries {
        let slash = if entry.is_dir { "/" } else { "" };
        html.push_str("<tr><td><a href=\"");
        html.extend(percent_encode(entry.name.as_bytes(), SEGMENT));
        html.push_str(slash);
        html.push_str("\">");
        push_escaped(&mut html, &String::from_utf8_lossy(entry.name.as_bytes()));
        html.push_str(slash);
        html.push_str("</a></td>");
        if entry.is_dir {
            html.push_str("<td class=\"n\">-</td>");
        } else {
            html.push_str("<td class=\"n\" title=\"");
            html.push_str(itoa::Buffer::new().format(entry.size));
            html.push_str(" bytes\">");
            push_human_size(&mut html, entry.size);
            html.push_str("</td>");
        }
        html.push_str("<td class=\"d\">");
        match entry.modified {
            Some(time) => push_utc_minute(&mut html, time),
            None => html.push('-'),
        }
        html.push_str("</td></tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
    html.push_str(crate::archive::LISTING_LINKS);
    if let Some(readme) = page.readme {
        let _ = write!(html, "<article class=\"readme\">\n{readme}</article>\n");
    }
    let _ = write!(
        html,
        "<footer>onstream</footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    );
    html
}

/// Sorts `entries` in `sort`'s order, directories first. Keys are computed once per entry
/// (lower-casing names is the costly part), then n log n comparisons.
fn sort_entries(entries: &mut [Entry], sort: Sort) {
    let key = |entry: &Entry| {
        let name = entry.name.as_bytes();
        let value = match sort.column {
            Column::Name => 0,
            Column::Size if entry.is_dir => 0,
            Column::Size => i128::from(entry.size),
            Column::Time => {
                entry
                    .modified
                    .map_or(i128::MIN, |t| match t.duration_since(UNIX_EPOCH) {
                        Ok(after) => after.as_nanos() as i128,
                        Err(before) => -(before.duration().as_nanos() as i128),
                    })
            }
        };
        (
            value,
            String::from_utf8_lossy(name).to_lowercase(),
            name.to_vec(),
        )
    };
    if sort.descending {
        entries.sort_by_cached_key(|entry| (!entry.is_dir, Reverse(key(entry))));
    } else {
        entries.sort_by_cached_key(|entry| (!entry.is_dir, key(entry)));
    }
}

/// The absolute URL path of the directory at `relative` (raw bytes): `/`, each segment
/// percent-encoded, then `/` — exact for any name, UTF-8 or not.
pub fn dir_href(relative: &Path) -> String {
    let mut href = String::from("/");
    for segment in relative.iter() {
        let _ = write!(href, "{}/", percent_encode(segment.as_bytes(), SEGMENT));
    }
    href
}

/// `/` then each segment of `relative` as a link to its directory, escaped.
fn breadcrumbs(relative: &Path) -> String {
    let mut html = String::from("<a href=\"/\">/</a>");
    let mut prefix = std::path::PathBuf::new();
    for segment in relative.iter() {
        prefix.push(segment);
        let _ = write!(
            html,
            "<a href=\"{}\">{}</a>/",
            dir_href(&prefix),
            escape_html(&String::from_utf8_lossy(segment.as_bytes()))
        );
    }
    html
}

/// `text` with the five characters that mean something in HTML, in text or in an attribute
/// (`&`, `<`, `>`, `"`, `'`), replaced by references.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    push_escaped(&mut escaped, text);
    escaped
}

/// [`escape_html`] onto the end of `out`, copying the runs between special characters
/// whole.
fn push_escaped(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// `size` for a person: bytes under 1 KiB as they are (`512 B`), then one decimal in the
/// largest binary unit that keeps the number under 1024 (`1.2 KiB`, `3.0 MiB`).
///
/// Integer arithmetic, rounding half up, so that e.g. 1048575 bytes reads `1.0 MiB` and not
/// `1024.0 KiB`.
#[cfg(test)]
fn human_size(size: u64) -> String {
    let mut text = String::new();
    push_human_size(&mut text, size);
    text
}

/// [`human_size`] onto the end of `out`.
fn push_human_size(out: &mut String, size: u64) {
    let mut digits = itoa::Buffer::new();
    if size < 1024 {
        out.push_str(digits.format(size));
        out.push_str(" B");
        return;
    }
    let size = u128::from(size);
    let mut unit_idx = 1;
    let tenths = loop {
        let unit = 1u128 << (10 * unit_idx);
        let tenths = (size * 10 + unit / 2) / unit;
        if tenths < 10240 || unit_idx == SIZE_UNITS.len() - 1 {
            break tenths;
        }
        unit_idx += 1;
    };
    out.push_str(digits.format(tenths / 10));
    out.push('.');
    out.push(char::from(b'0' + (tenths % 10) as u8));
    out.push(' ');
    out.push_str(SIZE_UNITS[unit_idx]);
}

/// `time` in UTC to the minute, `YYYY-MM-DD HH:MM`.
#[cfg(test)]
fn utc_minute(time: SystemTime) -> String {
    let mut text = String::new();
    push_utc_minute(&mut text, time);
    text
}

/// [`utc_minute`] onto the end of `out`.
fn push_utc_minute(out: &mut String, time: SystemTime) {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::from(after.as_secs()),
        // Rounded down, so that 1969-12-31 23:59:59.5 is still in that minute.
        Err(before) => {
            let before = before.duration();
            -i128::from(before.as_secs()) - i128::from(before.subsec_nanos() > 0)
        }
    };
    let days = secs.div_euclid(86_400);
    let minute_of_day = secs.rem_euclid(86_400) / 60;
    let (year, month, day) = crate::calendar::civil_from_days(days as i64);
    let two = |out: &mut String, n: u32| {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    if (0..10_000).contains(&year) {
        let year = year as u32;
        two(out, year / 100);
        two(out, year % 100);
    } else {
        let _ = write!(out, "{year:04}");
    }
    out.push('-');
    two(out, month);
    out.push('-');
    two(out, day);
    out.push(' ');
    two(out, (minute_of_day / 60) as u32);
    out.push(':');
    two(out, (minute_of_day % 60) as u32);
}

#[cfg(test)]
mod tests {
    use std::{os::unix::ffi::OsStringExt, time::Duration};

    use super::*;

    fn file(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            is_dir: false,
            size,
            modified: None,
        }
    }

    fn dir(name: &str) -> Entry {
        Entry {
            name: name.into(),
            is_dir: true,
            size: 4096,
            modified: None,
        }
    }

    /// The table's rows.
    fn tbody(page: &str) -> &str {
        &page[page.find("<tbody>").unwrap()..page.find("</tbody>").unwrap()]
    }

    /// The hrefs of the table's links, in order, parent included.
    fn hrefs(page: &str) -> Vec<&str> {
        tbody(page)
            .split("<a href=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect()
    }

    /// The text of the table's links, in order, parent included.
    fn link_texts(page: &str) -> Vec<&str> {
        tbody(page)
            .split("<a href=\"")
            .skip(1)
            .map(|rest| {
                let text = &rest[rest.find('>').unwrap() + 1..];
                &text[..text.find("</a>").unwrap()]
            })
            .collect()
    }

    /// What a server does to an href relative to the directory: percent-decode it.
    fn decode(href: &str) -> Vec<u8> {
        percent_encoding::percent_decode_str(href).collect()
    }

    #[test]
    fn page_is_a_self_contained_html5_document() {
        let page = render("/", vec![file("a", 1)]);
        assert!(page.starts_with("<!DOCTYPE html>\n<html"));
        assert!(page.ends_with("</html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(page
            .contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
        assert!(page.contains("<footer>onstream</footer>"));
        for external in ["<link", "src=", "http:", "https:", "url(", "<script src"] {
            assert!(!page.contains(external), "{external}");
        }
        assert_eq!(page.matches("<script").count(), 1, "one inline script");
        assert!(
            !SCRIPT.contains("</"),
            "the script cannot end its element early"
        );
    }

    #[test]
    fn title_and_heading_name_the_directory_escaped() {
        let page = render("/a b/<x>&\"'/", vec![]);
        let escaped = "/a b/&lt;x&gt;&amp;&quot;&#39;/";
        assert!(page.contains(&format!("<title>Index of {escaped}</title>")));
        assert!(page.contains(
            "<h1>Index of <a href=\"/\">/</a><a href=\"/a%20b/\">a b</a>/\
             <a href=\"/a%20b/%3Cx%3E%26%22%27/\">&lt;x&gt;&amp;&quot;&#39;</a>/</h1>"
        ));
        let page = render("/ü/", vec![]);
        assert!(page.contains("<h1>Index of <a href=\"/\">/</a><a href=\"/%C3%BC/\">ü</a>/</h1>"));
    }

    #[test]
    fn breadcrumbs_link_every_segment_by_its_raw_bytes() {
        let relative = OsString::from_vec(b"a/caf\xe9/c d".to_vec());
        let page = render_page(Path::new(&relative), vec![], &Page::default());
        assert!(page.contains(
            "<h1>Index of <a href=\"/\">/</a><a href=\"/a/\">a</a>/\
             <a href=\"/a/caf%E9/\">caf\u{fffd}</a>/<a href=\"/a/caf%E9/c%20d/\">c d</a>/</h1>"
        ));
    }

    fn sorted(query: &str, entries: Vec<Entry>) -> Vec<String> {
        let page = Page {
            sort: Sort::from_query(Some(query)),
            ..Page::default()
        };
        let html = render_page(Path::new(""), entries, &page);
        link_texts(&html).into_iter().map(str::to_owned).collect()
    }

    fn dated(name: &str, size: u64, secs: u64) -> Entry {
        Entry {
            modified: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            ..file(name, size)
        }
    }

    fn sample() -> Vec<Entry> {
        vec![
            dated("b", 30, 100),
            dated("a", 20, 300),
            dir("z"),
            dated("c", 10, 200),
            dir("y"),
            file("undated", 25),
        ]
    }

    #[test]
    fn rows_sort_by_each_column_both_ways_directories_first() {
        let cases = [
            ("", ["y/", "z/", "a", "b", "c", "undated"]),
            (
                "sort=name&order=desc",
                ["z/", "y/", "undated", "c", "b", "a"],
            ),
            ("sort=size", ["y/", "z/", "c", "a", "undated", "b"]),
            (
                "sort=size&order=desc",
                ["z/", "y/", "b", "undated", "a", "c"],
            ),
            (
                "sort=time&order=asc",
                ["y/", "z/", "undated", "b", "c", "a"],
            ),
            (
                "order=desc&sort=time",
                ["z/", "y/", "a", "c", "b", "undated"],
            ),
            (
                "sort=bogus&order=sideways",
                ["y/", "z/", "a", "b", "c", "undated"],
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(sorted(query, sample()), expected, "{query}");
        }
    }

    #[test]
    fn column_headers_are_sort_links_that_flip_the_current_order() {
        let page = |query: &str| {
            let page = Page {
                sort: Sort::from_query(Some(query)),
                ..Page::default()
            };
            render_page(Path::new(""), vec![], &page)
        };
        let html = page("");
        assert!(html.contains("<a href=\"?sort=name&amp;order=desc\">Name \u{25b2}</a>"));
        assert!(html.contains("<a href=\"?sort=size&amp;order=asc\">Size</a>"));
        assert!(html.contains("<a href=\"?sort=time&amp;order=asc\">Modified (UTC)</a>"));
        let html = page("sort=size&order=desc");
        assert!(html.contains("<a href=\"?sort=size&amp;order=asc\">Size \u{25bc}</a>"));
        assert!(html.contains("<a href=\"?sort=name&amp;order=asc\">Name</a>"));
    }

    #[test]
    fn the_policy_allows_exactly_the_page_script() {
        use aws_lc_rs::digest;
        use base64_free::encode;
        // Python: base64.b64encode(hashlib.sha256(b"abc").digest())
        let abc = digest::digest(&digest::SHA256, b"abc");
        assert_eq!(
            encode(abc.as_ref()),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(encode(b"ab"), "YWI=");
        let digest = digest::digest(&digest::SHA256, SCRIPT.as_bytes());
        let hash = encode(digest.as_ref());
        assert!(
            CSP.contains(&format!("'sha256-{hash}'")),
            "the script changed: its hash is now {hash}"
        );
    }

    /// Standard base64 with padding, as CSP hashes are written.
    mod base64_free {
        pub fn encode(bytes: &[u8]) -> String {
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..4 {
                    if i <= chunk.len() {
                        out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                    } else {
                        out.push('=');
                    }
                }
            }
            out
        }
    }

    #[test]
    fn the_filter_box_is_hidden_until_the_script_shows_it() {
        let html = render("/", vec![]);
        assert!(html.contains("<input id=\"filter\" type=\"search\""));
        assert!(html.contains(" hidden>"));
        assert!(SCRIPT.contains("f.hidden=false"));
    }

    #[test]
    fn upload_forms_appear_only_when_uploads_are_on() {
        assert!(!render("/", vec![]).contains("<form"));
        let page = Page {
            upload: true,
            ..Page::default()
        };
        let html = render_page(Path::new("d"), vec![], &page);
        assert!(
            html.contains("<form id=\"upload\" method=\"post\" enctype=\"multipart/form-data\">")
        );
        assert!(html.contains("<input type=\"file\" name=\"file\" multiple"));
        assert!(html.contains("<input name=\"mkdir\""));
        // No action: the forms post to the directory's own URL.
        assert!(!html.contains("action="));
    }

    #[test]
    fn the_root_has_no_parent_link() {
        let page = render("/", vec![file("a", 1)]);
        assert_eq!(hrefs(&page), ["a"]);
    }

    #[test]
    fn other_directories_link_their_parent_first() {
        let page = render("/sub/", vec![file("a", 1)]);
        assert_eq!(hrefs(&page), ["../", "a"]);
        let page = render("/sub/deeper/", vec![]);
        assert_eq!(hrefs(&page), ["../"]);
    }

    #[test]
    fn directories_come_first_with_a_trailing_slash() {
        let page = render("/", vec![file("a", 1), dir("z"), file("b", 1), dir("c")]);
        assert_eq!(link_texts(&page), ["c/", "z/", "a", "b"]);
        assert_eq!(hrefs(&page), ["c/", "z/", "a", "b"]);
    }

    #[test]
    fn names_sort_case_insensitively_then_bytewise() {
        let names = ["b", "B", "a", "C", "_x", "10", "9", "Ä", "ä", "A"];
        let page = render("/", names.iter().map(|name| file(name, 0)).collect());
        assert_eq!(
            link_texts(&page),
            ["10", "9", "_x", "A", "a", "B", "b", "C", "Ä", "ä"]
        );
    }

    #[test]
    fn hidden_files_are_listed() {
        let page = render("/", vec![file(".hidden", 1), dir(".git")]);
        assert_eq!(link_texts(&page), [".git/", ".hidden"]);
    }

    #[test]
    fn names_are_escaped_for_display() {
        let page = render("/", vec![file("a\"b<c>&'d", 1)]);
        assert_eq!(link_texts(&page), ["a&quot;b&lt;c&gt;&amp;&#39;d"]);
        assert!(!page.contains("<c>"));
    }

    #[test]
    fn hrefs_encode_everything_but_unreserved_characters() {
        let cases = [
            ("plain-name_1.0~x", "plain-name_1.0~x"),
            ("a b", "a%20b"),
            ("a#b", "a%23b"),
            ("a?b", "a%3Fb"),
            ("100%", "100%25"),
            ("a\"b<c>", "a%22b%3Cc%3E"),
            ("a:b", "a%3Ab"),
            ("a&b'c", "a%26b%27c"),
            ("a+b=c;d", "a%2Bb%3Dc%3Bd"),
            ("ü", "%C3%BC"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
        ];
        for (name, href) in cases {
            let page = render("/", vec![file(name, 1)]);
            assert_eq!(hrefs(&page), [href], "{name}");
            assert_eq!(decode(href), name.as_bytes(), "{name}");
        }
    }

    #[test]
    fn directory_hrefs_keep_the_slash_unencoded() {
        let page = render("/", vec![dir("a b")]);
        assert_eq!(hrefs(&page), ["a%20b/"]);
    }

    #[test]
    fn non_utf8_names_link_to_their_bytes_and_show_lossily() {
        let name = OsString::from_vec(b"caf\xe9 \xff.txt".to_vec());
        let page = render(
            "/",
            vec![Entry {
                name,
                is_dir: false,
                size: 1,
                modified: None,
            }],
        );
        assert_eq!(hrefs(&page), ["caf%E9%20%FF.txt"]);
        assert_eq!(decode(hrefs(&page)[0]), b"caf\xe9 \xff.txt");
        assert_eq!(link_texts(&page), ["caf\u{fffd} \u{fffd}.txt"]);
    }

    #[test]
    fn every_byte_round_trips_through_the_href() {
        let name: Vec<u8> = (1..=255u8).filter(|&byte| byte != b'/').collect();
        let href = percent_encode(&name, SEGMENT).to_string();
        assert_eq!(decode(&href), name);
        assert!(href
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~%".contains(&byte)));
    }

    #[test]
    fn sizes_are_human_readable() {
        let cases = [
            (0, "0 B"),
            (1, "1 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1229, "1.2 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024 - 1, "10.0 KiB"),
            (1024 * 1024 - 52, "1023.9 KiB"),
            (1024 * 1024 - 51, "1.0 MiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (3 * 1024 * 1024, "3.0 MiB"),
            (5 * (1 << 30) + (1 << 29), "5.5 GiB"),
            (1 << 40, "1.0 TiB"),
            (1 << 50, "1.0 PiB"),
            (1 << 60, "1.0 EiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (size, expected) in cases {
            assert_eq!(human_size(size), expected, "{size}");
        }
    }

    #[test]
    fn files_show_their_size_and_exact_bytes_directories_a_dash() {
        let page = render("/", vec![file("a", 1229), dir("d")]);
        assert!(page.contains("<td class=\"n\" title=\"1229 bytes\">1.2 KiB</td>"));
        assert!(page.contains("d/</a></td><td class=\"n\">-</td>"));
    }

    #[test]
    fn dates_are_utc_to_the_minute() {
        let cases = [
            (0, "1970-01-01 00:00"),
            (59, "1970-01-01 00:00"),
            (60, "1970-01-01 00:01"),
            (784_111_777, "1994-11-06 08:49"),
            (951_782_400, "2000-02-29 00:00"),
            (951_868_799, "2000-02-29 23:59"),
            (951_868_800, "2000-03-01 00:00"),
            (1_709_164_800, "2024-02-29 00:00"),
            (4_107_542_400, "2100-03-01 00:00"),
            (253_402_300_799, "9999-12-31 23:59"),
        ];
        for (secs, expected) in cases {
            assert_eq!(utc_minute(UNIX_EPOCH + Duration::from_secs(secs)), expected);
        }
    }

    #[test]
    fn dates_before_the_epoch_round_down() {
        assert_eq!(
            utc_minute(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31 23:59"
        );
        assert_eq!(
            utc_minute(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31 23:59"
        );
        assert_eq!(
            utc_minute(UNIX_EPOCH - Duration::from_secs(60)),
            "1969-12-31 23:59"
        );
        assert_eq!(
            utc_minute(UNIX_EPOCH - Duration::from_secs(61)),
            "1969-12-31 23:58"
        );
    }

    #[test]
    fn entries_show_their_date_or_a_dash() {
        let mut dated = file("dated", 1);
        dated.modified = Some(UNIX_EPOCH + Duration::from_secs(784_111_777));
        let page = render("/", vec![dated, file("undated", 1)]);
        assert!(page.contains("<td class=\"d\">1994-11-06 08:49</td>"));
        assert!(page.contains("<td class=\"d\">-</td>"));
    }
}
