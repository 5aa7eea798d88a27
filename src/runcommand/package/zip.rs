//! The zip archives Distributor packages come in (PKWARE APPNOTE.TXT): the central directory at
//! the end of the file names every entry; each is stored (method 0) or deflated (method 8) and
//! unpacked below one directory. Bounded: the number of entries, each entry's size and the sum of
//! sizes are limited, inflated bytes are counted as they come (a zip bomb stops at its declared
//! size), and no name may leave the directory (`..`, absolute names). ZIP64, encryption and other
//! methods are refused. CRC-32s are not checked: the archive's SHA-256, which the package manifest
//! names, is checked before it is opened.

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const LOCAL_HEADER: u32 = 0x0403_4b50;
/// The end record (22 bytes) plus the longest comment it may carry.
const END_SEARCH: u64 = 22 + 0xffff;
/// Go's `archive/zip` reads this much of the central directory at most too (it is 46 bytes plus
/// names per entry): far more than any package needs.
const MAX_CENTRAL_DIRECTORY: u64 = 16 << 20;

/// What one archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries: usize,
    pub entry_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("cannot unpack {archive}: {what}: {source}")]
    Io {
        archive: String,
        what: String,
        source: io::Error,
    },
    #[error("{archive} is not a zip archive ssm-lite can unpack: {why}")]
    Malformed { archive: String, why: String },
    #[error(
        "{archive}: entry {name:?} would be written outside the package directory; nothing was unpacked"
    )]
    Escapes { archive: String, name: String },
    #[error("{archive}: {why}; the package is larger than ssm-lite unpacks")]
    TooLarge { archive: String, why: String },
}

/// One entry of the central directory.
#[derive(Debug)]
struct Entry {
    name: String,
    method: u16,
    compressed: u64,
    size: u64,
    local_header: u64,
    /// Permission bits when the archive was made on Unix.
    mode: Option<u32>,
}

/// Unpacks `archive` below `dest` (which must exist); the number of files written. Every name
/// and size is checked before the first file is written.
pub fn extract(archive: &Path, dest: &Path, limits: &Limits) -> Result<usize, ZipError> {
    let mut reader = Reader {
        file: File::open(archive).map_err(io_err(archive, "open"))?,
        archive,
    };
    let entries = reader.central_directory(limits)?;
    let mut files = 0;
    for entry in &entries {
        let target = dest.join(&entry.name);
        if entry.name.ends_with('/') {
            fs::create_dir_all(&target).map_err(io_err(archive, "create a directory"))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(archive, "create a directory"))?;
        }
        reader.unpack(entry, &target)?;
        files += 1;
    }
    Ok(files)
}

fn io_err<'a>(archive: &'a Path, what: &'a str) -> impl Fn(io::Error) -> ZipError + 'a {
    move |source| ZipError::Io {
        archive: archive.display().to_string(),
        what: what.to_owned(),
        source,
    }
}

struct Reader<'a> {
    file: File,
    archive: &'a Path,
}

