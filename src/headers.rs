//! `Headers`: the ordered header multimap of a request or response, as lua-http's
//! `http.headers`.
//!
//! Design criteria (from `http/headers.lua`): a field may repeat, the order fields arrived in
//! is recoverable, each field carries a *never index* flag (HPACK's "never indexed" literal,
//! used for credentials), pseudo-headers (`:method`, `:path`, `:status`, …) stand before
//! regular fields, and names are lower-case. Names and values are kept as [`Bytes`], so a
//! request parsed from a socket buffer shares that buffer instead of copying each field.
//!
//! This module knows nothing about HTTP/1 or HTTP/2 framing; conversion to and from the
//! `http` crate's types is at the bottom.

use bytes::Bytes;
use smallvec::SmallVec;
use std::{
    fmt,
    sync::{Arc, OnceLock},
};

/// One header field: a lower-case name, a value and the never-index flag.
#[derive(Clone, PartialEq, Eq)]
pub struct Field {
    name: Bytes,
    value: Bytes,
    never_index: bool,
}

impl Field {
    /// The field's name, lower-case.
    pub fn name(&self) -> &str {
        // Names are validated as ASCII token characters (or ':' + token) when inserted.
        std::str::from_utf8(&self.name).unwrap_or("")
    }

    /// A field from a parser, whose name is known to be lower-case and valid and whose
    /// value is valid; `sensitive`: the peer marked it never-indexed.
    pub(crate) fn parsed(name: Bytes, value: Bytes, sensitive: bool) -> Field {
        let never_index = sensitive || is_credential(&name);
        Field {
            name,
            value,
            never_index,
        }
    }

    /// The name as bytes (no UTF-8 check: for code that compares or copies it).
    pub fn name_bytes(&self) -> &[u8] {
        &self.name
    }

    /// The field's value as text, or `None` when it is not valid UTF-8 (HTTP/1 allows
    /// obs-text bytes; use [`Field::value_bytes`] for those).
    pub fn value(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// The field's value as bytes.
    pub fn value_bytes(&self) -> &[u8] {
        &self.value
    }

    /// The value as a shared `Bytes` (a reference count, no copy).
    pub(crate) fn value_shared(&self) -> Bytes {
        self.value.clone()
    }

    /// Whether a compressing encoder (HPACK) must never index this field.
    pub fn never_index(&self) -> bool {
        self.never_index
    }
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?}",
            self.name(),
            String::from_utf8_lossy(&self.value)
        )?;
        if self.never_index {
            f.write_str(" (never index)")?;
        }
        Ok(())
    }
}

/// An ordered multimap of header fields, pseudo-headers first.
///
/// ```
/// use onstream::Headers;
///
/// let mut h = Headers::new();
/// h.append("content-type", "text/plain");
/// h.append(":status", "200"); // pseudo-headers are kept before regular fields
/// assert_eq!(h.get(":status"), Some("200"));
/// assert_eq!(h.iter().next().unwrap().name(), ":status");
/// ```
#[derive(Clone, Default)]
pub struct Headers {
    fields: Fields,
}

/// A header list's storage. A request's headers are shared: `Stream::get_headers` hands
/// them to every caller, and a reference count is far cheaper than copying each field
/// (and dropping the copy) per request. A list being built (a response) is a plain
/// vector: sharing would cost it an allocation it never uses.
#[derive(Clone)]
enum Fields {
    Owned(Vec<Field>),
    /// Copied out (only) when written to. A slice, not a vector: made in one allocation.
    Shared(Arc<[Field]>),
    /// An HTTP/1 request head as it arrived: see [`Packed`]. Copied out when written to.
    Packed(Arc<Packed>),
}

/// A parsed request head kept as its one buffer and where each field is in it. The
/// [`Field`]s (two shared `Bytes` each, with their reference counts) are made only when
/// the list is iterated; looking a field up by name (`get`, `has`: what handlers and the
/// server do with a request head) reads the buffer directly. Building and dropping the
/// fields of every request cost several hundred instructions of a small request's
/// handling, most of them for fields nobody asks for.
pub(crate) struct Packed {
    /// The head's bytes, names lower-cased.
    buf: Bytes,
    /// `:scheme`.
    scheme: &'static str,
    /// Where `:method`, `:path` and `:authority` (when the request has one) are.
    method: [u32; 2],
    path: [u32; 2],
    authority: Option<[u32; 2]>,
    /// The regular fields in arrival order: name start and end, value start and end.
    regular: SmallVec<[[u32; 4]; 12]>,
    /// The fields, once made.
    fields: OnceLock<Box<[Field]>>,
}

