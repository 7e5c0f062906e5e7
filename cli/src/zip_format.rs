//! The zip format, written as a stream (APPNOTE 6.3.10): entries are *stored* (no
//! compression), each file's CRC-32 goes in a data descriptor after its data (bit 3), so
//! the header can go out before the file is read, and the central directory is written at
//! the end from compact records kept meanwhile.
//!
//! Why stored: an on-the-fly archive of a folder is mostly read to be unpacked at once, by
//! a client on the same network or disk; deflate would cost the server a core for a 2–3×
//! gain on text and nothing on photos, videos and archives (what people zip most). Use
//! `?download=tar.gz` to have it compressed.
//!
//! ZIP64 (sizes and offsets of 4 GiB and more, 65,535 entries and more) is used per entry
//! when its size or offset needs it, and for the end records when the archive does. The
//! sizes are known before the data (a file is archived with exactly the size it had when it
//! was opened), so the choice is made in the local header already.
//!
//! What it keeps: 46 bytes plus the name (plus 28 for ZIP64) per entry, for the central
//! directory, which the format puts at the end. That is the one part of an archive's memory
//! that grows with the number of entries; it is bounded by [`MAX_CENTRAL`]: an archive with
//! more entries is cut with an error (the client sees an incomplete download). A tar has no
//! such bound.
//!
//! Not written here: the `zip` crate's `ZipWriter` needs `Seek` for sizes unless streamed,
//! and keeps a full `ZipFileData` (a few hundred bytes) per entry; writing the records by
//! hand keeps the per-entry memory at its minimum and the data path chunked.

use std::io;

/// The most central directory kept in memory: about 700,000 entries with 50-byte names.
pub const MAX_CENTRAL: usize = 64 << 20;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;

/// "Version needed": 2.0 (directories, stored), 4.5 (ZIP64).
const VERSION_20: u16 = 20;
const VERSION_45: u16 = 45;
/// "Version made by": UNIX (3) in the high byte, so the mode bits in the external
/// attributes are read as such.
const MADE_BY_UNIX: u16 = (3 << 8) | VERSION_45;

const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
const FLAG_UTF8: u16 = 1 << 11;

const U32_MAX: u64 = 0xFFFF_FFFF;

/// The state of a zip being written: where the next entry starts and the central directory
/// so far.
#[derive(Debug, Default)]
pub struct ZipWriter {
    /// Bytes written so far: the offset of the next local header.
    offset: u64,
    central: Vec<u8>,
    n_entries: u64,
    /// The file whose data is being written: its central record is completed by `file_end`.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    name: Vec<u8>,
    size: u64,
    offset: u64,
    dos_time: (u16, u16),
    mode: u32,
}

impl ZipWriter {
    pub fn new() -> ZipWriter {
        ZipWriter::default()
    }

    /// The local header of a directory entry (`name` ends with `/`); it has no data.
    pub fn dir(&mut self, name: &[u8], mtime: u64, mode: u32) -> io::Result<Vec<u8>> {
        let offset = self.offset;
        let dos_time = dos_time(mtime);
        let header = local_header(name, 0, dos_time, 0, offset);
        self.offset += header.len() as u64;
        self.central_record(name, 0, 0, offset, dos_time, 0o040_000 | mode, 0x10, 0)?;
        Ok(header)
    }

    /// The local header of a file of exactly `size` bytes (`name` is at most 64 KiB: the
    /// walk's depth bound keeps paths far shorter); the caller then writes the data
    /// and calls [`ZipWriter::file_end`].
    pub fn file(&mut self, name: &[u8], size: u64, mtime: u64, mode: u32) -> Vec<u8> {
        let offset = self.offset;
        let dos_time = dos_time(mtime);
        let header = local_header(name, size, dos_time, FLAG_DATA_DESCRIPTOR, offset);
        self.offset += header.len() as u64 + size;
        self.pending = Some(Pending {
            name: name.to_vec(),
            size,
            offset,
            dos_time,
            mode: 0o100_000 | mode,
        });
        header
    }

    /// The data descriptor that ends the current file's data, given its CRC-32.
    pub fn file_end(&mut self, crc: u32) -> io::Result<Vec<u8>> {
        let Some(p) = self.pending.take() else {
            return Err(io::Error::other("zip: no file to end"));
        };
        let mut out = Vec::with_capacity(24);
        put32(&mut out, DATA_DESCRIPTOR);
        put32(&mut out, crc);
        if zip64_entry(p.size, p.offset) {
            put64(&mut out, p.size);
            put64(&mut out, p.size);
        } else {
            put32(&mut out, p.size as u32);
            put32(&mut out, p.size as u32);
        }
        self.offset += out.len() as u64;
        self.central_record(
            &p.name,
            p.size,
            crc,
            p.offset,
            p.dos_time,
            p.mode,
            0,
            FLAG_DATA_DESCRIPTOR,
        )?;
        Ok(out)
    }

    /// The bytes of central directory kept so far.
    pub fn central_len(&self) -> usize {
        self.central.len()
    }

