//! The directory listing page: one small, self-contained HTML5 document (inline CSS, no
//! script, nothing fetched) that lists a directory's entries with their sizes and dates.
//!
//! This module reads no directory: the caller gathers the entries (and decides which to
//! show) and serves the page as `text/html; charset=utf-8`. What it owns is the two
//! encodings a file name goes through: HTML-escaped for display, percent-encoded from its
//! raw bytes for the link, so that every name, even one that is not UTF-8, links back to
//! itself.

use std::{
    ffi::OsString,
    fmt::Write as _,
    os::unix::ffi::OsStrExt,
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
h1{font-size:1.25em;overflow-wrap:anywhere}\
table{width:100%;border-collapse:collapse}\
th,td{padding:.3em .5em;text-align:left}\
tr+tr{border-top:1px solid #8884}\
td:first-child{overflow-wrap:anywhere}\
.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}\
a{text-decoration:none}a:hover{text-decoration:underline}\
footer{margin:1em 0;font-size:.8em;opacity:.6}\
@media(max-width:30em){.d{display:none}}";

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

/// The HTML page listing `entries` of the directory at URL path `dir_path` (percent-DECODED,
/// always starting and ending with '/', e.g. "/a b/ü/").
///
/// Directories come first, then files; each group sorted by name, case-insensitively and
/// then bytewise so the order is total and stable. Hidden (dot) files are listed like the
/// others: choosing what to show is the caller's business.
pub fn render(dir_path: &str, mut entries: Vec<Entry>) -> String {
    entries.sort_by_cached_key(|entry| {
        let name = entry.name.as_bytes();
        (
            !entry.is_dir,
            String::from_utf8_lossy(name).to_lowercase(),
            name.to_vec(),
        )
    });

    let title = escape_html(dir_path);
    let mut page = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Index of {title}</title>\n\
         <style>{STYLE}</style>\n\
         </head>\n\
         <body>\n\
         <h1>Index of {title}</h1>\n\
         <table>\n\
         <thead><tr><th>Name</th><th class=\"n\">Size</th><th class=\"d\">Modified (UTC)</th></tr></thead>\n\
         <tbody>\n"
    );
    if dir_path != "/" {
        page.push_str(
            "<tr><td><a href=\"../\">../</a></td><td class=\"n\"></td><td class=\"d\"></td></tr>\n",
        );
    }
    for entry in &entries {
        let slash = if entry.is_dir { "/" } else { "" };
        let href = percent_encode(entry.name.as_bytes(), SEGMENT);
        let name = escape_html(&String::from_utf8_lossy(entry.name.as_bytes()));
        let size = if entry.is_dir {
            "<td class=\"n\">-</td>".to_string()
        } else {
            format!(
                "<td class=\"n\" title=\"{} bytes\">{}</td>",
                entry.size,
                human_size(entry.size)
            )
        };
        let modified = entry.modified.map_or_else(|| "-".to_string(), utc_minute);
        // Writing to a String cannot fail.
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{href}{slash}\">{name}{slash}</a></td>{size}<td class=\"d\">{modified}</td></tr>"
        );
    }
    page.push_str("</tbody>\n</table>\n");
    page.push_str(crate::archive::LISTING_LINKS);
    page.push_str("<footer>onstream</footer>\n</body>\n</html>\n");
    page
}

/// `text` with the five characters that mean something in HTML, in text or in an attribute
/// (`&`, `<`, `>`, `"`, `'`), replaced by references.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `size` for a person: bytes under 1 KiB as they are (`512 B`), then one decimal in the
/// largest binary unit that keeps the number under 1024 (`1.2 KiB`, `3.0 MiB`).
///
/// Integer arithmetic, rounding half up, so that e.g. 1048575 bytes reads `1.0 MiB` and not
/// `1024.0 KiB`.
fn human_size(size: u64) -> String {
    if size < 1024 {
        return format!("{size} B");
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
    format!("{}.{} {}", tenths / 10, tenths % 10, SIZE_UNITS[unit_idx])
}

/// `time` in UTC to the minute, `YYYY-MM-DD HH:MM`.
fn utc_minute(time: SystemTime) -> String {
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
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        minute_of_day / 60,
        minute_of_day % 60
    )
}

/// The proleptic Gregorian (year, month, day) of the day `days` after 1970-01-01.
///
/// Howard Hinnant's `civil_from_days` (chrono-compatible, "chrono-Compatible Low-Level Date
/// Algorithms"): count in 400-year eras of 146097 days starting on March 1st, so the leap
/// day falls at the end of each year.
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (year, month, day)
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

    /// The hrefs of the page's links, in order, parent included.
    fn hrefs(page: &str) -> Vec<&str> {
        page.split("<a href=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect()
    }

    /// The text of the page's links, in order, parent included.
    fn link_texts(page: &str) -> Vec<&str> {
        page.split("<a href=\"")
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
        for external in ["<script", "<link", "src=", "http:", "https:", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn title_and_heading_name_the_directory_escaped() {
        let page = render("/a b/<x>&\"'/", vec![]);
        let escaped = "/a b/&lt;x&gt;&amp;&quot;&#39;/";
        assert!(page.contains(&format!("<title>Index of {escaped}</title>")));
        assert!(page.contains(&format!("<h1>Index of {escaped}</h1>")));
        let page = render("/ü/", vec![]);
        assert!(page.contains("<h1>Index of /ü/</h1>"));
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
