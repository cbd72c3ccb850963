//! Python bytecode made valid once, when a root is built, instead of recompiled at every start (issue 14).
//!
//! A timestamp-based `.pyc` (PEP 552, flags 0) records its source's mtime in whole seconds and its size; Python
//! uses it only when both equal the source's (`int(st_mtime) & 0xFFFFFFFF`, `st_size & 0xFFFFFFFF`). The sandbox's
//! root is read-only, so a `.pyc` Python finds stale is compiled again at every start and never written back.
//! Two things make them stale in real images:
//! - layer tars store whole seconds, and some builders round rather than truncate: the unpacked source is one
//!   second off what its `.pyc` records. [`survey`] finds those (same size, recorded mtime within
//!   [`MAX_ROUNDING_SECS`]) and [`apply_rounding`] gives the source the mtime its `.pyc` records;
//! - clamped timestamps (`SOURCE_DATE_EPOCH`: every mtime the same) and images with no bytecode at all: the
//!   sources are compiled by the image's own interpreter, in a sandbox (see `crate::pipeline::bytecode`), writing
//!   only into the staging root. [`survey`] tells whether there is anything to compile and which interpreters the
//!   image has.
//!
//! Hash-based `.pyc` files (flags 1 or 3) are never touched: Python checks them against the source's content.
//! Everything here runs on a staging root before it is sealed; nothing follows a symbolic link of the image.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

use crate::image::config::ImageRuntimeConfig;

/// Part of the key of roots built with this step (see [`crate::rootfs::root_key_with`]): bumped whenever the step
/// would leave a different tree, so that a root built one way is never taken for the other.
pub const KEY_TAG: &str = "bc1";

/// How far (in seconds) a `.pyc`'s recorded source mtime may be from the unpacked source's for the difference to
/// be the layer tar's rounding of a fractional timestamp.
pub const MAX_ROUNDING_SECS: i32 = 1;

/// The most interpreters compiled with (one per Python version found).
pub const MAX_INTERPRETERS: usize = 4;

/// The 16-byte header of a `.pyc` file (PEP 552).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PycHeader {
    /// The magic number (2 bytes of version, then `\r\n`).
    pub magic: [u8; 4],
    /// Bit field: 0 for timestamp-based, bit 0 set for hash-based (bit 1: checked).
    pub flags: u32,
    /// Timestamp-based: the source's mtime in seconds, modulo 2^32.
    pub mtime: u32,
    /// Timestamp-based: the source's size, modulo 2^32.
    pub size: u32,
}

