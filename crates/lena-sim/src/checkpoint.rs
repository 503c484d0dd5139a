//! The checkpoint file of a run: a versioned header that names the round and the files the
//! checkpoint must agree with, the simulation's state ([`crate::Simulation::save_state`]), and a
//! CRC-32C over everything before it.
//!
//! The checksum is verified before anything is parsed, and every length is bounded by the
//! bytes that remain, so a damaged file is an error, never a panic or a different run. A CRC
//! detects every error burst of up to 32 bits, so any single damaged byte is caught.
//!
//! Layout, little-endian:
//!
//! ```text
//! "LENACKPT"  version: u32  round: u64  files: u32
//! per file:   name length: u16  name (UTF-8)  length: u64  lines: u64  CRC-32C: u32
//! state length: u64  state
//! CRC-32C of all the bytes above: u32
//! ```

use crate::{Error, Result};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

/// First bytes of a checkpoint file.
pub const MAGIC: &[u8; 8] = b"LENACKPT";

/// The format version this build writes and reads.
///
/// 3: a LENA node whose uploads cannot be lost keeps no drift of its own (it reads q from its
/// last upload), so its state holds no q (nor LENA-g's `alpha g`).
///
/// 4: a LENA node's memory is saved as it is held, with a flag after it: whether it owes the
/// drift its last skip applied (the memory then being the saved vector less q).
///
/// 5: a LENA node whose uploads cannot be lost and carry q apart from v (LENA-g, LENA-m) holds
/// its memory in its last upload, v's place, once it has one: a flag before the memory says
/// so, and the memory is then not saved (the node's message is).
pub const VERSION: u32 = 5;

/// At most this many files are named in a header.
const MAX_FILES: usize = 64;

/// Where a file stood: its first `len` bytes, holding `lines` newlines, with CRC-32C `crc`.
///
/// A checkpoint keeps one per file of the run directory it must agree with (the config, the
/// metrics written so far), so that resuming can verify them before it writes anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// How many bytes of the file the mark covers.
    pub len: u64,
    /// Newlines among them.
    pub lines: u64,
    /// CRC-32C of them.
    pub crc: u32,
}

impl Mark {
    /// The mark of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut m = Self::default();
        m.append(bytes);
        m
    }

    /// Extends the mark by `bytes` written after the ones it covers.
    pub fn append(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
    }
}

/// A checkpoint: the round it was taken after, the files it must agree with, and the
/// simulation's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint<'a> {
    /// Rounds completed.
    pub round: u64,
    /// Files of the run directory by name (plain file names, no directories), with what they
    /// held when the checkpoint was taken.
    pub files: Vec<(String, Mark)>,
    /// [`crate::Simulation::save_state`]'s bytes (borrowed when writing, so a large state is
    /// not copied).
    pub state: Cow<'a, [u8]>,
}

/// Computes the CRC of what passes through it.
struct Crc<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

