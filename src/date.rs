//! The `Date` of responses (RFC 9110 §6.6.1) as IMF-fixdate, formatted at most once a
//! second: formatting a date per response is measurable at 100k+ responses a second.

use std::{cell::Cell, time::SystemTime};

/// An IMF-fixdate is always 29 bytes, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) type HttpDate = [u8; 29];

thread_local! {
    /// The second the cached date is for, and the date.
    static CACHE: Cell<(u64, HttpDate)> = const { Cell::new((u64::MAX, [0; 29])) };
}

/// The current date as IMF-fixdate.
pub(crate) fn now() -> HttpDate {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let (cached_secs, date) = cache.get();
        if cached_secs == secs {
            return date;
        }
        let text = httpdate::fmt_http_date(now);
        let mut fresh = [0; 29];
        if text.len() == fresh.len() {
            fresh.copy_from_slice(text.as_bytes());
            cache.set((secs, fresh));
        }
        fresh
    })
}

thread_local! {
    static HEADER_VALUE: std::cell::RefCell<(u64, Option<http::HeaderValue>)> =
        const { std::cell::RefCell::new((u64::MAX, None)) };
}

/// The current date as an `http::HeaderValue` (for HTTP/2 responses), also built once a
/// second; cloning it shares the bytes.
pub(crate) fn header_value() -> Option<http::HeaderValue> {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    HEADER_VALUE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.0 != secs || cache.1.is_none() {
            let value =
                http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&now())).ok();
            *cache = (secs, value);
        }
        cache.1.clone()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_is_an_imf_fixdate() {
        let date = super::now();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