impl PycHeader {
    /// Parses the first 16 bytes of a `.pyc`; `None` if they are not one (too short, no `\r\n` in the magic).
    pub fn parse(bytes: &[u8]) -> Option<PycHeader> {
        let b: &[u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        (b[2..4] == *b"\r\n").then(|| PycHeader {
            magic: [b[0], b[1], b[2], b[3]],
            flags: word(4),
            mtime: word(8),
            size: word(12),
        })
    }

    /// Whether Python checks this `.pyc` by its source's mtime and size.
    pub fn is_timestamp_based(&self) -> bool {
        self.flags == 0
    }

    /// Whether Python takes this `.pyc` as up to date for a source of `size` bytes whose mtime is `mtime`
    /// (seconds and nanoseconds, as `stat` gives them).
    pub fn valid_for(&self, mtime: (i64, i64), size: u64) -> bool {
        self.is_timestamp_based()
            && self.mtime == py_seconds(mtime) as u32
            && self.size == size as u32
    }

    /// The rounding rule: the mtime (whole seconds) the source must get for this `.pyc` to be valid, when the
    /// `.pyc` is timestamp-based, its recorded size is the source's and its recorded mtime is at most
    /// [`MAX_ROUNDING_SECS`] away from the source's; `None` otherwise (valid already, hash-based, another size, or
    /// too far: a clamped or rewritten timestamp, for which the source is compiled instead).
    pub fn rounded_mtime(&self, mtime: (i64, i64), size: u64) -> Option<i64> {
        if !self.is_timestamp_based() || self.size != size as u32 {
            return None;
        }
        let secs = py_seconds(mtime);
        let diff = self.mtime.wrapping_sub(secs as u32) as i32;
        (diff != 0 && diff.abs() <= MAX_ROUNDING_SECS).then(|| secs + i64::from(diff))
    }
}

/// `int(st_mtime)` as Python computes it from `stat`'s seconds and nanoseconds (truncated towards zero).
fn py_seconds((secs, nsecs): (i64, i64)) -> i64 {
    if secs < 0 && nsecs > 0 {
        secs + 1
    } else {
        secs
    }
}

/// What [`survey`] found in a root.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Survey {
    /// Sources (relative to the root) whose `.pyc` is stale only by rounding, and the mtime (whole seconds) that
    /// makes it valid.
    pub rounded: Vec<(PathBuf, i64)>,
    /// Sources under a Python library directory (or the image's working directory) with no valid `.pyc` of any
    /// interpreter found, once the rounded ones are fixed.
    pub uncompiled: u64,
    /// Timestamp-based `.pyc` files seen.
    pub pycs: u64,
    /// Hash-based `.pyc` files seen (left as they are).
    pub hash_based: u64,
    /// The image's Python interpreters (absolute paths inside the root, `python3.N`), one per version, in the
    /// order of the image's `PATH`.
    pub interpreters: Vec<String>,
    /// `site-packages` directories of virtual environments (absolute paths inside the root), which the base
    /// interpreter's `sys.path` does not name.
    pub venv_dirs: Vec<String>,
}

/// Walks the root `tree` (never following a symbolic link) and finds what [`Survey`] says.
pub fn survey(tree: &Path, image: &ImageRuntimeConfig) -> io::Result<Survey> {
    let mut out = Survey::default();
    let workdir = image
        .working_dir
        .as_deref()
        .map(|w| w.trim_matches('/'))
        .filter(|w| !w.is_empty())
        .map(PathBuf::from);
    out.interpreters = interpreters(tree, image);
    let tags: BTreeSet<String> = out
        .interpreters
        .iter()
        .filter_map(|p| cache_tag(p.rsplit('/').next().unwrap_or_default()))
        .collect();
    let mut venvs = BTreeSet::new();
    walk(
        tree,
        &mut PathBuf::new(),
        false,
        &Ctx {
            workdir: workdir.as_deref(),
            tags: &tags,
        },
        &mut out,
        &mut venvs,
    )?;
    out.venv_dirs = venvs.into_iter().collect();
    Ok(out)
}

struct Ctx<'a> {
    workdir: Option<&'a Path>,
    tags: &'a BTreeSet<String>,
}

/// `cpython-3N` for an interpreter named `python3.N`.
fn cache_tag(name: &str) -> Option<String> {
    let minor = name.strip_prefix("python3.")?;
    (!minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("cpython-3{minor}"))
}

/// Whether `rel` lies where an interpreter imports from: under `lib/python3…` (`lib/python3.12/site-packages`,
/// Debian's `lib/python3/dist-packages`, a venv's) or the image's working directory.
fn importable(rel: &Path, workdir: Option<&Path>) -> bool {
    let mut prev: Option<&OsStr> = None;
    for c in rel.iter() {
        if prev.is_some_and(|p| p == "lib" || p == "lib64") && c.as_bytes().starts_with(b"python3")
        {
            return true;
        }
        prev = Some(c);
    }
    workdir.is_some_and(|w| rel.starts_with(w))
}