impl Packed {
    fn at(&self, [from, to]: [u32; 2]) -> &[u8] {
        &self.buf[from as usize..to as usize]
    }

    /// The pseudo-headers, in order, with where their values are (`None`: `:scheme`).
    fn pseudo(&self) -> impl Iterator<Item = (&'static str, Option<[u32; 2]>)> {
        [
            (":method", Some(Some(self.method))),
            (":scheme", Some(None)),
            (":path", Some(Some(self.path))),
            (":authority", self.authority.map(Some)),
        ]
        .into_iter()
        .filter_map(|(name, at)| Some((name, at?)))
    }

    /// The first value of `name`: pseudo-headers come first, and no regular name starts
    /// with `:`.
    fn find(&self, name: &str) -> Option<&[u8]> {
        if name.starts_with(':') {
            return if eq_name(b":method", name) {
                Some(self.at(self.method))
            } else if eq_name(b":path", name) {
                Some(self.at(self.path))
            } else if eq_name(b":authority", name) {
                self.authority.map(|at| self.at(at))
            } else if eq_name(b":scheme", name) {
                Some(self.scheme.as_bytes())
            } else {
                None
            };
        }
        self.regular
            .iter()
            .find(|&&[n0, n1, _, _]| eq_name(self.at([n0, n1]), name))
            .map(|&[_, _, v0, v1]| self.at([v0, v1]))
    }

    fn len(&self) -> usize {
        3 + usize::from(self.authority.is_some()) + self.regular.len()
    }

    fn fields(&self) -> &[Field] {
        self.fields.get_or_init(|| {
            let slice = |[from, to]: [u32; 2]| self.buf.slice(from as usize..to as usize);
            let pseudo = self.pseudo().map(|(name, at)| {
                let value = at.map_or(Bytes::from_static(self.scheme.as_bytes()), slice);
                Field::parsed(Bytes::from_static(name.as_bytes()), value, false)
            });
            let regular = self
                .regular
                .iter()
                .map(|&[n0, n1, v0, v1]| Field::parsed(slice([n0, n1]), slice([v0, v1]), false));
            pseudo.chain(regular).collect()
        })
    }
}