    /// The central directory and the end records.
    pub fn finish(self) -> Vec<u8> {
        let mut out = self.central;
        let cd_offset = self.offset;
        let cd_size = out.len() as u64;
        let n = self.n_entries;
        if n >= 0xFFFF || cd_offset >= U32_MAX || cd_size >= U32_MAX {
            let zip64_end_offset = cd_offset + cd_size;
            put32(&mut out, ZIP64_END);
            put64(&mut out, 44);
            put16(&mut out, MADE_BY_UNIX);
            put16(&mut out, VERSION_45);
            put32(&mut out, 0);
            put32(&mut out, 0);
            put64(&mut out, n);
            put64(&mut out, n);
            put64(&mut out, cd_size);
            put64(&mut out, cd_offset);
            put32(&mut out, ZIP64_LOCATOR);
            put32(&mut out, 0);
            put64(&mut out, zip64_end_offset);
            put32(&mut out, 1);
        }
        put32(&mut out, END);
        put16(&mut out, 0);
        put16(&mut out, 0);
        put16(&mut out, n.min(0xFFFF) as u16);
        put16(&mut out, n.min(0xFFFF) as u16);
        put32(&mut out, cd_size.min(U32_MAX) as u32);
        put32(&mut out, cd_offset.min(U32_MAX) as u32);
        put16(&mut out, 0);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn central_record(
        &mut self,
        name: &[u8],
        size: u64,
        crc: u32,
        offset: u64,
        (time, date): (u16, u16),
        mode: u32,
        dos_attributes: u32,
        flags: u16,
    ) -> io::Result<()> {
        if self.central.len() + 46 + 28 + name.len() > MAX_CENTRAL {
            return Err(io::Error::other(
                "zip: too many entries for the central directory (use tar)",
            ));
        }
        let zip64 = zip64_entry(size, offset);
        let out = &mut self.central;
        put32(out, CENTRAL_HEADER);
        put16(out, MADE_BY_UNIX);
        put16(out, if zip64 { VERSION_45 } else { VERSION_20 });
        put16(out, flags | utf8_flag(name));
        put16(out, 0); // stored
        put16(out, time);
        put16(out, date);
        put32(out, crc);
        let (small_size, small_offset) = if zip64 {
            (U32_MAX as u32, U32_MAX as u32)
        } else {
            (size as u32, offset as u32)
        };
        put32(out, small_size);
        put32(out, small_size);
        put16(out, name.len() as u16);
        put16(out, if zip64 { 28 } else { 0 });
        put16(out, 0); // comment
        put16(out, 0); // disk
        put16(out, 0); // internal attributes
        put32(out, (mode << 16) | dos_attributes);
        put32(out, small_offset);
        out.extend_from_slice(name);
        if zip64 {
            put16(out, 0x0001);
            put16(out, 24);
            put64(out, size);
            put64(out, size);
            put64(out, offset);
        }
        self.n_entries += 1;
        Ok(())
    }
}

/// Whether an entry needs ZIP64 fields. Decided from what is known before its data, so the
/// local header, the descriptor and the central record agree.
fn zip64_entry(size: u64, offset: u64) -> bool {
    size >= U32_MAX || offset >= U32_MAX
}

fn local_header(
    name: &[u8],
    size: u64,
    (time, date): (u16, u16),
    flags: u16,
    offset: u64,
) -> Vec<u8> {
    let zip64 = zip64_entry(size, offset);
    let mut out = Vec::with_capacity(30 + name.len() + 20);
    put32(&mut out, LOCAL_HEADER);
    put16(&mut out, if zip64 { VERSION_45 } else { VERSION_20 });
    put16(&mut out, flags | utf8_flag(name));
    put16(&mut out, 0); // stored
    put16(&mut out, time);
    put16(&mut out, date);
    // With a data descriptor, CRC and sizes are zero here (APPNOTE 4.4.4); a ZIP64 extra
    // field with zero sizes says the descriptor's sizes are 8 bytes (4.3.9.2).
    put32(&mut out, 0);
    let small = if zip64 { U32_MAX as u32 } else { 0 };
    put32(&mut out, small);
    put32(&mut out, small);
    put16(&mut out, name.len() as u16);
    put16(&mut out, if zip64 { 20 } else { 0 });
    out.extend_from_slice(name);
    if zip64 {
        put16(&mut out, 0x0001);
        put16(&mut out, 16);
        put64(&mut out, 0);
        put64(&mut out, 0);
    }
    out
}

fn utf8_flag(name: &[u8]) -> u16 {
    if std::str::from_utf8(name).is_ok() && !name.is_ascii() {
        FLAG_UTF8
    } else {
        0
    }
}

/// MS-DOS time and date (UTC; the format has no zone), clamped to 1980–2107.
fn dos_time(mtime: u64) -> (u16, u16) {
    const Y1980: u64 = 315_532_800;
    let secs = mtime.max(Y1980);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = crate::calendar::civil_from_days(days);
    if year > 2107 {
        return (0xBF7D, 0xFF9F);
    }
    let time = ((rem / 3600) << 11) | (((rem % 3600) / 60) << 5) | ((rem % 60) / 2);
    let date = (((year - 1980) as u64) << 9) | (u64::from(month) << 5) | u64::from(day);
    (time as u16, date as u16)
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times_are_utc_and_clamped() {
        // 2024-02-29 13:45:58 UTC
        let (time, date) = dos_time(1_709_214_358);
        assert_eq!(
            (time >> 11, (time >> 5) & 63, (time & 31) * 2),
            (13, 45, 58)
        );
        assert_eq!(
            ((date >> 9) + 1980, (date >> 5) & 15, date & 31),
            (2024, 2, 29)
        );
        assert_eq!(dos_time(0), (0, (1 << 5) | 1), "1980-01-01");
    }

    #[test]
    fn the_central_directory_is_capped() {
        let mut zip = ZipWriter::new();
        let name = vec![b'n'; 60_000];
        let mut n = 0;
        let err = loop {
            zip.file(&name, 0, 0, 0o644);
            match zip.file_end(0) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 10_000, "no cap");
        };
        assert!(err.to_string().contains("too many entries"), "{err}");
        assert!(zip.central.len() <= MAX_CENTRAL);
        assert!(n > MAX_CENTRAL / (60_000 + 46 + 28) - 1);
    }

    #[test]
    fn a_file_without_its_end_is_an_error() {
        assert!(ZipWriter::new().file_end(0).is_err());
    }
}
