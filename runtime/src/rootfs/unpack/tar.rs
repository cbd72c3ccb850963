//! A streaming, bounded reader for the tar dialects found in OCI layers (ustar, GNU, PAX).
//!
//! Why not the `tar` crate's reader: in its normal mode it reads PAX and GNU long-name
//! records into memory without a bound (an 8 GiB PAX header is read whole), and in raw
//! mode it ignores PAX `size`. Here every metadata record is capped before it is read,
//! and the parsing follows Go's `archive/tar` (what image builders and containerd use)
//! where dialects disagree, so we see the same entries they do:
//! - header-only types (links, directories, devices, FIFOs) carry no data, whatever
//!   their size field says;
//! - a PAX record overrides the GNU long name, which overrides the header name;
//! - typeflag NUL with a name ending in `/` is a directory (old V7 archives).
//!
//! GNU and PAX sparse files are refused with [`TarError::Unsupported`]: image builders
//! do not write them.

use std::io::{self, Read};

/// Size of a tar block.
const BLOCK: u64 = 512;

/// One thing that can go wrong while reading the tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The underlying (decompressed) stream failed.
    #[error("reading the layer stream failed at uncompressed offset {offset}")]
    Io {
        /// Bytes consumed from the uncompressed stream before the failure.
        offset: u64,
        /// What the stream reported.
        #[source]
        source: io::Error,
    },
    /// The stream ended inside a header or inside an entry's data.
    #[error("layer archive is truncated at offset {offset}")]
    Truncated {
        /// Uncompressed offset where more data was expected.
        offset: u64,
    },
    /// A header's checksum does not match its content.
    #[error("tar header at offset {offset} has a bad checksum")]
    BadChecksum {
        /// Offset of the header.
        offset: u64,
    },
    /// A numeric header field could not be parsed.
    #[error("tar header at offset {offset} has an invalid {field} field")]
    BadNumber {
        /// Offset of the header.
        offset: u64,
        /// Which field.
        field: &'static str,
    },
    /// A PAX extended header is malformed.
    #[error("PAX header at offset {offset} is malformed: {reason}")]
    BadPax {
        /// Offset of the PAX header.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A PAX extended header is larger than allowed.
    #[error("PAX header at offset {offset} is {size} bytes, over the limit of {limit}")]
    PaxTooLarge {
        /// Offset of the PAX header.
        offset: u64,
        /// Its declared size.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A path or link target is longer than allowed.
    #[error("entry at offset {offset} has a path or link target of {len} bytes, over the limit of {limit}")]
    PathTooLong {
        /// Offset of the header.
        offset: u64,
        /// Length of the path.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// Extension headers (PAX, GNU long name) that describe no entry, or two of a kind in a row.
    #[error(
        "tar extension header at offset {offset} does not describe exactly one following entry"
    )]
    DanglingExtension {
        /// Offset of the extension header.
        offset: u64,
    },
    /// An entry type this reader does not handle.
    #[error("tar entry at offset {offset} uses an unsupported feature: {what}")]
    Unsupported {
        /// Offset of the header.
        offset: u64,
        /// The feature.
        what: &'static str,
    },
}

/// The kinds of entries a layer can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// Regular file (typeflags `0`, NUL, `7`).
    File,
    /// Hard link to an earlier path (typeflag `1`).
    Hardlink,
    /// Symbolic link (typeflag `2`).
    Symlink,
    /// Character device (typeflag `3`).
    CharDevice,
    /// Block device (typeflag `4`).
    BlockDevice,
    /// Directory (typeflag `5`).
    Directory,
    /// Named pipe (typeflag `6`).
    Fifo,
}

/// Modification time with nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Mtime {
    /// Seconds since the epoch (may be negative).
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

/// One entry's metadata; its data is read with [`TarReader::read_data`].
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The raw path as stored (PAX > GNU long name > ustar prefix/name).
    pub path: Vec<u8>,
    /// The raw link target for links (empty otherwise).
    pub link: Vec<u8>,
    /// The entry type.
    pub kind: EntryKind,
    /// Permission bits, `0o7777` at most.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time.
    pub mtime: Mtime,
    /// Bytes of data that follow (zero for header-only kinds).
    pub size: u64,
}

/// Bounds applied while parsing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TarLimits {
    /// Longest path or link target accepted, in bytes.
    pub max_path_len: usize,
    /// Largest PAX extended header accepted, in bytes.
    pub max_pax_bytes: usize,
}

/// Values a PAX header can override.
#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Mtime>,
}

/// Streaming tar reader. Memory use is bounded by the limits, whatever the input.
#[derive(Debug)]
pub(crate) struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    offset: u64,
    /// Data bytes of the current entry not read yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    limits: TarLimits,
}