impl Reader<'_> {
    fn malformed(&self, why: impl Into<String>) -> ZipError {
        ZipError::Malformed {
            archive: self.archive.display().to_string(),
            why: why.into(),
        }
    }

    fn too_large(&self, why: String) -> ZipError {
        ZipError::TooLarge {
            archive: self.archive.display().to_string(),
            why,
        }
    }

    fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, ZipError> {
        let mut buf = vec![0; len];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => self.malformed("it ends early"),
                _ => io_err(self.archive, "read")(e),
            })?;
        Ok(buf)
    }

    /// Finds the end record, then reads and checks every central directory entry.
    fn central_directory(&mut self, limits: &Limits) -> Result<Vec<Entry>, ZipError> {
        let len = self
            .file
            .metadata()
            .map_err(io_err(self.archive, "stat"))?
            .len();
        let tail_start = len.saturating_sub(END_SEARCH);
        let tail = self.read_at(tail_start, (len - tail_start) as usize)?;
        let at = (0..tail.len().saturating_sub(21))
            .rev()
            .find(|&i| u32_at(&tail, i) == END_OF_CENTRAL_DIRECTORY)
            .ok_or_else(|| self.malformed("no end of central directory record"))?;
        let end = &tail[at..];
        let count = usize::from(u16_at(end, 10));
        let (size, offset) = (u64::from(u32_at(end, 12)), u64::from(u32_at(end, 16)));
        if count == 0xffff || offset == 0xffff_ffff {
            return Err(self.malformed("ZIP64 archives are not supported"));
        }
        if count > limits.entries {
            return Err(self.too_large(format!("{count} entries, more than {}", limits.entries)));
        }
        if size > MAX_CENTRAL_DIRECTORY || offset + size > tail_start + at as u64 {
            return Err(self.malformed("its central directory is out of bounds"));
        }
        let directory = self.read_at(offset, size as usize)?;
        let mut entries = Vec::with_capacity(count);
        let mut pos = 0;
        let mut total = 0u64;
        for _ in 0..count {
            let (entry, next) = self.entry(&directory, pos)?;
            self.check(&entry, limits)?;
            total = total.saturating_add(entry.size);
            if total > limits.total_bytes {
                return Err(self.too_large(format!(
                    "its entries hold more than {} bytes",
                    limits.total_bytes
                )));
            }
            entries.push(entry);
            pos = next;
        }
        Ok(entries)
    }

    /// The central directory entry at `pos` and where the next one starts.
    fn entry(&self, dir: &[u8], pos: usize) -> Result<(Entry, usize), ZipError> {
        if dir.len() < pos + 46 || u32_at(dir, pos) != CENTRAL_HEADER {
            return Err(self.malformed("a central directory entry is damaged"));
        }
        let h = &dir[pos..];
        let lens = [u16_at(h, 28), u16_at(h, 30), u16_at(h, 32)].map(usize::from);
        let next = pos + 46 + lens.iter().sum::<usize>();
        if dir.len() < next {
            return Err(self.malformed("a central directory entry is damaged"));
        }
        if u16_at(h, 8) & 1 != 0 {
            return Err(self.malformed("encrypted entries are not supported"));
        }
        let made_on_unix = h[5] == 3;
        let attributes = u32_at(h, 38) >> 16;
        let entry = Entry {
            name: String::from_utf8_lossy(&h[46..46 + lens[0]]).into_owned(),
            method: u16_at(h, 10),
            compressed: u64::from(u32_at(h, 20)),
            size: u64::from(u32_at(h, 24)),
            local_header: u64::from(u32_at(h, 42)),
            mode: (made_on_unix && attributes != 0).then_some(attributes & 0o777),
        };
        Ok((entry, next))
    }

    fn check(&self, entry: &Entry, limits: &Limits) -> Result<(), ZipError> {
        if !stays_below(&entry.name) {
            return Err(ZipError::Escapes {
                archive: self.archive.display().to_string(),
                name: entry.name.clone(),
            });
        }
        if entry.size == 0xffff_ffff || entry.compressed == 0xffff_ffff {
            return Err(self.malformed("ZIP64 entries are not supported"));
        }
        if entry.size > limits.entry_bytes {
            return Err(self.too_large(format!(
                "entry {:?} holds {} bytes, more than {}",
                entry.name, entry.size, limits.entry_bytes
            )));
        }
        match entry.method {
            0 if entry.compressed != entry.size => {
                Err(self.malformed(format!("stored entry {:?} has two sizes", entry.name)))
            }
            0 | 8 => Ok(()),
            m => Err(self.malformed(format!(
                "entry {:?} uses compression method {m} (only stored and deflate are supported)",
                entry.name
            ))),
        }
    }

    /// Writes one entry's bytes to `target`: exactly its declared size, or an error.
    fn unpack(&mut self, entry: &Entry, target: &Path) -> Result<(), ZipError> {
        let local = self.read_at(entry.local_header, 30)?;
        if u32_at(&local, 0) != LOCAL_HEADER {
            return Err(self.malformed(format!("entry {:?} has no local header", entry.name)));
        }
        let data =
            entry.local_header + 30 + u64::from(u16_at(&local, 26)) + u64::from(u16_at(&local, 28));
        self.file
            .seek(SeekFrom::Start(data))
            .map_err(io_err(self.archive, "read"))?;
        let mode = entry.mode.map_or(0o644, |m| m & 0o755) | 0o600;
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(target)
            .map_err(io_err(self.archive, "create a file"))?;
        let mut input = (&self.file).take(entry.compressed);
        let written = match entry.method {
            0 => io::copy(&mut input, &mut out).map_err(io_err(self.archive, "copy an entry"))?,
            _ => inflate_into(&mut input, &mut out, entry.size)
                .map_err(|e| e.into_zip_error(self, &entry.name))?,
        };
        if written != entry.size {
            return Err(self.malformed(format!(
                "entry {:?} holds {written} bytes, not the {} its header says",
                entry.name, entry.size
            )));
        }
        Ok(())
    }
}

enum InflateError {
    Io(io::Error),
    Corrupt,
    TooLong(u64),
}

impl InflateError {
    fn into_zip_error(self, reader: &Reader<'_>, name: &str) -> ZipError {
        match self {
            InflateError::Io(e) => io_err(reader.archive, "inflate an entry")(e),
            InflateError::Corrupt => reader.malformed(format!("entry {name:?} is corrupt")),
            InflateError::TooLong(size) => reader.malformed(format!(
                "entry {name:?} inflates to more than the {size} bytes its header says"
            )),
        }
    }
}

