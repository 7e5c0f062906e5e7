//! TEMPORARY stand-in (Length only) until the real decoder lands.
use bytes::{BufMut, Bytes, BytesMut};
use super::parse::{BodyKind, ParseError};
use crate::headers::Headers;
pub(crate) enum Decoder { Length(u64) }
pub(crate) enum Decoded { Data(Bytes), NeedMore, Done { trailers: Option<Headers> } }
impl Decoder {
    pub fn new(kind: BodyKind, _max: usize) -> Decoder { match kind { BodyKind::Length(n) => Decoder::Length(n), _ => Decoder::Length(0) } }
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        let Decoder::Length(n) = self;
        if *n == 0 { return Ok(Decoded::Done { trailers: None }); }
        if buf.is_empty() { return Ok(Decoded::NeedMore); }
        let k = (*n).min(buf.len() as u64) as usize; *n -= k as u64;
        Ok(Decoded::Data(buf.split_to(k).freeze()))
    }
}
pub(crate) fn encode_chunk_header(dst: &mut BytesMut, len: usize) { dst.put_slice(format!("{len:x}\r\n").as_bytes()); }
pub(crate) fn encode_last_chunk(dst: &mut BytesMut, _t: Option<&Headers>) { dst.put_slice(b"0\r\n\r\n"); }
