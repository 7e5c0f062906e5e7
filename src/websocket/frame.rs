//! WebSocket frames as bytes (RFC 6455 §5.2): parsing the header of a client's frame,
//! encoding the header of a server's frame, masking, and close codes. Pure functions over
//! byte slices: no I/O, no panics on input; a header that has not fully arrived is
//! `Ok(None)`, a malformed one a [`FrameError`]. What a frame means in its message (order
//! of fragments, RSV1 and the extension) is `conn.rs`'s business.

use bytes::{BufMut, BytesMut};

/// FIN: the last frame of a message.
const FIN: u8 = 0x80;
/// RSV1: "compressed" under permessage-deflate (RFC 7692 §6).
const RSV1: u8 = 0x40;
/// RSV2 and RSV3: no extension we speak defines them.
const RSV2_3: u8 = 0x30;
/// The mask bit of the second byte: every client frame has it (RFC 6455 §5.1).
const MASKED: u8 = 0x80;
/// Control frames carry at most 125 bytes (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// The opcodes RFC 6455 §5.2 defines; the others are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes, allowed between the
    /// fragments of a message.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A client frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) rsv1: bool,
    pub(crate) opcode: OpCode,
    pub(crate) mask: [u8; 4],
    pub(crate) len: u64,
}

/// Why a header is refused; each is a protocol error (close code 1002).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// RSV2 or RSV3 set.
    ReservedBits,
    /// An opcode RFC 6455 reserves (3-7, 11-15).
    ReservedOpcode,
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame longer than 125 bytes.
    ControlTooLong,
    /// A client frame without a mask (RFC 6455 §5.1: the server MUST close).
    Unmasked,
    /// A 64-bit length with its most significant bit set.
    BadLength,
}

impl FrameError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            FrameError::ReservedBits => "WebSocket frame with RSV2 or RSV3 set",
            FrameError::ReservedOpcode => "WebSocket frame with a reserved opcode",
            FrameError::FragmentedControl => "fragmented WebSocket control frame",
            FrameError::ControlTooLong => "WebSocket control frame over 125 bytes",
            FrameError::Unmasked => "unmasked WebSocket frame from a client",
            FrameError::BadLength => "WebSocket frame length with its top bit set",
        }
    }
}

/// Parses the header at the start of `buf`: the header and its length in bytes, or
/// `None` when more bytes are needed.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & RSV2_3 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpcode)?;
    let fin = b0 & FIN != 0;
    let short_len = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if short_len as usize > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
    }
    if b1 & MASKED == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, len_bytes) = match short_len {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                (len, 8)
            }
            None => return Ok(None),
        },
        n => (n as u64, 0),
    };
    let mask_at = 2 + len_bytes;
    let Some(mask) = buf.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    let header = Header {
        fin,
        rsv1: b0 & RSV1 != 0,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        len,
    };
    Ok(Some((header, mask_at + 4)))
}

/// Appends the header of an unmasked server frame (RFC 6455 §5.1: a server never masks).
pub(crate) fn encode_header(out: &mut BytesMut, fin: bool, rsv1: bool, opcode: OpCode, len: usize) {
    let b0 = if fin { FIN } else { 0 } | if rsv1 { RSV1 } else { 0 } | opcode.bits();
    out.reserve(10 + len);
    out.put_u8(b0);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// Unmasks (or masks) `buf`, whose first byte is byte `offset` of the frame's payload.
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: u64) {
    let mut mask = mask;
    mask.rotate_left((offset % 4) as usize);
    // Eight bytes at a time: the compiler turns this into wide XORs.
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4.1 and §7.4.2: the
/// codes defined for use on the wire, and the ranges for libraries and applications).
pub(crate) fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload_len_bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        v.extend_from_slice(payload_len_bytes);
        v[1] |= MASKED;
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    }

    /// Every header is also fed cut short at every length: all prefixes need more bytes.
    fn check(input: &[u8], expected: Result<Option<(Header, usize)>, FrameError>) {
        assert_eq!(parse_header(input), expected, "{input:?}");
        if let Ok(Some((_, n))) = expected {
            for cut in 0..n {
                assert_eq!(parse_header(&input[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    fn header(fin: bool, rsv1: bool, opcode: OpCode, len: u64) -> Header {
        Header {
            fin,
            rsv1,
            opcode,
            mask: [1, 2, 3, 4],
            len,
        }
    }

    #[test]
    fn headers_parse_with_each_length_form() {
        check(
            &masked(0x81, &[5]),
            Ok(Some((header(true, false, OpCode::Text, 5), 6))),
        );
        check(
            &masked(0x42, &[126, 0x01, 0x00]),
            Ok(Some((header(false, true, OpCode::Binary, 256), 8))),
        );
        check(
            &masked(0x80, &[127, 0, 0, 0, 0, 0, 1, 0, 0]),
            Ok(Some((header(true, false, OpCode::Continuation, 65536), 14))),
        );
        check(
            &masked(0x89, &[0]),
            Ok(Some((header(true, false, OpCode::Ping, 0), 6))),
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        check(&masked(0xA1, &[0]), Err(FrameError::ReservedBits));
        check(&masked(0x91, &[0]), Err(FrameError::ReservedBits));
        check(&masked(0x83, &[0]), Err(FrameError::ReservedOpcode));
        check(&masked(0x8B, &[0]), Err(FrameError::ReservedOpcode));
        check(&masked(0x09, &[0]), Err(FrameError::FragmentedControl));
        check(
            &masked(0x88, &[126, 0, 126]),
            Err(FrameError::ControlTooLong),
        );
        check(&[0x81, 0x05], Err(FrameError::Unmasked));
        check(
            &masked(0x82, &[127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::BadLength),
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_u32;
        for _ in 0..20_000 {
            let len = (seed % 16) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = parse_header(&bytes);
        }
    }

    #[test]
    fn encoded_headers_use_the_shortest_length() {
        for (len, expected) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65535, vec![0x81, 126, 0xFF, 0xFF]),
            (65536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = BytesMut::new();
            encode_header(&mut out, true, false, OpCode::Text, len);
            assert_eq!(&out[..], &expected[..], "len {len}");
        }
        let mut out = BytesMut::new();
        encode_header(&mut out, false, true, OpCode::Binary, 1);
        assert_eq!(&out[..], &[0x42, 1]);
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let data: Vec<u8> = (0..100u8).collect();
        let mask = [0xA1, 0x02, 0xF3, 0x44];
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        for (i, b) in whole.iter().enumerate() {
            assert_eq!(*b, data[i] ^ mask[i % 4]);
        }
        for split in 0..data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split as u64);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 3000, 3999, 4000, 4999] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }
}