impl<R: Read> TarReader<R> {
    /// Wraps a reader of an uncompressed tar stream.
    pub fn new(inner: R, limits: TarLimits) -> Self {
        TarReader {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            limits,
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Gives back the wrapped reader, positioned after the last block read.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the next entry's header (and any extension headers before it), skipping
    /// whatever is left of the previous entry's data. `None` at the end-of-archive
    /// marker or at a clean end of stream.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;

        let mut pax: Option<(u64, Pax)> = None;
        let mut long_name: Option<(u64, Vec<u8>)> = None;
        let mut long_link: Option<(u64, Vec<u8>)> = None;
        let first_ext =
            |p: &Option<(u64, Pax)>, n: &Option<(u64, Vec<u8>)>, l: &Option<(u64, Vec<u8>)>| {
                [
                    p.as_ref().map(|x| x.0),
                    n.as_ref().map(|x| x.0),
                    l.as_ref().map(|x| x.0),
                ]
                .into_iter()
                .flatten()
                .min()
            };
        loop {
            let offset = self.offset;
            let mut block = [0u8; BLOCK as usize];
            if !self.read_block(&mut block)? || block.iter().all(|&b| b == 0) {
                if let Some(offset) = first_ext(&pax, &long_name, &long_link) {
                    return Err(TarError::DanglingExtension { offset });
                }
                return Ok(None);
            }
            verify_checksum(&block, offset)?;
            let typeflag = block[156];
            let size = parse_number(&block[124..136])
                .and_then(|n| u64::try_from(n).ok())
                .ok_or(TarError::BadNumber {
                    offset,
                    field: "size",
                })?;
            match typeflag {
                b'x' => {
                    if pax.is_some() {
                        return Err(TarError::DanglingExtension { offset });
                    }
                    if size > self.limits.max_pax_bytes as u64 {
                        return Err(TarError::PaxTooLarge {
                            offset,
                            size,
                            limit: self.limits.max_pax_bytes,
                        });
                    }
                    let data = self.read_record(size)?;
                    pax = Some((offset, parse_pax(&data, offset)?));
                }
                b'g' => {
                    // Global PAX headers: bounded like local ones, content not used
                    // (Go's archive/tar does not apply them either).
                    if size > self.limits.max_pax_bytes as u64 {
                        return Err(TarError::PaxTooLarge {
                            offset,
                            size,
                            limit: self.limits.max_pax_bytes,
                        });
                    }
                    self.skip(padded(size, offset)?)?;
                }
                b'L' | b'K' => {
                    let slot = if typeflag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(TarError::DanglingExtension { offset });
                    }
                    // The stored name carries a trailing NUL.
                    if size > self.limits.max_path_len as u64 + 1 {
                        return Err(TarError::PathTooLong {
                            offset,
                            len: size,
                            limit: self.limits.max_path_len,
                        });
                    }
                    let data = self.read_record(size)?;
                    *slot = Some((offset, cstr(&data).to_vec()));
                }
                _ => {
                    let pax = pax.map(|p| p.1).unwrap_or_default();
                    let entry =
                        self.build_entry(&block, offset, size, pax, long_name, long_link)?;
                    self.remaining = entry.size;
                    self.padding = padded(entry.size, offset)? - entry.size;
                    return Ok(Some(entry));
                }
            }
        }
    }