impl Default for Fields {
    fn default() -> Fields {
        Fields::Owned(Vec::new())
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for Headers {}

/// Names whose values are credentials: HPACK must never index them (RFC 7541 §7.1.3).
const NEVER_INDEX_BY_DEFAULT: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];

impl Headers {
    /// An empty header list.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// An empty header list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            fields: Fields::Owned(Vec::with_capacity(n)),
        }
    }

    /// Appends a field. The name is lower-cased; a pseudo-header goes after the other
    /// pseudo-headers and before the first regular field.
    ///
    /// # Panics
    ///
    /// If the name is empty or holds a character that no header name may hold, or the value
    /// holds CR, LF or NUL: those are caller bugs that would otherwise let one header smuggle
    /// another into the message.
    pub fn append(&mut self, name: impl AsRef<str>, value: impl Into<Bytes>) {
        let name = name.as_ref();
        let never_index = is_credential(name.as_bytes());
        self.append_with(name, value, never_index);
    }

    /// Appends a field with an explicit never-index flag. See [`Headers::append`].
    pub fn append_with(
        &mut self,
        name: impl AsRef<str>,
        value: impl Into<Bytes>,
        never_index: bool,
    ) {
        let name = name.as_ref();
        let value = value.into();
        assert!(valid_value(&value), "invalid header value for {name:?}");
        // A common name is valid by construction: only other names need the check.
        let name = if let Some(known) = common_name(name) {
            Bytes::from_static(known.as_bytes())
        } else if !valid_name(name.as_bytes()) {
            panic!("invalid header name {name:?}");
        } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Bytes::from(name.to_ascii_lowercase())
        } else {
            Bytes::copy_from_slice(name.as_bytes())
        };
        self.push_field(Field {
            name,
            value,
            never_index,
        });
    }

    /// Appends a field whose name is already known to be lower-case and valid, and whose
    /// value is valid: the parsers use it to avoid checking twice.
    pub(crate) fn push_unchecked(&mut self, name: Bytes, value: Bytes) {
        self.push_unchecked_with(name, value, false);
    }

    /// [`Headers::push_unchecked`] for a field the peer marked sensitive (HPACK
    /// never-indexed), which stays never-index.
    pub(crate) fn push_unchecked_with(&mut self, name: Bytes, value: Bytes, sensitive: bool) {
        self.push_field(Field::parsed(name, value, sensitive));
    }

    #[inline]
    fn push_field(&mut self, field: Field) {
        let fields = self.fields_mut();
        let is_pseudo = |f: &Field| f.name.first() == Some(&b':');
        // Parsers push pseudo-headers first, so the end is usually the right place.
        if is_pseudo(&field) && fields.last().is_some_and(|last| !is_pseudo(last)) {
            let at = fields
                .iter()
                .position(|f| !is_pseudo(f))
                .unwrap_or(fields.len());
            fields.insert(at, field);
        } else {
            fields.push(field);
        }
    }

    /// Replaces every field named `name` with one field (lua-http's `upsert`), keeping the
    /// position of the first one.
    pub fn upsert(&mut self, name: impl AsRef<str>, value: impl Into<Bytes>) {
        let name = name.as_ref();
        let lower = name.to_ascii_lowercase();
        match self.iter().position(|f| f.name == lower.as_bytes()) {
            Some(first) => {
                let value = value.into();
                assert!(valid_value(&value), "invalid header value for {name:?}");
                let fields = self.fields_mut();
                fields[first].value = value;
                let mut idx = 0;
                fields.retain(|f| {
                    idx += 1;
                    idx - 1 == first || f.name != lower.as_bytes()
                });
            }
            None => self.append(name, value),
        }
    }

    /// The first value of `name`, as text (see [`Field::value`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get_bytes(name)?).ok()
    }

    /// The first value of `name`, as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        match &self.fields {
            Fields::Packed(p) => p.find(name),
            _ => self.field(name).map(Field::value_bytes),
        }
    }

    /// Every value of `name`, in order (lua-http's `get_as_sequence`).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |f| eq_name(&f.name, name))
            .map(Field::value_bytes)
    }

    /// The values of `name` joined with `", "`, as a list-valued field would be combined
    /// (RFC 9110 §5.3); `None` when absent.
    pub fn get_comma_separated(&self, name: &str) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for v in self.get_all(name) {
            match &mut out {
                Some(o) => {
                    o.extend_from_slice(b", ");
                    o.extend_from_slice(v);
                }
                None => out = Some(v.to_vec()),
            }
        }
        out
    }

    /// The `:status` pseudo-header as a number: `None` when absent, an error when it is not
    /// three digits from 100 to 999.
    pub(crate) fn status(&self) -> Option<crate::Result<u16>> {
        match self.get_bytes(":status")? {
            &[a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => Some(Ok([a, b, c]
                .iter()
                .fold(0, |n, d| n * 10 + u16::from(d - b'0')))),
            _ => Some(Err(crate::Error::usage("invalid :status"))),
        }
    }

    /// Whether a field named `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Removes every field named `name`; returns whether any was removed.
    pub fn delete(&mut self, name: &str) -> bool {
        if !self.has(name) {
            return false;
        }
        self.fields_mut().retain(|f| !eq_name(&f.name, name));
        true
    }

    /// The fields, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Field> {
        self.fields().iter()
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        match &self.fields {
            Fields::Packed(p) => p.len(),
            _ => self.fields().len(),
        }
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.iter().find(|f| eq_name(&f.name, name))
    }

    fn fields(&self) -> &[Field] {
        match &self.fields {
            Fields::Owned(v) => v,
            Fields::Shared(v) => v,
            Fields::Packed(p) => p.fields(),
        }
    }

    #[inline]
    fn fields_mut(&mut self) -> &mut Vec<Field> {
        match &self.fields {
            Fields::Owned(_) => {}
            Fields::Shared(shared) => self.fields = Fields::Owned(shared.to_vec()),
            Fields::Packed(p) => self.fields = Fields::Owned(p.fields().to_vec()),
        }
        match &mut self.fields {
            Fields::Owned(v) => v,
            _ => unreachable!("made owned above"),
        }
    }

    /// A shared list (clones share it; it is copied only when written to) of the `n` fields `fields` yields, made in a
    /// single allocation: for a request's headers, which every `get_headers` call hands
    /// out. The parsers build it, so the fields come in order (pseudo-headers first) and
    /// are valid.
    ///
    /// # Panics
    ///
    /// If `fields` yields fewer than `n` fields (a bug in the caller).
    pub(crate) fn shared_from(n: usize, mut fields: impl Iterator<Item = Field>) -> Headers {
        // `Range` mapped is `TrustedLen`: the standard library then allocates the slice
        // once, at its final size, rather than collecting into a vector first.
        let fields: Arc<[Field]> = (0..n)
            .map(|_| fields.next().expect("as many fields as counted"))
            .collect();
        debug_assert!(fields
            .iter()
            .skip_while(|f| f.name.first() == Some(&b':'))
            .all(|f| f.name.first() != Some(&b':')));
        Headers {
            fields: Fields::Shared(fields),
        }
    }

    /// A request head's list (see [`Packed`]): `buf` holds the head with lower-case names;
    /// `:method`, `:path` and `:authority` are at the positions given, `regular` has the
    /// other fields' name and value positions in arrival order. The parser gives valid
    /// fields only.
    pub(crate) fn packed(
        buf: Bytes,
        scheme: &'static str,
        [method, path]: [[u32; 2]; 2],
        authority: Option<[u32; 2]>,
        regular: impl Iterator<Item = [u32; 4]>,
    ) -> Headers {
        let mut packed = Arc::new(Packed {
            buf,
            scheme,
            method,
            path,
            authority,
            regular: SmallVec::new(),
            fields: OnceLock::new(),
        });
        // Filled in place: built first, the positions were copied twice more.
        if let Some(p) = Arc::get_mut(&mut packed) {
            p.regular.extend(regular);
        }
        Headers {
            fields: Fields::Packed(packed),
        }
    }

    /// Converts the regular (non-pseudo) fields into an `http::HeaderMap`, keeping the
    /// never-index flag as `HeaderValue::set_sensitive`.
    pub fn to_header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.len());
        for f in self.iter().filter(|f| f.name.first() != Some(&b':')) {
            if let (Ok(n), Ok(mut v)) = (
                http::HeaderName::from_bytes(&f.name),
                http::HeaderValue::from_maybe_shared(f.value_shared()),
            ) {
                v.set_sensitive(f.never_index);
                map.append(n, v);
            }
        }
        map
    }

    /// Builds a header list from an `http::HeaderMap`; sensitive values become never-index.
    pub fn from_header_map(map: &http::HeaderMap) -> Headers {
        let mut h = Headers::with_capacity(map.len());
        for (n, v) in map {
            h.push_field(Field {
                name: Bytes::copy_from_slice(n.as_str().as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
                never_index: v.is_sensitive() || is_credential(n.as_str().as_bytes()),
            });
        }
        h
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Field;
    type IntoIter = std::slice::Iter<'a, Field>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The static spelling of names nearly every message has, so appending them allocates
/// nothing (a handler building a response appends two or three of them per request).
pub(crate) fn common_name(name: &str) -> Option<&'static str> {
    Some(match name {
        ":status" => ":status",
        ":method" => ":method",
        ":path" => ":path",
        ":scheme" => ":scheme",
        ":authority" => ":authority",
        ":protocol" => ":protocol",
        "content-type" => "content-type",
        "content-length" => "content-length",
        "date" => "date",
        "server" => "server",
        "host" => "host",
        "user-agent" => "user-agent",
        "accept" => "accept",
        "accept-encoding" => "accept-encoding",
        "cache-control" => "cache-control",
        "location" => "location",
        "etag" => "etag",
        "last-modified" => "last-modified",
        _ => return None,
    })
}

/// Whether `name` (in any letter case) is one of [`NEVER_INDEX_BY_DEFAULT`]. Called for
/// every field parsed, so most names are turned away by their length alone.
fn is_credential(name: &[u8]) -> bool {
    matches!(name.len(), 6 | 10 | 13 | 19)
        && NEVER_INDEX_BY_DEFAULT
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Stored names are lower-case, as looked-up names nearly always are: an exact comparison
/// settles most, at a fraction of a case-insensitive one's cost.
fn eq_name(stored: &[u8], wanted: &str) -> bool {
    let wanted = wanted.as_bytes();
    stored.len() == wanted.len() && (stored == wanted || stored.eq_ignore_ascii_case(wanted))
}

/// A token character (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`'
        | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

fn valid_name(name: &[u8]) -> bool {
    let token = name.strip_prefix(b":").unwrap_or(name);
    !token.is_empty() && token.iter().all(|&b| is_tchar(b))
}

fn valid_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_headers_stay_first_in_arrival_order() {
        let mut h = Headers::new();
        h.append("b", "1");
        h.append(":method", "GET");
        h.append("a", "2");
        h.append(":path", "/");
        let names: Vec<_> = h.iter().map(Field::name).collect();
        assert_eq!(names, [":method", ":path", "b", "a"]);
    }

    #[test]
    fn names_are_lower_cased_and_looked_up_case_insensitively() {
        let mut h = Headers::new();
        h.append("Content-Type", "text/plain");
        assert_eq!(h.iter().next().unwrap().name(), "content-type");
        assert_eq!(h.get("CONTENT-TYPE"), Some("text/plain"));
    }

    #[test]
    fn repeated_fields_keep_their_order_and_upsert_collapses_them() {
        let mut h = Headers::new();
        h.append("x", "1");
        h.append("y", "0");
        h.append("x", "2");
        assert_eq!(h.get_all("x").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        assert_eq!(h.get_comma_separated("x").unwrap(), b"1, 2");
        h.upsert("x", "3");
        assert_eq!(h.get_all("x").collect::<Vec<_>>(), [&b"3"[..]]);
        assert_eq!(h.iter().next().unwrap().name(), "x");
    }

    #[test]
    fn credentials_are_never_indexed_by_default() {
        let mut h = Headers::new();
        h.append("cookie", "a=b");
        h.append("accept", "*/*");
        assert!(h.iter().next().unwrap().never_index());
        assert!(!h.iter().nth(1).unwrap().never_index());
    }

    #[test]
    fn a_value_with_a_newline_is_a_caller_bug() {
        let appended = std::panic::catch_unwind(|| {
            Headers::new().append("x", "a\r\nInjected: yes");
        });
        assert!(appended.is_err());
    }

    proptest::proptest! {
        /// Whatever the order of appends: pseudo-headers come first, each group keeps its
        /// arrival order, and every value is found again under its name.
        #[test]
        fn appends_keep_order_with_pseudo_headers_first(
            fields in proptest::collection::vec(
                (proptest::bool::ANY, "[a-z][a-z0-9-]{0,8}", "[ -~]{0,12}"),
                0..20,
            )
        ) {
            let mut h = Headers::new();
            for (pseudo, name, value) in &fields {
                let name = if *pseudo { format!(":{name}") } else { name.clone() };
                h.append(&name, value.clone());
            }
            let got: Vec<(String, String)> = h
                .iter()
                .map(|f| (f.name().to_owned(), f.value().unwrap().to_owned()))
                .collect();
            let mut want: Vec<(String, String)> = fields
                .iter()
                .filter(|f| f.0)
                .map(|(_, n, v)| (format!(":{n}"), v.clone()))
                .collect();
            want.extend(fields.iter().filter(|f| !f.0).map(|(_, n, v)| (n.clone(), v.clone())));
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_shared_list_is_copied_when_written_and_the_other_clones_keep_theirs() {
        let request = Headers::shared_from(
            2,
            [
                Field::parsed(
                    Bytes::from_static(b":method"),
                    Bytes::from_static(b"GET"),
                    false,
                ),
                Field::parsed(
                    Bytes::from_static(b"accept"),
                    Bytes::from_static(b"*/*"),
                    false,
                ),
            ]
            .into_iter(),
        );
        let mut mine = request.clone();
        mine.append("x", "1");
        mine.upsert("accept", "text/html");
        assert!(mine.delete("x"));
        assert_eq!(request.get("accept"), Some("*/*"));
        assert_eq!(request.len(), 2);
        assert_eq!(mine.get("accept"), Some("text/html"));
        assert_ne!(mine, request);
        mine.upsert("accept", "*/*");
        assert_eq!(mine, request);
    }

    #[test]
    fn every_credential_name_is_recognised() {
        for name in NEVER_INDEX_BY_DEFAULT {
            assert!(is_credential(name.as_bytes()), "{name}");
            assert!(
                is_credential(name.to_ascii_uppercase().as_bytes()),
                "{name}"
            );
        }
        assert!(!is_credential(b"cookies"));
    }

    #[test]
    fn credential_names_are_never_indexed_in_any_case() {
        let mut h = Headers::new();
        h.append("Authorization", "Basic eDp5");
        assert!(h.iter().next().unwrap().never_index());
    }

    #[test]
    fn round_trips_through_http_header_map() {
        let mut h = Headers::new();
        h.append("a", "1");
        h.append("a", "2");
        h.append("authorization", "secret");
        let back = Headers::from_header_map(&h.to_header_map());
        assert_eq!(back, h);
    }
}
