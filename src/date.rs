//! The `Date` of responses (RFC 9110 §6.6.1) as IMF-fixdate, formatted at most once a
//! second: formatting a date per response is measurable at 100k+ responses a second.

use std::{
    cell::Cell,
    time::{Duration, SystemTime},
};

/// An IMF-fixdate is always 29 bytes, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) type HttpDate = [u8; 29];

thread_local! {
    /// The second the cached date is for (its start, and the next second's), and the
    /// date. Kept as times rather than a count of seconds: two comparisons tell whether
    /// the date holds, where turning the clock into seconds cost a subtraction of times
    /// on every response.
    static CACHE: Cell<(SystemTime, SystemTime, HttpDate)> =
        const { Cell::new((SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, [0; 29])) };
}

/// The current date as IMF-fixdate.
pub(crate) fn now() -> HttpDate {
    let now = SystemTime::now();
    CACHE.with(|cache| {
        let (from, until, date) = cache.get();
        // A clock set back is caught by the first comparison.
        if from <= now && now < until {
            return date;
        }
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let text = httpdate::fmt_http_date(now);
        let mut fresh = [0; 29];
        if text.len() == fresh.len() {
            fresh.copy_from_slice(text.as_bytes());
            cache.set((from, from + Duration::from_secs(1), fresh));
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