    fn build_entry(
        &self,
        block: &[u8; BLOCK as usize],
        offset: u64,
        header_size: u64,
        pax: Pax,
        long_name: Option<(u64, Vec<u8>)>,
        long_link: Option<(u64, Vec<u8>)>,
    ) -> Result<Entry, TarError> {
        let is_ustar = &block[257..263] == b"ustar\0";
        let name = cstr(&block[0..100]);
        let header_path = if is_ustar && block[345] != 0 {
            let mut p = cstr(&block[345..500]).to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            p
        } else {
            name.to_vec()
        };
        let path = pax.path.or(long_name.map(|n| n.1)).unwrap_or(header_path);
        let link = pax
            .link
            .or(long_link.map(|n| n.1))
            .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
        for len in [path.len(), link.len()] {
            if len > self.limits.max_path_len {
                return Err(TarError::PathTooLong {
                    offset,
                    len: len as u64,
                    limit: self.limits.max_path_len,
                });
            }
        }
        let kind = match block[156] {
            0 if path.ends_with(b"/") => EntryKind::Directory,
            b'0' | 0 | b'7' => EntryKind::File,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'S' => {
                return Err(TarError::Unsupported {
                    offset,
                    what: "GNU sparse file",
                })
            }
            _ => {
                return Err(TarError::Unsupported {
                    offset,
                    what: "unknown entry type",
                })
            }
        };
        let number = |range: std::ops::Range<usize>, field: &'static str| {
            parse_number(&block[range]).ok_or(TarError::BadNumber { offset, field })
        };
        let unsigned = |v: i128, field: &'static str| {
            u64::try_from(v).map_err(|_| TarError::BadNumber { offset, field })
        };
        let mode = (unsigned(number(100..108, "mode")?, "mode")? & 0o7777) as u32;
        let uid = match pax.uid {
            Some(v) => v,
            None => unsigned(number(108..116, "uid")?, "uid")?,
        };
        let gid = match pax.gid {
            Some(v) => v,
            None => unsigned(number(116..124, "gid")?, "gid")?,
        };
        let mtime = match pax.mtime {
            Some(m) => m,
            None => Mtime {
                secs: i64::try_from(number(136..148, "mtime")?).map_err(|_| {
                    TarError::BadNumber {
                        offset,
                        field: "mtime",
                    }
                })?,
                nanos: 0,
            },
        };
        let size = if kind == EntryKind::File {
            pax.size.unwrap_or(header_size)
        } else {
            0
        };
        Ok(Entry {
            path,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
        })
    }

    /// Reads up to `buf.len()` bytes of the current entry's data; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.read_some(&mut buf[..want])?;
        if n == 0 {
            return Err(TarError::Truncated {
                offset: self.offset,
            });
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(TarError::Io {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
    }

    /// Fills a whole block; `false` on a clean end of stream before its first byte.
    fn read_block(&mut self, block: &mut [u8; BLOCK as usize]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < block.len() {
            let n = self.read_some(&mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(TarError::Truncated {
                    offset: self.offset,
                });
            }
            filled += n;
        }
        Ok(true)
    }

    /// Reads a (size-checked) extension record and its padding.
    fn read_record(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        let len = usize::try_from(size).map_err(|_| TarError::Truncated {
            offset: self.offset,
        })?;
        let mut data = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let n = self.read_some(&mut data[filled..])?;
            if n == 0 {
                return Err(TarError::Truncated {
                    offset: self.offset,
                });
            }
            filled += n;
        }
        let offset = self.offset;
        self.skip(padded(size, offset)? - size)?;
        Ok(data)
    }

    fn skip(&mut self, mut amount: u64) -> Result<(), TarError> {
        let mut scratch = [0u8; 8192];
        while amount > 0 {
            let want = scratch
                .len()
                .min(usize::try_from(amount).unwrap_or(usize::MAX));
            let n = self.read_some(&mut scratch[..want])?;
            if n == 0 {
                return Err(TarError::Truncated {
                    offset: self.offset,
                });
            }
            amount -= n as u64;
        }
        Ok(())
    }
}

/// `size` rounded up to whole blocks.
fn padded(size: u64, offset: u64) -> Result<u64, TarError> {
    size.checked_add(BLOCK - 1)
        .map(|s| s & !(BLOCK - 1))
        .ok_or(TarError::BadNumber {
            offset,
            field: "size",
        })
}

/// The bytes before the first NUL.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

fn verify_checksum(block: &[u8; BLOCK as usize], offset: u64) -> Result<(), TarError> {
    let stored = parse_number(&block[148..156]).ok_or(TarError::BadChecksum { offset })?;
    let (mut unsigned, mut signed) = (0i128, 0i128);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i128::from(b);
        signed += i128::from(b as i8);
    }
    if stored == unsigned || stored == signed {
        Ok(())
    } else {
        Err(TarError::BadChecksum { offset })
    }
}

/// Parses a numeric header field: octal text (padded with spaces or NULs), or GNU
/// base-256 when the high bit of the first byte is set. `None` when malformed or
/// out of the range of an `i64`.
pub(crate) fn parse_number(field: &[u8]) -> Option<i128> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        // GNU base-256: big-endian two's complement, the first byte's top bit being
        // the marker. For negative numbers the bits are inverted (-a-1 == !a), read
        // as unsigned, and inverted back.
        let invert: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut value: u64 = 0;
        for (i, &b) in field.iter().enumerate() {
            let mut b = b ^ invert;
            if i == 0 {
                b &= 0x7f;
            }
            if value >> 56 != 0 {
                return None;
            }
            value = value << 8 | u64::from(b);
        }
        let value = i64::try_from(value).ok()?;
        return Some(i128::from(if invert == 0xff { !value } else { value }));
    }
    let text = trim(field, |b| b == b' ' || b == 0);
    let mut value: i128 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value * 8 + i128::from(b - b'0');
        if value > i128::from(i64::MAX) {
            return None;
        }
    }
    Some(value)
}

