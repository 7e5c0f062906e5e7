//! Validators and preconditions (RFC 9110 §8.8, §13): the `ETag` and `Last-Modified` of a
//! file, and what `If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` and
//! `If-Range` make of a request for it.
//!
//! This module reads no file (it is handed the metadata) and sends nothing: it answers
//! "proceed, 304 or 412" and "may the Range be honoured", and the caller builds the response.
//! It knows nothing of byte ranges themselves (see `range.rs`).

use std::{
    fs::Metadata,
    os::unix::fs::MetadataExt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The first second that `httpdate` cannot format (year 10000); it panics from there on, as
/// it does before the epoch.
const HTTP_DATE_END: Duration = Duration::from_secs(253_402_300_800);

/// The validators of a file: a strong ETag and Last-Modified.
#[derive(Debug, Clone)]
pub struct Validators {
    /// The entity-tag with its quotes, e.g. `"5f3a-1a2b3c"`, as sent in `ETag`. Strong: two
    /// versions of a file with the same tag are taken to have the same bytes.
    pub etag: String,
    /// The modification time truncated to whole seconds, as an HTTP-date carries it, so that
    /// comparing it with a date from a request is exact. `None` when the file system does
    /// not say, or when the time cannot be an HTTP-date (before 1970 or after 9999).
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    /// Strong ETag from size, mtime (nanoseconds) and inode, hex, as nginx does (with inode
    /// added so a replaced file changes it).
    ///
    /// The tag is `"MTIME-SIZE-INODE"`. nginx's mtime is in seconds; nanoseconds narrow the
    /// window in which a file rewritten twice within a second, to the same size, keeps its tag.
    /// The inode catches a file replaced by rename (editors, `rsync`, deployments) with one of
    /// the same size and mtime (`cp -p`, `tar x`).
    ///
    /// A Last-Modified in the future is sent as now: RFC 9110 §8.8.2.1 asks for that, since a
    /// client would otherwise keep sending that future date back and get 304s for changes
    /// made before it.
    pub fn from_metadata(md: &Metadata) -> Validators {
        let mtime_ns = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
        let etag = format!("\"{:x}-{:x}-{:x}\"", mtime_ns, md.size(), md.ino());
        let last_modified = md
            .modified()
            .ok()
            .map(|modified| modified.min(SystemTime::now()))
            .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
            .filter(|since_epoch| *since_epoch < HTTP_DATE_END)
            .map(|since_epoch| UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()));
        Validators {
            etag,
            last_modified,
        }
    }

    /// The precompressed sibling's ETag must differ from the plain file's: `with_suffix("br")`
    /// → `"…-br"` inside the quotes.
    ///
    /// RFC 9110 §8.8.3.3: different content codings of one resource are different
    /// representations, so a cache or a resumed download must not take one for the other.
    pub fn with_suffix(&self, suffix: &str) -> Validators {
        let opaque = self.etag.strip_suffix('"').unwrap_or(&self.etag);
        Validators {
            etag: format!("{opaque}-{suffix}\""),
            last_modified: self.last_modified,
        }
    }

    /// HTTP-date for Last-Modified.
    pub fn last_modified_header(&self) -> Option<String> {
        self.last_modified.map(httpdate::fmt_http_date)
    }
}