/// Inflates raw deflate data from `input` into `out`, stopping past `size` bytes.
fn inflate_into(
    input: &mut impl Read,
    out: &mut impl Write,
    size: u64,
) -> Result<u64, InflateError> {
    let mut state = InflateState::new_boxed(DataFormat::Raw);
    let mut inbuf = vec![0u8; 32 << 10];
    let mut outbuf = vec![0u8; 64 << 10];
    let (mut start, mut end, mut written) = (0, 0, 0u64);
    loop {
        let mut eof = false;
        if start == end {
            end = input.read(&mut inbuf).map_err(InflateError::Io)?;
            start = 0;
            eof = end == 0;
        }
        let r = inflate(&mut state, &inbuf[start..end], &mut outbuf, MZFlush::None);
        start += r.bytes_consumed;
        written += r.bytes_written as u64;
        if written > size {
            return Err(InflateError::TooLong(size));
        }
        out.write_all(&outbuf[..r.bytes_written])
            .map_err(InflateError::Io)?;
        let stalled = r.bytes_consumed == 0 && r.bytes_written == 0;
        match r.status {
            Ok(MZStatus::StreamEnd) => return Ok(written),
            Ok(_) | Err(MZError::Buf) if !(eof && stalled) => {}
            _ => return Err(InflateError::Corrupt),
        }
    }
}

/// A relative name of normal components only (`a/b`, `./a`): nothing absolute, no `..`.
fn stays_below(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\0')
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The zip writer the integration tests build packages with.
#[cfg(test)]
#[path = "../../../tests/support/zipfile.rs"]
pub(crate) mod testzip;

#[cfg(test)]
mod tests {
    use super::testzip::build;
    use super::*;
    use crate::state::testdir::TestDir;

    const LIMITS: Limits = Limits {
        entries: 16,
        entry_bytes: 1 << 20,
        total_bytes: 2 << 20,
    };

    fn unpack(t: &TestDir, zip: &[u8], limits: &Limits) -> Result<usize, ZipError> {
        let archive = t.path().join("p.zip");
        fs::write(&archive, zip).unwrap();
        let dest = t.path().join("out");
        fs::create_dir_all(&dest).unwrap();
        extract(&archive, &dest, limits)
    }

    #[test]
    fn stored_and_deflated_entries_unpack_with_their_directories() {
        let t = TestDir::new("zip");
        let big = b"install me\n".repeat(20_000);
        let zip = build(&[
            ("install.sh", b"echo hi\n", false),
            ("lib/", b"", false),
            ("lib/data.txt", &big, true),
        ]);
        assert_eq!(unpack(&t, &zip, &LIMITS).unwrap(), 2);
        let out = t.path().join("out");
        assert_eq!(fs::read(out.join("install.sh")).unwrap(), b"echo hi\n");
        assert_eq!(fs::read(out.join("lib/data.txt")).unwrap(), big);
    }

    #[test]
    fn names_that_leave_the_directory_are_refused_before_anything_is_written() {
        for name in ["../evil.sh", "a/../../evil.sh", "/etc/evil.sh"] {
            let t = TestDir::new("zip");
            let zip = build(&[("ok.sh", b"x", false), (name, b"x", false)]);
            let err = unpack(&t, &zip, &LIMITS).unwrap_err();
            assert!(matches!(err, ZipError::Escapes { .. }), "{name}: {err}");
            assert!(!t.path().join("out/ok.sh").exists());
            assert!(!t.path().join("evil.sh").exists());
        }
    }

    #[test]
    fn oversize_entries_and_too_many_entries_are_refused() {
        let t = TestDir::new("zip");
        let small = Limits {
            entry_bytes: 100,
            ..LIMITS
        };
        let zip = build(&[("big.bin", &[7u8; 101], true)]);
        let err = unpack(&t, &zip, &small).unwrap_err();
        assert!(matches!(err, ZipError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains("\"big.bin\" holds 101 bytes"),
            "{err}"
        );
        let few = Limits {
            entries: 1,
            ..LIMITS
        };
        let zip = build(&[("a", b"1", false), ("b", b"2", false)]);
        assert!(matches!(
            unpack(&t, &zip, &few).unwrap_err(),
            ZipError::TooLarge { .. }
        ));
    }

    /// A header that understates the inflated size (a zip bomb) stops at the stated size.
    #[test]
    fn an_entry_inflating_past_its_declared_size_is_refused() {
        let t = TestDir::new("zip");
        let mut zip = build(&[("bomb", &[0u8; 50_000], true)]);
        let central = zip.len() - 22 - (46 + 4);
        for header in [18 + 4, central + 24] {
            zip[header..header + 4].copy_from_slice(&10u32.to_le_bytes());
        }
        let err = unpack(&t, &zip, &LIMITS).unwrap_err();
        assert!(err.to_string().contains("more than the 10 bytes"), "{err}");
    }

    #[test]
    fn not_a_zip_is_malformed() {
        let t = TestDir::new("zip");
        let err = unpack(&t, b"#!/bin/sh\necho not a zip\n", &LIMITS).unwrap_err();
        assert!(matches!(err, ZipError::Malformed { .. }), "{err}");
        let mut truncated = build(&[("a.txt", b"abc", true)]);
        truncated.drain(30..33);
        assert!(unpack(&t, &truncated, &LIMITS).is_err());
    }
}
