//! The tar format's headers, for archives written as a stream: one 512-byte GNU header
//! per entry (from the `tar` crate, which encodes the fields, base-256 sizes for files of
//! 8 GiB and more, and the checksum), a GNU long-name entry before it when the name does
//! not fit the header's 100 bytes, the data padded to 512 bytes, two zero blocks at the end.
//!
//! The `tar` crate's `Builder` copies a whole entry's data into its writer in one call;
//! only its `Header` is used here, so the caller can send a file's data chunk by chunk.

use tar::{EntryType, Header};

/// The tar block size.
pub const BLOCK: u64 = 512;

/// The end of an archive: two zero blocks.
pub const END: [u8; 1024] = [0; 1024];

/// The header block(s) of an entry named `name` (a directory's name ends with `/`).
pub fn header(name: &[u8], is_dir: bool, size: u64, mtime: u64, mode: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK as usize);
    let mut h = Header::new_gnu();
    let field = &mut h.as_old_mut().name;
    if name.len() > field.len() {
        out.extend(long_name(name));
    }
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    if is_dir {
        h.set_entry_type(EntryType::Directory);
        h.set_size(0);
    } else {
        h.set_entry_type(EntryType::Regular);
        h.set_size(size);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out
}

/// Zero bytes that follow `size` bytes of data to end its last block.
pub fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

/// GNU's `././@LongLink` entry (type `L`): the full name as data, NUL-terminated. GNU tar,
/// bsdtar, Python's tarfile and the `tar` crate read it.
fn long_name(name: &[u8]) -> Vec<u8> {
    let mut h = Header::new_gnu();
    let link = b"././@LongLink";
    h.as_old_mut().name[..link.len()].copy_from_slice(link);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(EntryType::GNULongName);
    let len = name.len() as u64 + 1;
    h.set_size(len);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len() + padding(len), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_tar_crate_reads_back_short_and_long_names_and_sizes() {
        let long = "d/".repeat(80) + "file.txt";
        let mut archive = Vec::new();
        archive.extend(header(b"dir/", true, 0, 1_700_000_000, 0o755));
        for (name, data) in [
            ("dir/a.txt", &b"hello"[..]),
            (long.as_str(), &[7u8; 1000][..]),
        ] {
            archive.extend(header(name.as_bytes(), false, data.len() as u64, 5, 0o644));
            archive.extend_from_slice(data);
            archive.resize(archive.len() + padding(data.len() as u64), 0);
        }
        archive.extend_from_slice(&END);
        let mut reader = tar::Archive::new(&archive[..]);
        let mut seen = Vec::new();
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.push((path, data.len(), entry.header().mtime().unwrap()));
        }
        assert_eq!(
            seen,
            [
                ("dir/".to_owned(), 0, 1_700_000_000),
                ("dir/a.txt".to_owned(), 5, 5),
                (long, 1000, 5)
            ]
        );
    }

    #[test]
    fn sizes_past_8_gib_use_base_256() {
        let h = header(b"big", false, 10 << 30, 0, 0o644);
        let parsed = tar::Header::from_byte_slice(&h);
        assert_eq!(parsed.size().unwrap(), 10 << 30);
    }
}