/// What the preconditions of a request make of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Every precondition holds (or none was given): answer the request as usual.
    Proceed,
    /// 304 Not Modified: the client's cached copy is current (GET and HEAD only).
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// RFC 9110 §13.2.2's order: If-Match (strong comparison; `*` matches), else
/// If-Unmodified-Since; then If-None-Match (weak comparison; `*`), else If-Modified-Since
/// (only for GET/HEAD). Failed If-None-Match on GET/HEAD → NotModified, on other methods →
/// Failed. An unparseable date is ignored. `get(name)` returns the header value (names
/// lowercase) — joined with ", " if repeated.
///
/// The representation is taken to exist (`v` describes it), so `*` always matches.
pub fn evaluate(
    method: &str,
    get: impl Fn(&str) -> Option<String>,
    v: &Validators,
) -> Precondition {
    if let Some(if_match) = get("if-match") {
        if !list_matches(&if_match, &v.etag, strong_match) {
            return Precondition::Failed;
        }
    } else if let Some(since) = get("if-unmodified-since") {
        // §13.1.4: ignored when the date is invalid or the file has no modification date.
        if let (Some(since), Some(modified)) = (parse_date(&since), v.last_modified) {
            if modified > since {
                return Precondition::Failed;
            }
        }
    }

    let is_get_or_head = method == "GET" || method == "HEAD";
    if let Some(if_none_match) = get("if-none-match") {
        if list_matches(&if_none_match, &v.etag, weak_match) {
            return if is_get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if let Some(since) = get("if-modified-since").filter(|_| is_get_or_head) {
        // §13.1.3: ignored when the date is invalid or the file has no modification date.
        if let (Some(since), Some(modified)) = (parse_date(&since), v.last_modified) {
            if modified <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// Whether a Range may be honoured given If-Range (RFC 9110 §13.1.5): no If-Range → true; an
/// entity-tag → strong match; an HTTP-date → exactly equal to Last-Modified.
///
/// Anything else (a weak tag, a list, a malformed value, a date when the file has no
/// Last-Modified) is false: the client then gets the whole representation, which is always
/// correct, where a range of a different version would corrupt its copy.
pub fn if_range_allows(get: impl Fn(&str) -> Option<String>, v: &Validators) -> bool {
    let Some(if_range) = get("if-range") else {
        return true;
    };
    let if_range = if_range.trim_matches(is_ows);
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        let (Some(tag), Some(current)) = (
            EntityTag::parse_one(if_range),
            EntityTag::parse_one(&v.etag),
        ) else {
            return false;
        };
        return strong_match(&tag, &current);
    }
    match (parse_date(if_range), v.last_modified) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

/// One entity-tag (RFC 9110 §8.8.3): `[W/]"opaque"`.
#[derive(Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    /// Marked `W/`: equal tags promise equivalent content, not identical bytes.
    weak: bool,
    /// The characters between the quotes.
    opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    /// The entity-tag at the start of `input`, and what follows it; `None` if `input` does
    /// not start with one.
    fn parse_prefix(input: &'a str) -> Option<(EntityTag<'a>, &'a str)> {
        let (weak, quoted) = match input.strip_prefix("W/") {
            Some(quoted) => (true, quoted),
            None => (false, input),
        };
        let (opaque, rest) = quoted.strip_prefix('"')?.split_once('"')?;
        // etagc = %x21 / %x23-7E / obs-text: no whitespace, controls or DEL. A comma is one
        // of them, which is why lists are not simply split on commas.
        if !opaque
            .bytes()
            .all(|byte| byte == 0x21 || (0x23..=0x7e).contains(&byte) || byte >= 0x80)
        {
            return None;
        }
        Some((EntityTag { weak, opaque }, rest))
    }

    /// `input` if it is exactly one entity-tag (surrounding whitespace aside).
    fn parse_one(input: &'a str) -> Option<EntityTag<'a>> {
        match EntityTag::parse_prefix(input.trim_matches(is_ows))? {
            (tag, "") => Some(tag),
            _ => None,
        }
    }
}

/// §8.8.3.2: strong comparison, both tags strong and their opaque parts equal.
fn strong_match(a: &EntityTag<'_>, b: &EntityTag<'_>) -> bool {
    !a.weak && !b.weak && a.opaque == b.opaque
}

/// §8.8.3.2: weak comparison, opaque parts equal whatever the weakness.
fn weak_match(a: &EntityTag<'_>, b: &EntityTag<'_>) -> bool {
    a.opaque == b.opaque
}

/// Whether the `If-Match` / `If-None-Match` value `field` (`*` or a list of entity-tags)
/// matches the entity-tag `etag` under `compare`.
///
/// A list that stops parsing midway counts for the tags before the fault: a tag only matches
/// when it was read whole, so a malformed `If-None-Match` can never yield a wrong 304, and a
/// malformed `If-Match` fails safe with 412 unless an intact tag matched.
fn list_matches(
    field: &str,
    etag: &str,
    compare: fn(&EntityTag<'_>, &EntityTag<'_>) -> bool,
) -> bool {
    if field.trim_matches(is_ows) == "*" {
        return true;
    }
    let Some(current) = EntityTag::parse_one(etag) else {
        return false;
    };
    let mut rest = field;
    loop {
        // §5.6.1: empty list elements and whitespace around them are tolerated.
        rest = rest.trim_start_matches(|c| c == ',' || is_ows(c));
        if rest.is_empty() {
            return false;
        }
        let Some((tag, after)) = EntityTag::parse_prefix(rest) else {
            return false;
        };
        if compare(&tag, &current) {
            return true;
        }
        rest = after.trim_start_matches(is_ows);
        if !rest.is_empty() && !rest.starts_with(',') {
            return false;
        }
    }
}

/// An HTTP-date in any of its three forms (RFC 9110 §5.6.7), whitespace around it aside.
fn parse_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim_matches(is_ows)).ok()
}

/// Optional whitespace (RFC 9110 §5.6.3): spaces and horizontal tabs.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06 08:49:37 UTC, the RFC's example date.
    const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const EARLIER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const LATER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    fn validators() -> Validators {
        Validators {
            etag: "\"abc\"".to_string(),
            last_modified: Some(httpdate::parse_http_date(MODIFIED).unwrap()),
        }
    }

    /// A `get` over `headers`, as the serving code passes one.
    fn headers<'a>(headers: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            let values: Vec<&str> = headers
                .iter()
                .filter(|(header, _)| *header == name)
                .map(|(_, value)| *value)
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        }
    }

    fn check(method: &str, request: &[(&str, &str)], expected: Precondition) {
        assert_eq!(
            evaluate(method, headers(request), &validators()),
            expected,
            "{method} {request:?}"
        );
    }

    fn check_if_range(if_range: &str, expected: bool) {
        assert_eq!(
            if_range_allows(headers(&[("if-range", if_range)]), &validators()),
            expected,
            "If-Range: {if_range}"
        );
    }

    #[test]
    fn no_precondition_proceeds() {
        check("GET", &[], Precondition::Proceed);
        check("PUT", &[], Precondition::Proceed);
    }

    #[test]
    fn if_match_compares_strongly() {
        check("GET", &[("if-match", "\"abc\"")], Precondition::Proceed);
        check("PUT", &[("if-match", "\"abc\"")], Precondition::Proceed);
        check("GET", &[("if-match", "\"xyz\"")], Precondition::Failed);
        check("PUT", &[("if-match", "\"xyz\"")], Precondition::Failed);
        check("GET", &[("if-match", "W/\"abc\"")], Precondition::Failed);
        check("GET", &[("if-match", "abc")], Precondition::Failed);
    }

    #[test]
    fn if_match_star_matches_any_representation() {
        check("GET", &[("if-match", "*")], Precondition::Proceed);
        check("PUT", &[("if-match", " * ")], Precondition::Proceed);
    }

    #[test]
    fn if_match_takes_any_tag_of_a_list() {
        check(
            "PUT",
            &[("if-match", "\"x\", \"abc\"")],
            Precondition::Proceed,
        );
        check("PUT", &[("if-match", "\"x\",\"y\"")], Precondition::Failed);
        check(
            "PUT",
            &[("if-match", "W/\"x\" ,\t\"abc\"")],
            Precondition::Proceed,
        );
        check(
            "PUT",
            &[("if-match", ",, \"abc\" ,")],
            Precondition::Proceed,
        );
        // Repeated fields are one list.
        check(
            "PUT",
            &[("if-match", "\"x\""), ("if-match", "\"abc\"")],
            Precondition::Proceed,
        );
    }

    #[test]
    fn if_match_against_a_weak_tag_never_matches() {
        let weak = Validators {
            etag: "W/\"abc\"".to_string(),
            last_modified: None,
        };
        let request = [("if-match", "\"abc\"")];
        assert_eq!(
            evaluate("PUT", headers(&request), &weak),
            Precondition::Failed
        );
        let request = [("if-match", "W/\"abc\"")];
        assert_eq!(
            evaluate("PUT", headers(&request), &weak),
            Precondition::Failed
        );
    }

    #[test]
    fn if_unmodified_since_fails_only_after_a_change() {
        check(
            "PUT",
            &[("if-unmodified-since", MODIFIED)],
            Precondition::Proceed,
        );
        check(
            "PUT",
            &[("if-unmodified-since", LATER)],
            Precondition::Proceed,
        );
        check(
            "PUT",
            &[("if-unmodified-since", EARLIER)],
            Precondition::Failed,
        );
        check(
            "GET",
            &[("if-unmodified-since", EARLIER)],
            Precondition::Failed,
        );
    }

    #[test]
    fn if_unmodified_since_is_ignored_when_if_match_is_present() {
        let request = [("if-match", "\"abc\""), ("if-unmodified-since", EARLIER)];
        check("PUT", &request, Precondition::Proceed);
        let request = [("if-match", "\"xyz\""), ("if-unmodified-since", LATER)];
        check("PUT", &request, Precondition::Failed);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        check(
            "GET",
            &[("if-none-match", "\"abc\"")],
            Precondition::NotModified,
        );
        check(
            "HEAD",
            &[("if-none-match", "W/\"abc\"")],
            Precondition::NotModified,
        );
        check(
            "GET",
            &[("if-none-match", "\"xyz\"")],
            Precondition::Proceed,
        );
        check(
            "GET",
            &[("if-none-match", "\"x\", W/\"abc\"")],
            Precondition::NotModified,
        );
    }

    #[test]
    fn if_none_match_fails_methods_other_than_get_and_head() {
        check("PUT", &[("if-none-match", "\"abc\"")], Precondition::Failed);
        check("POST", &[("if-none-match", "*")], Precondition::Failed);
        check(
            "PUT",
            &[("if-none-match", "\"xyz\"")],
            Precondition::Proceed,
        );
        // Methods are case-sensitive: "get" is not GET.
        check("get", &[("if-none-match", "\"abc\"")], Precondition::Failed);
    }

    #[test]
    fn if_none_match_star_matches_any_representation() {
        check("GET", &[("if-none-match", "*")], Precondition::NotModified);
    }

    #[test]
    fn if_modified_since_is_not_modified_up_to_the_change() {
        check(
            "GET",
            &[("if-modified-since", MODIFIED)],
            Precondition::NotModified,
        );
        check(
            "HEAD",
            &[("if-modified-since", LATER)],
            Precondition::NotModified,
        );
        check(
            "GET",
            &[("if-modified-since", EARLIER)],
            Precondition::Proceed,
        );
    }

    #[test]
    fn if_modified_since_applies_to_get_and_head_only() {
        check(
            "PUT",
            &[("if-modified-since", MODIFIED)],
            Precondition::Proceed,
        );
        check(
            "POST",
            &[("if-modified-since", LATER)],
            Precondition::Proceed,
        );
    }

    #[test]
    fn if_modified_since_is_ignored_when_if_none_match_is_present() {
        let request = [("if-none-match", "\"xyz\""), ("if-modified-since", LATER)];
        check("GET", &request, Precondition::Proceed);
        let request = [("if-none-match", "\"abc\""), ("if-modified-since", EARLIER)];
        check("GET", &request, Precondition::NotModified);
    }

    #[test]
    fn if_match_is_evaluated_before_if_none_match() {
        let request = [("if-match", "\"xyz\""), ("if-none-match", "\"abc\"")];
        check("GET", &request, Precondition::Failed);
        let request = [("if-match", "\"abc\""), ("if-none-match", "\"abc\"")];
        check("GET", &request, Precondition::NotModified);
        let request = [
            ("if-unmodified-since", EARLIER),
            ("if-modified-since", LATER),
        ];
        check("GET", &request, Precondition::Failed);
    }

    #[test]
    fn all_dates_forms_are_understood() {
        check(
            "GET",
            &[("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")],
            Precondition::NotModified,
        );
        check(
            "GET",
            &[("if-modified-since", "Sun Nov  6 08:49:37 1994")],
            Precondition::NotModified,
        );
        check(
            "GET",
            &[("if-modified-since", " Sun, 06 Nov 1994 08:49:37 GMT\t")],
            Precondition::NotModified,
        );
    }

    #[test]
    fn unparseable_dates_are_ignored() {
        for date in [
            "yesterday",
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "1994-11-06T08:49:37Z",
        ] {
            check("GET", &[("if-modified-since", date)], Precondition::Proceed);
            check(
                "PUT",
                &[("if-unmodified-since", date)],
                Precondition::Proceed,
            );
        }
        // A repeated date field joins into a list, which is not a date.
        let request = [
            ("if-modified-since", MODIFIED),
            ("if-modified-since", MODIFIED),
        ];
        check("GET", &request, Precondition::Proceed);
    }

    #[test]
    fn dates_are_ignored_without_a_last_modified() {
        let undated = Validators {
            etag: "\"abc\"".to_string(),
            last_modified: None,
        };
        let request = [("if-modified-since", LATER)];
        assert_eq!(
            evaluate("GET", headers(&request), &undated),
            Precondition::Proceed
        );
        let request = [("if-unmodified-since", EARLIER)];
        assert_eq!(
            evaluate("PUT", headers(&request), &undated),
            Precondition::Proceed
        );
    }

    #[test]
    fn commas_inside_quotes_are_part_of_the_tag() {
        let comma = Validators {
            etag: "\"a,b\"".to_string(),
            last_modified: None,
        };
        let request = [("if-none-match", "\"a,b\"")];
        assert_eq!(
            evaluate("GET", headers(&request), &comma),
            Precondition::NotModified
        );
        let request = [("if-none-match", "\"a\", \"b\"")];
        assert_eq!(
            evaluate("GET", headers(&request), &comma),
            Precondition::Proceed
        );
        let request = [("if-none-match", "\"x\", \"a,b\"")];
        assert_eq!(
            evaluate("GET", headers(&request), &comma),
            Precondition::NotModified
        );
        let request = [("if-none-match", "W/\"a,b\"")];
        assert_eq!(
            evaluate("GET", headers(&request), &comma),
            Precondition::NotModified
        );
    }

    #[test]
    fn malformed_tag_lists_match_only_intact_tags_before_the_fault() {
        check("GET", &[("if-none-match", "abc")], Precondition::Proceed);
        check("GET", &[("if-none-match", "\"abc")], Precondition::Proceed);
        check(
            "GET",
            &[("if-none-match", "\"a bc\"")],
            Precondition::Proceed,
        );
        check(
            "GET",
            &[("if-none-match", "\"abc\"x")],
            Precondition::NotModified,
        );
        check(
            "GET",
            &[("if-none-match", "\"x\" \"abc\"")],
            Precondition::Proceed,
        );
        check(
            "GET",
            &[("if-none-match", "junk, \"abc\"")],
            Precondition::Proceed,
        );
        check(
            "GET",
            &[("if-none-match", "\"abc\", junk")],
            Precondition::NotModified,
        );
        check(
            "GET",
            &[("if-none-match", "w/\"abc\"")],
            Precondition::Proceed,
        );
        check(
            "GET",
            &[("if-none-match", "*, \"x\"")],
            Precondition::Proceed,
        );
        check(
            "PUT",
            &[("if-match", "\"x\", junk, \"abc\"")],
            Precondition::Failed,
        );
        check("PUT", &[("if-match", "")], Precondition::Failed);
        check("GET", &[("if-none-match", "")], Precondition::Proceed);
    }

    #[test]
    fn if_range_without_the_header_allows() {
        assert!(if_range_allows(headers(&[]), &validators()));
    }

    #[test]
    fn if_range_with_an_entity_tag_matches_strongly() {
        check_if_range("\"abc\"", true);
        check_if_range(" \"abc\" ", true);
        check_if_range("\"xyz\"", false);
        check_if_range("W/\"abc\"", false);
        check_if_range("\"abc\", \"xyz\"", false);
        check_if_range("\"abc", false);
    }

    #[test]
    fn if_range_with_a_date_matches_exactly() {
        check_if_range(MODIFIED, true);
        check_if_range("Sunday, 06-Nov-94 08:49:37 GMT", true);
        check_if_range(LATER, false);
        check_if_range(EARLIER, false);
        check_if_range("yesterday", false);
        check_if_range("*", false);
        let undated = Validators {
            etag: "\"abc\"".to_string(),
            last_modified: None,
        };
        assert!(!if_range_allows(
            headers(&[("if-range", MODIFIED)]),
            &undated
        ));
    }

    #[test]
    fn with_suffix_appends_inside_the_quotes() {
        let brotli = validators().with_suffix("br");
        assert_eq!(brotli.etag, "\"abc-br\"");
        assert_eq!(brotli.last_modified, validators().last_modified);
        let request = [("if-none-match", "\"abc\"")];
        assert_eq!(
            evaluate("GET", headers(&request), &brotli),
            Precondition::Proceed
        );
        let request = [("if-none-match", "\"abc-br\"")];
        assert_eq!(
            evaluate("GET", headers(&request), &brotli),
            Precondition::NotModified
        );
    }

    #[test]
    fn last_modified_header_is_an_imf_fixdate() {
        assert_eq!(
            validators().last_modified_header().as_deref(),
            Some(MODIFIED)
        );
        let undated = Validators {
            etag: "\"abc\"".to_string(),
            last_modified: None,
        };
        assert_eq!(undated.last_modified_header(), None);
    }

    fn file_with_mtime(
        dir: &std::path::Path,
        name: &str,
        contents: &[u8],
        mtime: SystemTime,
    ) -> Metadata {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(mtime).unwrap();
        std::fs::metadata(&path).unwrap()
    }

    #[test]
    fn from_metadata_tags_mtime_size_and_inode_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let mtime = UNIX_EPOCH + Duration::new(0x5f3a_0000, 0x1234);
        let md = file_with_mtime(dir.path(), "a", b"hello", mtime);
        let v = Validators::from_metadata(&md);
        let mtime_ns = 0x5f3a_0000u128 * 1_000_000_000 + 0x1234;
        assert_eq!(v.etag, format!("\"{mtime_ns:x}-5-{:x}\"", md.ino()));
        assert!(EntityTag::parse_one(&v.etag).is_some_and(|tag| !tag.weak));
        // Truncated to the second.
        assert_eq!(
            v.last_modified,
            Some(UNIX_EPOCH + Duration::from_secs(0x5f3a_0000))
        );
    }

    #[test]
    fn from_metadata_changes_with_each_of_mtime_size_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let mtime = UNIX_EPOCH + Duration::new(1_600_000_000, 500);
        let base = Validators::from_metadata(&file_with_mtime(dir.path(), "a", b"hello", mtime));
        let later = Validators::from_metadata(&file_with_mtime(
            dir.path(),
            "a",
            b"hello",
            mtime + Duration::from_nanos(1),
        ));
        let longer = Validators::from_metadata(&file_with_mtime(dir.path(), "a", b"hello!", mtime));
        let other_inode =
            Validators::from_metadata(&file_with_mtime(dir.path(), "b", b"hello", mtime));
        let again = Validators::from_metadata(&file_with_mtime(dir.path(), "a", b"hello", mtime));
        assert_eq!(base.etag, again.etag);
        for changed in [&later, &longer, &other_inode] {
            assert_ne!(base.etag, changed.etag);
        }
    }

    #[test]
    fn from_metadata_sends_a_future_mtime_as_now() {
        let dir = tempfile::tempdir().unwrap();
        let future = SystemTime::now() + Duration::from_secs(3600);
        let before = SystemTime::now() - Duration::from_secs(1);
        let v = Validators::from_metadata(&file_with_mtime(dir.path(), "a", b"", future));
        let last_modified = v.last_modified.unwrap();
        assert!(before <= last_modified && last_modified <= SystemTime::now());
    }

    #[test]
    fn from_metadata_has_no_last_modified_before_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let v = Validators::from_metadata(&file_with_mtime(
            dir.path(),
            "a",
            b"",
            UNIX_EPOCH - Duration::from_secs(10),
        ));
        assert_eq!(v.last_modified, None);
        assert_eq!(v.last_modified_header(), None);
        assert!(EntityTag::parse_one(&v.etag).is_some());
    }
}