impl Checkpoint<'_> {
    /// The mark recorded for file `name`.
    pub fn file(&self, name: &str) -> Option<Mark> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, m)| *m)
    }

    fn emit(&self, out: impl Write) -> std::io::Result<()> {
        let mut w = Crc { inner: out, crc: 0 };
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&self.round.to_le_bytes())?;
        w.write_all(&(self.files.len() as u32).to_le_bytes())?;
        for (name, m) in &self.files {
            assert!(
                valid_name(name) && self.files.len() <= MAX_FILES,
                "checkpoint file names are plain file names, at most {MAX_FILES}: {name:?}"
            );
            w.write_all(&(name.len() as u16).to_le_bytes())?;
            w.write_all(name.as_bytes())?;
            w.write_all(&m.len.to_le_bytes())?;
            w.write_all(&m.lines.to_le_bytes())?;
            w.write_all(&m.crc.to_le_bytes())?;
        }
        w.write_all(&(self.state.len() as u64).to_le_bytes())?;
        w.write_all(&self.state)?;
        let crc = w.crc;
        w.inner.write_all(&crc.to_le_bytes())?;
        w.flush()
    }

    /// The file's bytes.
    ///
    /// # Panics
    /// If a file name is not a plain file name (it comes from the program, not from input).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.state.len() + 64);
        self.emit(&mut out).expect("writing to memory");
        out
    }

    /// Parses a checkpoint file's bytes: the checksum first, then every field within bounds.
    /// Errors say what is wrong (`source` names the file).
    pub fn decode(bytes: &[u8], source: &str) -> Result<Checkpoint<'static>> {
        let bad = |what: String| Error::Checkpoint(format!("{source}: {what}"));
        // The format before version 2 had three words before the simulation's magic.
        if bytes.len() >= 32 && &bytes[24..32] == b"LENACKP1" {
            return Err(bad(
                "written by an earlier lena (checkpoint format 1, without a checksum), which \
                 this version does not resume; run the experiment again"
                    .into(),
            ));
        }
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a lena checkpoint (wrong magic bytes)".into()));
        }
        if bytes.len() < MAGIC.len() + 4 + 4 {
            return Err(bad(format!("truncated: {} bytes", bytes.len())));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(bad(format!(
                "checkpoint format version {version}; this lena reads version {VERSION}"
            )));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is \
                 damaged or incomplete"
            )));
        }
        let mut r = Reader {
            bytes: body,
            pos: 12,
        };
        let round = r.u64().map_err(&bad)?;
        let n = r.u32().map_err(&bad)? as usize;
        if n > MAX_FILES {
            return Err(bad(format!("{n} files named, at most {MAX_FILES} allowed")));
        }
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.pos;
            let len = usize::from(r.u16().map_err(&bad)?);
            let name = std::str::from_utf8(r.take(len).map_err(&bad)?)
                .ok()
                .filter(|s| valid_name(s))
                .ok_or_else(|| bad(format!("byte {at}: not a plain file name")))?
                .to_string();
            let mark = Mark {
                len: r.u64().map_err(&bad)?,
                lines: r.u64().map_err(&bad)?,
                crc: r.u32().map_err(&bad)?,
            };
            if mark.lines > mark.len {
                return Err(bad(format!(
                    "{name}: {} lines in {} bytes",
                    mark.lines, mark.len
                )));
            }
            files.push((name, mark));
        }
        let len = r.u64().map_err(&bad)?;
        let rest = (body.len() - r.pos) as u64;
        if len != rest {
            return Err(bad(format!(
                "state of {len} bytes announced, {rest} bytes present"
            )));
        }
        let state = Cow::Owned(body[r.pos..].to_vec());
        Ok(Checkpoint {
            round,
            files,
            state,
        })
    }

    /// Writes the checkpoint to `path` atomically and durably: into `path.tmp`, synced to disk,
    /// renamed over `path`, and the directory synced, so that `path` always holds a whole
    /// checkpoint (the previous one until the rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |err| Error::Io { path: p, err }
        };
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        self.emit(&mut w).map_err(io(&tmp))?;
        let file = w.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io(path))?;
        sync_dir(path);
        Ok(())
    }

    /// Reads and verifies the checkpoint at `path` ([`Self::decode`]).
    pub fn read(path: &Path) -> Result<Checkpoint<'static>> {
        let bytes = std::fs::read(path).map_err(|err| Error::Io {
            path: path.into(),
            err,
        })?;
        Self::decode(&bytes, &path.display().to_string())
    }
}

/// Makes a rename in `path`'s directory durable (best effort: not every platform can open a
/// directory).
pub(crate) fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Bounds-checked little-endian reads.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let b = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(b)
            }
            None => Err(format!(
                "truncated header: {n} bytes needed at byte {}, {} present",
                self.pos,
                self.bytes.len() - self.pos
            )),
        }
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint<'static> {
        Checkpoint {
            round: 150,
            files: vec![
                ("config.toml".into(), Mark::of(b"[data]\nnodes = 4\n")),
                ("metrics.csv".into(), Mark::of(b"iteration\n0\n50\n")),
            ],
            state: Cow::Owned((0..200u32).map(|i| (i * 7) as u8).collect()),
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        let bytes = c.encode();
        assert_eq!(Checkpoint::decode(&bytes, "x").unwrap(), c);
        assert_eq!(c.file("metrics.csv").unwrap().lines, 3);
        assert_eq!(c.file("nope"), None);
    }

    #[test]
    fn every_damaged_byte_is_an_error() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let e = Checkpoint::decode(&b, "ck").unwrap_err().to_string();
                assert!(e.starts_with("checkpoint: ck: "), "{e}");
            }
        }
        for n in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..n], "ck").is_err(), "{n}");
        }
    }

    #[test]
    fn names_are_plain_and_old_files_are_named() {
        let mut old = vec![0u8; 24];
        old.extend_from_slice(b"LENACKP1rest");
        let e = Checkpoint::decode(&old, "ck").unwrap_err().to_string();
        assert!(e.contains("format 1"), "{e}");
        // A header naming "../x", with a valid checksum, is refused.
        let mut c = sample();
        c.files[0].0 = "a".into();
        let mut bytes = c.encode();
        // magic, version, round, file count, name length: the name's one byte is at 26.
        assert_eq!(bytes[26], b'a');
        bytes[26] = b'/';
        let n = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        let e = Checkpoint::decode(&bytes, "ck").unwrap_err().to_string();
        assert!(e.contains("plain file name"), "{e}");
    }

    #[test]
    fn writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.bin");
        let c = sample();
        c.write(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), c);
        assert!(!dir.path().join("checkpoint.bin.tmp").exists());
        let e = Checkpoint::read(&dir.path().join("none")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }));
    }

    #[test]
    fn marks_extend() {
        let mut m = Mark::of(b"ab\n");
        m.append(b"cd\n\n");
        assert_eq!(m, Mark::of(b"ab\ncd\n\n"));
        assert_eq!((m.len, m.lines), (7, 3));
    }
}