fn walk(
    tree: &Path,
    rel: &mut PathBuf,
    inside: bool,
    ctx: &Ctx<'_>,
    out: &mut Survey,
    venvs: &mut BTreeSet<String>,
) -> io::Result<()> {
    let dir = tree.join(&*rel);
    let mut entries: Vec<(OsString, std::fs::Metadata)> = Vec::new();
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let m = std::fs::symlink_metadata(e.path())?;
        entries.push((e.file_name(), m));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // The `.pyc` headers of this directory's `__pycache__`, by source stem: (tag, header).
    let mut cached: BTreeMap<Vec<u8>, Vec<(String, PycHeader)>> = BTreeMap::new();
    if entries
        .iter()
        .any(|(n, m)| n == "__pycache__" && m.file_type().is_dir())
    {
        let cache = dir.join("__pycache__");
        for e in std::fs::read_dir(&cache)? {
            let e = e?;
            let name = e.file_name();
            let Some((stem, tag)) = split_pyc_name(name.as_bytes()) else {
                continue;
            };
            if !std::fs::symlink_metadata(e.path())?.file_type().is_file() {
                continue;
            }
            let Some(header) = read_header(&e.path())? else {
                continue;
            };
            cached
                .entry(stem.to_vec())
                .or_default()
                .push((String::from_utf8_lossy(tag).into_owned(), header));
        }
    }
    for (name, m) in &entries {
        let ft = m.file_type();
        if ft.is_dir() {
            if name == "__pycache__" {
                continue;
            }
            rel.push(name);
            let now_inside = inside || importable(rel, ctx.workdir);
            if name == "site-packages"
                && rel
                    .parent()
                    .and_then(|p| p.parent())
                    .and_then(|p| p.parent())
                    .is_some_and(|venv| {
                        tree.join(venv)
                            .join("pyvenv.cfg")
                            .symlink_metadata()
                            .is_ok_and(|m| m.is_file())
                    })
            {
                venvs.insert(format!("/{}", rel.display()));
            }
            walk(tree, rel, now_inside, ctx, out, venvs)?;
            rel.pop();
            continue;
        }
        let Some(stem) = name.as_bytes().strip_suffix(b".py") else {
            continue;
        };
        if !ft.is_file() {
            continue;
        }
        let mtime = (m.mtime(), m.mtime_nsec());
        let size = m.size();
        let headers = cached.get(stem).map(Vec::as_slice).unwrap_or_default();
        for (_, h) in headers {
            if h.is_timestamp_based() {
                out.pycs += 1;
            } else {
                out.hash_based += 1;
            }
        }
        // Plain `.pyc` files (not `.opt-N`) of an interpreter the image has, else any plain one.
        let relevant: Vec<&PycHeader> = headers
            .iter()
            .filter(|(tag, _)| !tag.contains(".opt-"))
            .filter(|(tag, _)| ctx.tags.is_empty() || ctx.tags.contains(tag))
            .map(|(_, h)| h)
            .collect();
        let valid = relevant.iter().any(|h| h.valid_for(mtime, size))
            || headers.iter().any(|(_, h)| !h.is_timestamp_based());
        let fix = if valid {
            None
        } else {
            let wanted: BTreeSet<i64> = relevant
                .iter()
                .filter_map(|h| h.rounded_mtime(mtime, size))
                .collect();
            // Two interpreters' bytecode asking for different mtimes: neither is taken.
            (wanted.len() == 1).then(|| *wanted.iter().next().unwrap_or(&0))
        };
        let mut path = rel.clone();
        path.push(name);
        match fix {
            Some(t) => out.rounded.push((path, t)),
            None if !valid && inside => out.uncompiled += 1,
            None => {}
        }
    }
    Ok(())
}

/// `STEM.TAG.pyc` → (`STEM`, `TAG`), `TAG` possibly with `.opt-N`.
fn split_pyc_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let base = name.strip_suffix(b".pyc")?;
    let at = base.windows(8).position(|w| w == b".cpython")?;
    Some((&base[..at], &base[at + 1..]))
}

fn read_header(path: &Path) -> io::Result<Option<PycHeader>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(PycHeader::parse(&buf[..got]))
}

/// Gives each source of `survey.rounded` the mtime its `.pyc` records (its access time is left). Returns how many.
pub fn apply_rounding(tree: &Path, survey: &Survey) -> io::Result<u64> {
    let root = open_in_root(None, tree)?;
    let mut n = 0;
    for (rel, secs) in &survey.rounded {
        set_mtime(&root, rel, *secs, 0)?;
        n += 1;
    }
    Ok(n)
}