fn trim(s: &[u8], pad: impl Fn(u8) -> bool) -> &[u8] {
    let start = s.iter().position(|&b| !pad(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !pad(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Parses PAX records `"<len> <key>=<value>\n"`.
fn parse_pax(mut data: &[u8], offset: u64) -> Result<Pax, TarError> {
    let bad = |reason| TarError::BadPax { offset, reason };
    let mut pax = Pax::default();
    // Trailing NUL padding is tolerated (some writers pad the record block).
    while !data.is_empty() && data.iter().any(|&b| b != 0) {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(bad("record without a length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(bad("record length is not a number"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("record length does not match its content"));
        }
        let record = &data[space + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(bad("record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        // An empty value unsets the key (POSIX); the header field then applies.
        let value_opt = (!value.is_empty()).then_some(value);
        match key {
            b"path" => pax.path = value_opt.map(<[u8]>::to_vec),
            b"linkpath" => pax.link = value_opt.map(<[u8]>::to_vec),
            b"size" => {
                pax.size = value_opt
                    .map(|v| parse_decimal(v).ok_or(bad("bad size")))
                    .transpose()?
            }
            b"uid" => {
                pax.uid = value_opt
                    .map(|v| parse_decimal(v).ok_or(bad("bad uid")))
                    .transpose()?
            }
            b"gid" => {
                pax.gid = value_opt
                    .map(|v| parse_decimal(v).ok_or(bad("bad gid")))
                    .transpose()?
            }
            b"mtime" => {
                pax.mtime = value_opt
                    .map(|v| parse_pax_time(v).ok_or(bad("bad mtime")))
                    .transpose()?
            }
            _ if key.starts_with(b"GNU.sparse.") => {
                return Err(TarError::Unsupported {
                    offset,
                    what: "PAX sparse file",
                })
            }
            // uname, gname, atime, ctime, comment, charset, SCHILY.xattr.* (xattrs are
            // not applied by this unpacker), vendor keys.
            _ => {}
        }
    }
    Ok(pax)
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses `[-]secs[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<Mtime> {
    let (negative, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(parse_decimal(secs)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !negative {
        return Some(Mtime { secs, nanos });
    }
    // -1.25 is 1.25 s before the epoch: secs -2, nanos 0.75e9.
    Some(if nanos == 0 {
        Mtime {
            secs: -secs,
            nanos: 0,
        }
    } else {
        Mtime {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_numbers() {
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(b"  755 \0\0"), Some(0o755));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(b"00000000017\0"), Some(15));
        assert_eq!(parse_number(b"0009\0"), None);
        assert_eq!(parse_number(b"12 34\0"), None);
    }

    #[test]
    fn base256_numbers() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 0x01;
        f[10] = 0x02;
        assert_eq!(parse_number(&f), Some(0x0201));
        // -1 is all ones.
        assert_eq!(parse_number(&[0xff; 8]), Some(-1));
        let mut g = [0xffu8; 8];
        g[7] = 0xfe;
        assert_eq!(parse_number(&g), Some(-2));
        // Too big for an i64.
        let mut h = [0xffu8; 12];
        h[0] = 0x80;
        assert_eq!(parse_number(&h), None);
    }

    #[test]
    fn pax_records() {
        let data = b"30 mtime=1700000000.123456789\n20 path=some/long/p\n12 uid=1000\n20 SCHILY.xattr.a=b\n";
        let pax = parse_pax(data, 0).unwrap();
        assert_eq!(pax.path.as_deref(), Some(&b"some/long/p"[..]));
        assert_eq!(pax.uid, Some(1000));
        assert_eq!(
            pax.mtime,
            Some(Mtime {
                secs: 1_700_000_000,
                nanos: 123_456_789
            })
        );
        assert!(matches!(
            parse_pax(b"99 path=x\n", 0),
            Err(TarError::BadPax { .. })
        ));
        assert!(matches!(
            parse_pax(b"x path=x\n", 0),
            Err(TarError::BadPax { .. })
        ));
        assert!(matches!(
            parse_pax(b"9 path=x\0", 0),
            Err(TarError::BadPax { .. })
        ));
        assert!(matches!(
            parse_pax(b"22 GNU.sparse.major=1\n", 0),
            Err(TarError::Unsupported { .. })
        ));
        // An empty value unsets.
        assert_eq!(parse_pax(b"7 uid=\n", 0).unwrap().uid, None);
    }

    #[test]
    fn pax_negative_time() {
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Mtime {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(parse_pax_time(b"-3"), Some(Mtime { secs: -3, nanos: 0 }));
        assert_eq!(parse_pax_time(b"1.x"), None);
    }
}