/// Opens the directory `path` (relative to `root`, or as given when `root` is `None`) as an `O_PATH` descriptor,
/// resolving it inside `root` without following any symbolic link.
fn open_in_root(root: Option<&OwnedFd>, path: &Path) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(if root.is_some() {
            ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS
        } else {
            ResolveFlag::empty()
        });
    let dirfd = root.map_or(libc::AT_FDCWD, |r| r.as_raw_fd());
    let fd = openat2(dirfd, path, how)?;
    // SAFETY: openat2 returned a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the mtime of `rel` (inside the root `root`; `""` is the root itself), leaving its access time. Its parent
/// is resolved without following symbolic links, and the entry itself is never followed.
fn set_mtime(root: &OwnedFd, rel: &Path, secs: i64, nsecs: i64) -> io::Result<()> {
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => (Some(open_in_root(Some(root), p)?), n),
        (_, Some(n)) => (None, n),
        (_, None) => (None, OsStr::new(".")),
    };
    let dirfd = parent.as_ref().unwrap_or(root).as_raw_fd();
    let name = std::ffi::CString::new(name.as_bytes()).map_err(io::Error::other)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsecs,
        },
    ];
    // SAFETY: `name` is a valid C string, `times` two timespecs, `dirfd` an open descriptor.
    let rc = unsafe {
        libc::utimensat(
            dirfd,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The directories of a root and their mtimes, taken before the interpreter writes `__pycache__` entries into
/// them and put back afterwards ([`DirTimes::restore`]), so that the root's directories stay as the image has
/// them.
#[derive(Debug, Default)]
pub struct DirTimes(Vec<(PathBuf, i64, i64)>);

impl DirTimes {
    /// Records every directory under `tree` (`tree` itself included).
    pub fn record(tree: &Path) -> io::Result<DirTimes> {
        fn walk(
            tree: &Path,
            rel: &mut PathBuf,
            out: &mut Vec<(PathBuf, i64, i64)>,
        ) -> io::Result<()> {
            let m = std::fs::symlink_metadata(tree.join(&*rel))?;
            out.push((rel.clone(), m.mtime(), m.mtime_nsec()));
            for e in std::fs::read_dir(tree.join(&*rel))? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    rel.push(e.file_name());
                    walk(tree, rel, out)?;
                    rel.pop();
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(tree, &mut PathBuf::new(), &mut out)?;
        Ok(DirTimes(out))
    }

    /// Puts the recorded mtimes back (resolving every path inside `tree` without following symbolic links: what
    /// the interpreter left there is not trusted to point anywhere). A directory gone or replaced is skipped.
    pub fn restore(&self, tree: &Path) -> io::Result<()> {
        let root = open_in_root(None, tree)?;
        for (rel, secs, nsecs) in &self.0 {
            // Only a directory still there (what replaced one is left as it is).
            let is_dir = rel.as_os_str().is_empty() || open_in_root(Some(&root), rel).is_ok();
            if is_dir {
                set_mtime(&root, rel, *secs, *nsecs)?;
            }
        }
        Ok(())
    }
}

/// The image's `python3.N` interpreters: in the directories of its `PATH` (else the usual ones), one per version,
/// at most [`MAX_INTERPRETERS`]. A symbolic link counts (the interpreter resolves it inside the sandbox).
fn interpreters(tree: &Path, image: &ImageRuntimeConfig) -> Vec<String> {
    let path = image
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let rel = dir.trim_start_matches('/');
        // Only real directories of the image (a PATH entry through a symlink is found where it points, if listed).
        let Ok(m) = std::fs::symlink_metadata(tree.join(rel)) else {
            continue;
        };
        if !m.is_dir() || Path::new(rel).components().count() > 8 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(tree.join(rel)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| cache_tag(n).is_some())
            .filter(|n| {
                std::fs::symlink_metadata(tree.join(rel).join(n))
                    .is_ok_and(|m| m.is_symlink() || (m.is_file() && m.mode() & 0o111 != 0))
            })
            .collect();
        // Highest version first.
        names.sort_by_key(|n| std::cmp::Reverse(n[8..].parse::<u32>().unwrap_or(0)));
        for n in names {
            if out.len() < MAX_INTERPRETERS && seen.insert(n.clone()) {
                out.push(format!("{}/{n}", dir.trim_end_matches('/')));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u32, mtime: u32, size: u32) -> Vec<u8> {
        let mut b = vec![0xa7, 0x0d, b'\r', b'\n'];
        for w in [flags, mtime, size] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(b"\xe3code follows");
        b
    }

    #[test]
    fn pyc_headers_parse() {
        let h = PycHeader::parse(&header(0, 1_700_000_000, 1234)).unwrap();
        assert_eq!(h.magic, [0xa7, 0x0d, b'\r', b'\n']);
        assert_eq!((h.flags, h.mtime, h.size), (0, 1_700_000_000, 1234));
        assert!(h.is_timestamp_based());
        assert!(!PycHeader::parse(&header(1, 0, 0))
            .unwrap()
            .is_timestamp_based());
        assert!(!PycHeader::parse(&header(3, 0, 0))
            .unwrap()
            .is_timestamp_based());
        // Too short, or not a magic number.
        assert_eq!(PycHeader::parse(&header(0, 1, 2)[..15]), None);
        let mut bad = header(0, 1, 2);
        bad[2] = b'x';
        assert_eq!(PycHeader::parse(&bad), None);
    }

    #[test]
    fn validity_is_pythons() {
        let h = PycHeader::parse(&header(0, 1000, 10)).unwrap();
        // int(st_mtime): the nanoseconds do not count.
        assert!(h.valid_for((1000, 999_999_999), 10));
        assert!(!h.valid_for((1001, 0), 10));
        assert!(!h.valid_for((1000, 0), 11));
        // Modulo 2^32, both of them.
        let wrapped = PycHeader::parse(&header(0, 5, 7)).unwrap();
        assert!(wrapped.valid_for(((1i64 << 32) + 5, 0), (1u64 << 32) + 7));
        // Hash-based bytecode is never valid by timestamp.
        let hashed = PycHeader::parse(&header(1, 1000, 10)).unwrap();
        assert!(!hashed.valid_for((1000, 0), 10));
    }

    #[test]
    fn the_rounding_rule() {
        let h = PycHeader::parse(&header(0, 1000, 10)).unwrap();
        // The tar rounded 1000.6 up to 1001 (or down from 1000.x to 999 by another builder): made valid.
        assert_eq!(h.rounded_mtime((1001, 0), 10), Some(1000));
        assert_eq!(h.rounded_mtime((999, 0), 10), Some(1000));
        // Already valid: nothing to do.
        assert_eq!(h.rounded_mtime((1000, 500), 10), None);
        // Another size: the source changed.
        assert_eq!(h.rounded_mtime((1001, 0), 11), None);
        // Further than rounding: a clamped (SOURCE_DATE_EPOCH) or rewritten timestamp; compiled instead.
        assert_eq!(h.rounded_mtime((1002, 0), 10), None);
        assert_eq!(h.rounded_mtime((315_532_800, 0), 10), None);
        // Hash-based: untouched.
        let hashed = PycHeader::parse(&header(3, 1000, 10)).unwrap();
        assert_eq!(hashed.rounded_mtime((1001, 0), 10), None);
        // Across the 2^32 wrap.
        let w = PycHeader::parse(&header(0, 0, 10)).unwrap();
        assert_eq!(w.rounded_mtime(((1i64 << 32) - 1, 0), 10), Some(1i64 << 32));
        // Negative mtimes truncate towards zero, as int() does.
        assert_eq!(py_seconds((-5, 1)), -4);
        assert_eq!(py_seconds((-5, 0)), -5);
    }

    #[test]
    fn pyc_names() {
        assert_eq!(
            split_pyc_name(b"os.cpython-311.pyc"),
            Some((&b"os"[..], &b"cpython-311"[..]))
        );
        assert_eq!(
            split_pyc_name(b"a.b.cpython-312.opt-1.pyc"),
            Some((&b"a.b"[..], &b"cpython-312.opt-1"[..]))
        );
        assert_eq!(split_pyc_name(b"os.pyc"), None);
        assert_eq!(cache_tag("python3.11").as_deref(), Some("cpython-311"));
        assert_eq!(cache_tag("python3"), None);
        assert_eq!(cache_tag("python3.11-config"), None);
    }

    fn write_pyc(dir: &Path, stem: &str, tag: &str, flags: u32, mtime: u32, size: u32) {
        std::fs::create_dir_all(dir.join("__pycache__")).unwrap();
        std::fs::write(
            dir.join("__pycache__").join(format!("{stem}.{tag}.pyc")),
            header(flags, mtime, size),
        )
        .unwrap();
    }

    fn set_time(path: &Path, secs: i64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        std::fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn survey_fixes_rounding_and_counts_what_needs_compiling() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let lib = root.join("usr/local/lib/python3.12");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
        std::fs::write(root.join("usr/local/bin/python3.12"), b"#!").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("usr/local/bin/python3.12"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        for (name, mtime, pyc) in [
            // valid already
            ("ok", 2000, Some((0, 2000))),
            // rounded by the tar: fixed
            ("rounded", 3001, Some((0, 3000))),
            // clamped: compiled
            ("clamped", 100, Some((0, 5000))),
            // hash-based: left alone, counts as valid
            ("hashed", 4001, Some((3, 4000))),
            // no bytecode
            ("bare", 6000, None),
        ] {
            std::fs::write(lib.join(format!("{name}.py")), b"x = 1\n").unwrap();
            set_time(&lib.join(format!("{name}.py")), mtime);
            if let Some((flags, recorded)) = pyc {
                write_pyc(&lib, name, "cpython-312", flags, recorded, 6);
            }
        }
        // Outside any library directory: not counted.
        std::fs::write(root.join("usr/local/bin/tool.py"), b"x").unwrap();
        // A bytecode file of another size: not a rounding case.
        std::fs::write(lib.join("grown.py"), b"x = 12\n").unwrap();
        set_time(&lib.join("grown.py"), 7001);
        write_pyc(&lib, "grown", "cpython-312", 0, 7000, 6);
        let image = ImageRuntimeConfig {
            env: vec!["PATH=/usr/local/bin:/usr/bin".into()],
            ..ImageRuntimeConfig::default()
        };
        let s = survey(root, &image).unwrap();
        assert_eq!(s.interpreters, vec!["/usr/local/bin/python3.12".to_owned()]);
        assert_eq!(
            s.rounded,
            vec![(PathBuf::from("usr/local/lib/python3.12/rounded.py"), 3000)]
        );
        assert_eq!(s.uncompiled, 3, "clamped, bare, grown");
        assert_eq!(s.hash_based, 1);
        assert_eq!(apply_rounding(root, &s).unwrap(), 1);
        let m = std::fs::metadata(lib.join("rounded.py")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (3000, 0));
        // Surveyed again: nothing left to round.
        assert!(survey(root, &image).unwrap().rounded.is_empty());
    }

    #[test]
    fn dir_times_come_back_and_symlinks_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        set_time(&root.join("a"), 1000);
        set_time(&root.join("a/b"), 2000);
        set_time(&outside, 3000);
        let times = DirTimes::record(&root).unwrap();
        std::fs::create_dir(root.join("a/b/__pycache__")).unwrap();
        // What ran inside replaced a directory with a link out of the root.
        std::fs::remove_dir(root.join("a/b/__pycache__")).unwrap();
        std::fs::remove_dir(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/b")).unwrap();
        std::fs::write(root.join("a/new"), b"").unwrap();
        times.restore(&root).unwrap();
        assert_eq!(std::fs::metadata(root.join("a")).unwrap().mtime(), 1000);
        assert_eq!(std::fs::metadata(&outside).unwrap().mtime(), 3000);
    }
}
