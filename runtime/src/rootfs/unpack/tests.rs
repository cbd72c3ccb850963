//! Attack and behaviour tests for the layer unpacker.
//!
//! Layers are written as raw tar blocks (the `tar` crate refuses to write `..` or
//! absolute names). Every attack test runs under both resolvers and checks that nothing
//! outside the root changed: a sentinel file next to the root, and the whole tree
//! around it (names, modes, owners, link counts, contents).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::resolve::Resolver;
use super::tar::TarError;
use super::*;

const MTIME: u64 = 1_600_000_000;
const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Manual];

/// Writes tar archives block by block, with whatever names we like.
struct RawTar {
    buf: Vec<u8>,
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{:0width$o}\0", value, width = field.len() - 1);
    assert_eq!(text.len(), field.len(), "value too large for the field");
    field.copy_from_slice(text.as_bytes());
}

impl RawTar {
    fn new() -> Self {
        RawTar { buf: Vec::new() }
    }

    #[allow(clippy::too_many_arguments)]
    fn header_full(
        &mut self,
        name: &[u8],
        kind: u8,
        mode: u32,
        size: u64,
        link: &[u8],
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "use PAX for long names"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], uid);
        octal(&mut h[116..124], gid);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], MTIME);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        self.buf.extend_from_slice(&h);
        self
    }

    fn header(&mut self, name: &[u8], kind: u8, mode: u32, size: u64, link: &[u8]) -> &mut Self {
        self.header_full(name, kind, mode, size, link, 0, 0)
    }

    fn data(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }

    fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.header(name.as_bytes(), b'0', mode, data.len() as u64, b"")
            .data(data)
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.header(name.as_bytes(), b'5', mode, 0, b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(name.as_bytes(), b'2', 0o777, 0, target.as_bytes())
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(name.as_bytes(), b'1', 0o644, 0, target.as_bytes())
    }

    fn empty(&mut self, name: &str) -> &mut Self {
        self.file(name, b"")
    }

    /// A PAX extended header describing the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            // "<len> key=value\n", where len counts its own digits.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while format!("{len}").len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.header(b"PaxHeaders/x", b'x', 0o644, body.len() as u64, b"")
            .data(&body)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// A temporary directory holding `root/` (what we unpack into) and things that must
/// never change: `sentinel`, a file, and `outside/`, a directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: i64,
    content: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_owned();
        let root = base.join("root");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(base.join("sentinel"), b"SENTINEL").unwrap();
        fs::set_permissions(base.join("sentinel"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::create_dir(base.join("outside")).unwrap();
        fs::write(base.join("outside/file"), b"OUTSIDE").unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o750)).unwrap();
        Fixture {
            _tmp: tmp,
            base,
            root,
        }
    }

    /// Everything outside the root, and the base directory itself.
    fn outside(&self) -> BTreeMap<PathBuf, Node> {
        let mut out = BTreeMap::new();
        self.walk(&self.base, &mut out);
        out
    }

    fn walk(&self, path: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        if path == self.root {
            return;
        }
        let meta = fs::symlink_metadata(path).unwrap();
        let content = if meta.file_type().is_file() {
            fs::read(path).unwrap()
        } else if meta.file_type().is_symlink() {
            fs::read_link(path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        out.insert(
            path.to_owned(),
            Node {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                nlink: meta.nlink(),
                mtime: meta.mtime(),
                content,
            },
        );
        if meta.is_dir() {
            for child in fs::read_dir(path).unwrap() {
                self.walk(&child.unwrap().path(), out);
            }
        }
    }

    fn builder(&self, resolver: Resolver, opts: UnpackOptions) -> RootBuilder {
        let fd = RootBuilder::open_root(&self.root).unwrap();
        RootBuilder::with_resolver(&self.root, fd, opts, resolver)
    }

    /// Applies the layers (uncompressed) and finishes, stopping at the first error.
    fn apply(
        &self,
        resolver: Resolver,
        layers: &[Vec<u8>],
    ) -> Result<Vec<LayerStats>, UnpackError> {
        self.apply_opts(resolver, UnpackOptions::default(), layers)
    }

    fn apply_opts(
        &self,
        resolver: Resolver,
        opts: UnpackOptions,
        layers: &[Vec<u8>],
    ) -> Result<Vec<LayerStats>, UnpackError> {
        let mut b = self.builder(resolver, opts);
        let mut stats = Vec::new();
        for layer in layers {
            stats.push(b.apply_layer(layer.as_slice(), Compression::None)?);
        }
        b.finish()?;
        Ok(stats)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap()
    }

    fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    fn lmeta(&self, rel: &str) -> fs::Metadata {
        fs::symlink_metadata(self.path(rel)).unwrap()
    }
}

/// Runs `attack` on a fresh fixture per resolver, and checks nothing outside changed.
fn attack(check: impl Fn(&Fixture, Resolver)) {
    for resolver in RESOLVERS {
        let fx = Fixture::new();
        let before = fx.outside();
        check(&fx, resolver);
        assert_eq!(
            before,
            fx.outside(),
            "something outside the root changed ({resolver:?})"
        );
        assert_eq!(fs::read(fx.base.join("sentinel")).unwrap(), b"SENTINEL");
    }
}

fn base_str(fx: &Fixture) -> String {
    fx.base.to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------- 1. paths

#[test]
fn dotdot_escapes_are_rejected_with_the_entry_name() {
    attack(|fx, r| {
        for name in ["../sentinel", "a/../../sentinel", "./../root/../sentinel"] {
            let layer = RawTar::new().file(name, b"PWNED").finish();
            match fx.apply(r, &[layer]) {
                Err(UnpackError::Escape { entry }) => assert_eq!(entry, name),
                other => panic!("{name}: expected Escape, got {other:?}"),
            }
        }
    });
}

#[test]
fn absolute_paths_are_relative_to_the_root() {
    attack(|fx, r| {
        let layer = RawTar::new().file("/abs/../../sentinel", b"PWNED").finish();
        assert!(matches!(
            fx.apply(r, &[layer]),
            Err(UnpackError::Escape { .. })
        ));

        let target = format!("{}/sentinel", base_str(fx));
        let layer = RawTar::new()
            .file("/abs/file", b"ok")
            .file(&target, b"PWNED")
            .finish();
        fx.apply(r, &[layer]).unwrap();
        assert_eq!(fx.read("abs/file"), b"ok");
        // The host path of the sentinel, taken inside the root.
        assert_eq!(fx.read(target.trim_start_matches('/')), b"PWNED");
    });
}

#[test]
fn nul_and_whiteout_parents_are_rejected() {
    attack(|fx, r| {
        let layer = RawTar::new().pax(&[("path", b"a\0b")]).empty("x").finish();
        assert!(matches!(
            fx.apply(r, &[layer]),
            Err(UnpackError::InvalidEntry { .. })
        ));
        let layer = RawTar::new().empty(".wh.dir/file").finish();
        assert!(matches!(
            fx.apply(r, &[layer]),
            Err(UnpackError::InvalidEntry { .. })
        ));
        let layer = RawTar::new().file("./", b"").finish();
        assert!(matches!(
            fx.apply(r, &[layer]),
            Err(UnpackError::InvalidEntry { .. })
        ));
    });
}

// ---------------------------------------------------------------- 2. symlinks

#[test]
fn writing_through_a_symlink_to_outside_stays_inside() {
    attack(|fx, r| {
        // Relative target climbing out: clamped to the root.
        let layer = RawTar::new()
            .symlink("up", "../../..")
            .file("up/sentinel", b"PWNED")
            .finish();
        fx.apply(r, &[layer]).unwrap();
        assert_eq!(fx.read("sentinel"), b"PWNED");
        assert!(fx.lmeta("up").file_type().is_symlink());
    });
    attack(|fx, r| {
        // Absolute target: means <root>/<base>, which does not exist: refused.
        let layer = RawTar::new()
            .symlink("abs", &base_str(fx))
            .file("abs/sentinel", b"PWNED")
            .finish();
        match fx.apply(r, &[layer]) {
            Err(UnpackError::Fs { entry, .. }) => assert_eq!(entry, "abs/sentinel"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
    attack(|fx, r| {
        // Absolute target that exists inside the root: followed inside.
        let b = base_str(fx);
        let layer = RawTar::new()
            .symlink("abs", &b)
            .dir(&format!("{}/", b.trim_start_matches('/')), 0o755)
            .file("abs/sentinel", b"INSIDE")
            .finish();
        fx.apply(r, &[layer]).unwrap();
        assert_eq!(
            fx.read(&format!("{}/sentinel", b.trim_start_matches('/'))),
            b"INSIDE"
        );
    });
}

#[test]
fn a_file_entry_replaces_a_symlink_instead_of_writing_through_it() {
    attack(|fx, r| {
        let target = format!("{}/sentinel", base_str(fx));
        let layer = RawTar::new()
            .symlink("s", &target)
            .symlink("t", "../sentinel")
            .file("s", b"PWNED")
            .file("t", b"PWNED")
            .finish();
        fx.apply(r, &[layer]).unwrap();
        for name in ["s", "t"] {
            assert!(fx.lmeta(name).file_type().is_file());
            assert_eq!(fx.read(name), b"PWNED");
        }
    });
}

#[test]
fn symlink_chains_stay_inside() {
    attack(|fx, r| {
        let layer = RawTar::new()
            .symlink("l1", "l2")
            .dir("l3/", 0o755)
            .symlink("l2", "/l3/../l4")
            .symlink("l4", "../../../..")
            .file("l1/sentinel", b"PWNED")
            .finish();
        fx.apply(r, &[layer]).unwrap();
        assert_eq!(fx.read("sentinel"), b"PWNED");
    });
    attack(|fx, r| {
        // A loop is an error, not a hang.
        let layer = RawTar::new()
            .symlink("a", "b")
            .symlink("b", "a")
            .file("a/f", b"x")
            .finish();
        assert!(matches!(fx.apply(r, &[layer]), Err(UnpackError::Fs { .. })));
    });
}

#[test]
fn directory_replaced_by_symlink_then_written_into() {
    attack(|fx, r| {
        // In one layer: `d/f` caches `d` as a parent; the symlink must invalidate it.
        let layer = RawTar::new()
            .dir("d/", 0o755)
            .file("d/f", b"first")
            .symlink("d", "../..")
            .file("d/sentinel", b"PWNED")
            .finish();
        fx.apply(r, &[layer]).unwrap();
        assert!(fx.lmeta("d").file_type().is_symlink());
        assert_eq!(fx.read("sentinel"), b"PWNED");
        assert!(!fx.exists("f"));
    });
    attack(|fx, r| {
        // Across layers, with an absolute target.
        let lower = RawTar::new()
            .dir("d/", 0o755)
            .file("d/f", b"first")
            .finish();
        let upper = RawTar::new()
            .symlink("d", &base_str(fx))
            .file("d/sentinel", b"PWNED")
            .finish();
        assert!(matches!(
            fx.apply(r, &[lower, upper]),
            Err(UnpackError::Fs { .. })
        ));
    });
}

// ---------------------------------------------------------------- 3. hard links

#[test]
fn hardlink_to_dotdot_is_rejected() {
    attack(|fx, r| {
        let layer = RawTar::new().hardlink("h", "../sentinel").finish();
        match fx.apply(r, &[layer]) {
            Err(UnpackError::HardlinkEscape { entry, target }) => {
                assert_eq!((entry.as_str(), target.as_str()), ("h", "../sentinel"));
            }
            other => panic!("expected HardlinkEscape, got {other:?}"),
        }
    });
}

#[test]
fn hardlink_through_a_symlink_to_outside_stays_inside() {
    attack(|fx, r| {
        let layer = RawTar::new()
            .symlink("up", "../..")
            .hardlink("h", "up/sentinel")
            .finish();
        // `up` means the root, which has no `sentinel`.
        assert!(matches!(fx.apply(r, &[layer]), Err(UnpackError::Fs { .. })));
    });
    attack(|fx, r| {
        let abs = format!("{}/sentinel", base_str(fx));
        let layer = RawTar::new()
            .file("sentinel", b"INSIDE")
            .symlink("up", "../..")
            .hardlink("h", "up/sentinel")
            .hardlink("h2", &abs)
            .finish();
        assert!(matches!(fx.apply(r, &[layer]), Err(UnpackError::Fs { .. })));
        assert_eq!(fx.read("h"), b"INSIDE");
        assert_eq!(fx.lmeta("h").ino(), fx.lmeta("sentinel").ino());
    });
    attack(|fx, r| {
        // A hard link to a symlink links the symlink itself.
        let layer = RawTar::new()
            .symlink("s", "../sentinel")
            .hardlink("h", "s")
            .finish();
        fx.apply(r, &[layer]).unwrap();
        assert!(fx.lmeta("h").file_type().is_symlink());
        assert_eq!(fx.lmeta("h").ino(), fx.lmeta("s").ino());
    });
}

// ---------------------------------------------------------------- 4. chmod/chown

#[test]
fn chmod_and_chown_never_follow_symlinks() {
    attack(|fx, r| {
        let abs = format!("{}/sentinel", base_str(fx));
        let layer = RawTar::new()
            .header_full(b"s", b'2', 0o777, 0, abs.as_bytes(), 4242, 4242)
            .header_full(b"t", b'2', 0o777, 0, b"../../sentinel", 4242, 4242)
            // Deferred directory metadata on a path that later becomes a symlink to the
            // base directory: finish() must not chmod the base directory.
            .header_full(b"d/", b'5', 0o777, 0, b"", 4242, 4242)
            .symlink("d", &base_str(fx))
            .header_full(b"e/", b'5', 0o777, 0, b"", 4242, 4242)
            .symlink("e", "..")
            .finish();
        let opts = UnpackOptions {
            ownership: Ownership::Chown,
            ..Default::default()
        };
        fx.apply_opts(r, opts, &[layer]).unwrap();
        assert!(fx.lmeta("s").file_type().is_symlink());
        assert!(fx.lmeta("d").file_type().is_symlink());
    });
}

// ---------------------------------------------------------------- 5. whiteouts

#[test]
fn whiteouts_do_not_follow_symlinked_directories() {
    attack(|fx, r| {
        let lower = RawTar::new()
            .file("sentinel", b"INSIDE")
            .symlink("up", "..")
            .symlink("abs", &base_str(fx))
            .symlink("here", ".")
            .finish();
        let upper = RawTar::new()
            .empty("up/.wh.sentinel")
            .empty("abs/.wh.sentinel")
            .empty("here/.wh.sentinel")
            .empty("abs/.wh.outside")
            .finish();
        let stats = fx.apply(r, &[lower, upper]).unwrap();
        assert_eq!(stats[1].whiteouts, 4);
        // Not even the file inside the root: a whiteout under a symlink names nothing.
        assert_eq!(fx.read("sentinel"), b"INSIDE");
    });
}

#[test]
fn whiteout_of_a_symlink_removes_the_link_not_its_target() {
    attack(|fx, r| {
        let lower = RawTar::new()
            .symlink("s", "../sentinel")
            .symlink("o", "../../outside")
            .finish();
        let upper = RawTar::new().empty(".wh.s").empty(".wh.o").finish();
        fx.apply(r, &[lower, upper]).unwrap();
        assert!(!fx.exists("s") && !fx.exists("o"));
    });
}

#[test]
fn degenerate_whiteouts_are_rejected() {
    attack(|fx, r| {
        for name in [".wh.", ".wh..", ".wh...", "dir/.wh...", "dir/.wh.."] {
            let lower = RawTar::new()
                .dir("dir/", 0o755)
                .file("dir/keep", b"k")
                .file("keep", b"k")
                .finish();
            let upper = RawTar::new().empty(name).finish();
            match fx.apply(r, &[lower, upper]) {
                Err(UnpackError::InvalidWhiteout { entry }) => assert_eq!(entry, name),
                other => panic!("{name}: expected InvalidWhiteout, got {other:?}"),
            }
            assert_eq!(fx.read("keep"), b"k");
            assert_eq!(fx.read("dir/keep"), b"k");
        }
    });
}

#[test]
fn whiteout_files_are_never_created_and_hide_only_lower_layers() {
    for r in RESOLVERS {
        let fx = Fixture::new();
        let lower = RawTar::new()
            .file("a", b"lower")
            .dir("d/", 0o755)
            .file("d/x", b"x")
            .file("gone", b"g")
            .finish();
        let upper = RawTar::new()
            .file("a", b"upper")
            // Same layer: not hidden.
            .empty(".wh.a")
            .empty(".wh.d")
            .empty(".wh.gone")
            .empty(".wh.never-existed")
            .finish();
        fx.apply(r, &[lower, upper]).unwrap();
        assert_eq!(fx.read("a"), b"upper");
        assert!(!fx.exists("d") && !fx.exists("gone"));
        let names: Vec<_> = fs::read_dir(&fx.root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".wh.")),
            "{names:?}"
        );
    }
}

#[test]
fn opaque_whiteout_hides_lower_content_and_keeps_this_layer() {
    for r in RESOLVERS {
        let fx = Fixture::new();
        let lower = RawTar::new()
            .dir("d/", 0o755)
            .file("d/a", b"a")
            .dir("d/sub/", 0o755)
            .file("d/sub/b", b"b")
            .dir("d/gone/", 0o755)
            .file("d/gone/x", b"x")
            .file("d/lnk-target", b"t")
            .file("other", b"o")
            .finish();
        let upper = RawTar::new()
            .file("d/new", b"new")
            .file("d/sub/c", b"c")
            .symlink("d/lnk", "lnk-target")
            .empty("d/.wh..wh..opq")
            .file("d/after", b"after")
            .finish();
        let stats = fx.apply(r, &[lower, upper]).unwrap();
        assert_eq!(stats[1].whiteouts, 1);
        for kept in ["d/new", "d/after", "d/sub/c", "d/lnk", "other"] {
            assert!(fx.exists(kept), "{kept} should exist ({r:?})");
        }
        for gone in ["d/a", "d/sub/b", "d/gone", "d/lnk-target", "d/.wh..wh..opq"] {
            assert!(!fx.exists(gone), "{gone} should be gone ({r:?})");
        }
    }
}

#[test]
fn opaque_marker_first_then_entries() {
    let fx = Fixture::new();
    let lower = RawTar::new().dir("d/", 0o711).file("d/a", b"a").finish();
    let upper = RawTar::new()
        .dir("d/", 0o750)
        .empty("d/.wh..wh..opq")
        .file("d/b", b"b")
        .finish();
    fx.apply(Resolver::Openat2, &[lower, upper]).unwrap();
    assert!(!fx.exists("d/a"));
    assert_eq!(fx.read("d/b"), b"b");
    assert_eq!(fx.lmeta("d").mode() & 0o7777, 0o750);
}

// ---------------------------------------------------------------- 6. type changes, duplicates

#[test]
fn type_changes_across_layers() {
    for r in RESOLVERS {
        let fx = Fixture::new();
        let l1 = RawTar::new()
            .file("x", b"file")
            .dir("y/", 0o755)
            .file("y/z", b"z")
            .finish();
        let l2 = RawTar::new()
            .dir("x/", 0o755)
            .file("x/w", b"w")
            .file("y", b"now a file")
            .finish();
        fx.apply(r, &[l1.clone(), l2.clone()]).unwrap();
        assert!(fx.lmeta("x").is_dir());
        assert_eq!(fx.read("x/w"), b"w");
        assert_eq!(fx.read("y"), b"now a file");

        let fx = Fixture::new();
        let l3 = RawTar::new().file("x", b"file again").finish();
        fx.apply(r, &[l1, l2, l3]).unwrap();
        assert_eq!(fx.read("x"), b"file again");
    }
}

#[test]
fn duplicates_in_one_layer_last_wins() {
    for r in RESOLVERS {
        let fx = Fixture::new();
        let layer = RawTar::new()
            .file("f", b"one")
            .file("f", b"two")
            .symlink("g", "f")
            .file("g", b"real")
            .file("h", b"file")
            .symlink("h", "f")
            .file("t", b"file")
            .dir("t/", 0o755)
            .file("t/u", b"u")
            .file("t", b"file at last")
            .dir("k/", 0o700)
            .dir("k/", 0o751)
            .finish();
        fx.apply(r, &[layer]).unwrap();
        assert_eq!(fx.read("f"), b"two");
        assert!(fx.lmeta("g").is_file());
        assert_eq!(fx.read("g"), b"real");
        assert_eq!(fs::read_link(fx.path("h")).unwrap(), Path::new("f"));
        assert_eq!(fx.read("t"), b"file at last");
        assert_eq!(fx.lmeta("k").mode() & 0o7777, 0o751);
    }
}

// ---------------------------------------------------------------- 7. devices, FIFOs

#[test]
fn devices_are_skipped_and_fifos_created() {
    for r in RESOLVERS {
        let fx = Fixture::new();
        let lower = RawTar::new().file("dev/console", b"was a file").finish();
        let upper = RawTar::new()
            .header(b"dev/null", b'3', 0o666, 0, b"")
            .header(b"dev/console", b'3', 0o600, 0, b"")
            .header(b"dev/sda", b'4', 0o660, 0, b"")
            .header(b"run/fifo", b'6', 0o640, 0, b"")
            .finish();
        let stats = fx.apply(r, &[lower, upper]).unwrap();
        assert_eq!(stats[1].skipped_devices, 3);
        assert!(!fx.exists("dev/null") && !fx.exists("dev/sda") && !fx.exists("dev/console"));
        let fifo = fx.lmeta("run/fifo");
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o640);
    }
}

// ---------------------------------------------------------------- 8. modes

#[test]
fn read_only_directories_with_children_across_layers() {
    for r in RESOLVERS {
        let fx = Fixture::new();
        let l1 = RawTar::new()
            .dir("ro/", 0o555)
            .dir("ro/sub/", 0o500)
            .file("ro/sub/f", b"f")
            .file("ro/f", b"f")
            .finish();
        let l2 = RawTar::new()
            .file("ro/g", b"g")
            .file("ro/sub/g", b"g")
            .finish();
        fx.apply(r, &[l1, l2]).unwrap();
        assert_eq!(fx.lmeta("ro").mode() & 0o7777, 0o555);
        assert_eq!(fx.lmeta("ro/sub").mode() & 0o7777, 0o500);
        assert_eq!(fx.lmeta("ro").mtime(), MTIME as i64);
        assert_eq!(fx.lmeta("ro/sub").mtime(), MTIME as i64);
        assert_eq!(fx.read("ro/sub/g"), b"g");
        // Let the temporary directory be removed.
        fs::set_permissions(fx.path("ro/sub"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(fx.path("ro"), fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn directories_under_a_symlinked_parent_get_their_mode() {
    for r in RESOLVERS {
        // usrmerge: `lib -> usr/lib` in the base layer, a later layer writes `lib/sub/`.
        let fx = Fixture::new();
        let lower = RawTar::new()
            .dir("usr/", 0o755)
            .dir("usr/lib/", 0o755)
            .symlink("lib", "usr/lib")
            .finish();
        let upper = RawTar::new()
            .dir("lib/sub/", 0o750)
            .file("lib/sub/f", b"f")
            .finish();
        fx.apply(r, &[lower, upper]).unwrap();
        assert!(fx.lmeta("lib").file_type().is_symlink());
        assert_eq!(fx.lmeta("usr/lib/sub").mode() & 0o7777, 0o750);
        assert_eq!(fx.read("usr/lib/sub/f"), b"f");

        // The same directory removed through its other path: finish has nothing to do.
        let fx = Fixture::new();
        let lower = RawTar::new()
            .dir("usr/", 0o755)
            .dir("usr/lib/", 0o755)
            .symlink("lib", "usr/lib")
            .finish();
        let upper = RawTar::new().dir("lib/sub/", 0o750).finish();
        let top = RawTar::new().empty("usr/.wh.lib").finish();
        fx.apply(r, &[lower, upper, top]).unwrap();
        assert!(!fx.exists("usr/lib"));
    }
}

#[test]
fn file_modes_mtimes_and_setuid_are_kept() {
    let fx = Fixture::new();
    let layer = RawTar::new()
        .file_mode("su", b"x", 0o4755)
        .file_mode("sg", b"x", 0o2750)
        .file_mode("none", b"x", 0o000)
        .pax(&[("mtime", b"1700000000.5")])
        .file("precise", b"p")
        .finish();
    fx.apply(Resolver::Openat2, &[layer]).unwrap();
    assert_eq!(fx.lmeta("su").mode() & 0o7777, 0o4755);
    assert_eq!(fx.lmeta("sg").mode() & 0o7777, 0o2750);
    assert_eq!(fx.lmeta("none").mode() & 0o7777, 0o000);
    assert_eq!(fx.lmeta("su").mtime(), MTIME as i64);
    assert_eq!(
        (
            fx.lmeta("precise").mtime(),
            fx.lmeta("precise").mtime_nsec()
        ),
        (1_700_000_000, 500_000_000)
    );
}

#[test]
fn implicit_parents_and_root_entry() {
    let fx = Fixture::new();
    let layer = RawTar::new()
        .dir("./", 0o755)
        .file("usr/lib/deep/libx.so", b"elf")
        .finish();
    fx.apply(Resolver::Openat2, &[layer]).unwrap();
    assert_eq!(fx.read("usr/lib/deep/libx.so"), b"elf");
    for d in ["usr", "usr/lib", "usr/lib/deep"] {
        assert_eq!(fx.lmeta(d).mode() & 0o7777, IMPLICIT_DIR_MODE);
    }
    let root = fs::metadata(&fx.root).unwrap();
    assert_eq!((root.mode() & 0o7777, root.mtime()), (0o755, MTIME as i64));
}

#[test]
fn ownership_chown_applies_recorded_ids() {
    let fx = Fixture::new();
    let layer = RawTar::new()
        .header_full(b"f", b'0', 0o644, 0, b"", 1234, 5678)
        .header_full(b"l", b'2', 0o777, 0, b"f", 1234, 5678)
        .header_full(b"d/", b'5', 0o755, 0, b"", 1234, 5678)
        .finish();
    let opts = UnpackOptions {
        ownership: Ownership::Chown,
        ..Default::default()
    };
    fx.apply_opts(Resolver::Openat2, opts, &[layer]).unwrap();
    // As root the ids are applied; otherwise EPERM leaves them ours (as for a file we
    // just created).
    fs::write(fx.base.join("mine"), b"").unwrap();
    let mine = fs::metadata(fx.base.join("mine")).unwrap();
    let expect = if mine.uid() == 0 {
        (1234, 5678)
    } else {
        (mine.uid(), mine.gid())
    };
    for name in ["f", "l", "d"] {
        let m = fx.lmeta(name);
        assert_eq!((m.uid(), m.gid()), expect, "{name}");
    }
}

#[test]
fn ownership_shift_moves_ids_into_the_range() {
    let fx = Fixture::new();
    let layer = RawTar::new()
        .header_full(b"f", b'0', 0o644, 0, b"", 1000, 1001)
        .header_full(b"l", b'2', 0o777, 0, b"f", 0, 0)
        .header_full(b"d/", b'5', 0o755, 0, b"", 7, 8)
        .header_full(b"far", b'0', 0o644, 0, b"", 70_000, 70_000)
        .finish();
    let opts = UnpackOptions {
        ownership: Ownership::Shift {
            uid: 500_000,
            gid: 600_000,
            count: 65_536,
        },
        ..Default::default()
    };
    fx.apply_opts(Resolver::Openat2, opts, &[layer]).unwrap();
    fs::write(fx.base.join("mine"), b"").unwrap();
    let mine = fs::metadata(fx.base.join("mine")).unwrap();
    let root = mine.uid() == 0;
    let want = |u: u32, g: u32| {
        if root {
            (u, g)
        } else {
            (mine.uid(), mine.gid())
        }
    };
    assert_eq!(fx.lmeta("f").uid(), want(501_000, 601_001).0);
    assert_eq!(fx.lmeta("f").gid(), want(501_000, 601_001).1);
    assert_eq!(
        (fx.lmeta("l").uid(), fx.lmeta("l").gid()),
        want(500_000, 600_000)
    );
    assert_eq!(
        (fx.lmeta("d").uid(), fx.lmeta("d").gid()),
        want(500_007, 600_008)
    );
    // Outside the range: the unpacking user keeps it.
    assert_eq!(
        (fx.lmeta("far").uid(), fx.lmeta("far").gid()),
        (mine.uid(), mine.gid())
    );
}

// ---------------------------------------------------------------- 9. bombs

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn zstd_bombs_and_huge_windows_are_refused() {
    let opts = UnpackOptions {
        limits: UnpackLimits {
            max_total_bytes: 1 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut t = RawTar::new();
    t.header(b"zero", b'0', 0o644, 8 << 20, b"")
        .data(&vec![0u8; 8 << 20]);
    let bomb = zstd::bulk::compress(&t.finish(), 3).unwrap();
    assert!(bomb.len() < 64 << 10, "the bomb should compress well");
    let fx = Fixture::new();
    let mut b = fx.builder(Resolver::Openat2, opts);
    assert!(matches!(
        b.apply_layer(bomb.as_slice(), Compression::Zstd),
        Err(UnpackError::TooLarge { limit }) if limit == 1 << 20
    ));
    assert!(!fx.exists("zero"));

    // A frame that asks for a 1 GiB window (window descriptor exponent 20: 2^30) and holds one raw byte: the
    // decoder refuses it instead of allocating the window.
    let huge_window = [
        0x28,
        0xb5,
        0x2f,
        0xfd,    // magic
        0x00,    // no single segment, no checksum, no dictionary, no content size
        20 << 3, // window log 10 + 20
        0x09,
        0x00,
        0x00, // last block, raw, 1 byte
        b'x',
    ];
    let fx = Fixture::new();
    let err = fx
        .builder(Resolver::Openat2, UnpackOptions::default())
        .apply_layer(&huge_window[..], Compression::Zstd)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::Archive(TarError::Io { .. })),
        "{err:?}"
    );
    // The same frame with an 8 KiB window is fine as zstd (and then not a tar).
    let mut small_window = huge_window;
    small_window[5] = 3 << 3;
    let err = fx
        .builder(Resolver::Openat2, UnpackOptions::default())
        .apply_layer(&small_window[..], Compression::Zstd)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::Archive(TarError::Truncated { .. })),
        "{err:?}"
    );
    assert!(matches!(
        fx.builder(Resolver::Openat2, UnpackOptions::default())
            .apply_layer(&b"not zstd at all"[..], Compression::Zstd),
        Err(UnpackError::Archive(TarError::Io { .. }))
    ));
}

#[test]
fn zero_bomb_over_the_byte_limit() {
    let opts = UnpackOptions {
        limits: UnpackLimits {
            max_total_bytes: 1 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut t = RawTar::new();
    t.header(b"zero", b'0', 0o644, 8 << 20, b"")
        .data(&vec![0u8; 8 << 20]);
    let bomb = gzip(&t.finish());
    assert!(bomb.len() < 64 << 10, "the bomb should compress well");
    let mut raw = RawTar::new().file("small", b"s").finish();
    raw.extend(std::iter::repeat_n(0u8, 8 << 20));
    let trailing_bomb = gzip(&raw);
    for r in RESOLVERS {
        // A file whose declared size is over the budget: refused before it is created.
        let fx = Fixture::new();
        let mut b = fx.builder(r, opts);
        assert!(matches!(
            b.apply_layer(bomb.as_slice(), Compression::Gzip),
            Err(UnpackError::TooLarge { limit }) if limit == 1 << 20
        ));
        assert!(!fx.exists("zero"));

        // Zeros after the end-of-archive marker count too (they are read for the diff_id).
        let fx = Fixture::new();
        let mut b = fx.builder(r, opts);
        assert!(matches!(
            b.apply_layer(trailing_bomb.as_slice(), Compression::Gzip),
            Err(UnpackError::TooLarge { .. })
        ));

        // The budget is shared by the layers.
        let fx = Fixture::new();
        let mut b = fx.builder(r, opts);
        let most = RawTar::new().file("a", &vec![1u8; 700 << 10]).finish();
        b.apply_layer(most.as_slice(), Compression::None).unwrap();
        assert!(matches!(
            b.apply_layer(most.as_slice(), Compression::None),
            Err(UnpackError::TooLarge { .. })
        ));
    }
}

#[test]
fn too_many_entries() {
    let fx = Fixture::new();
    let mut t = RawTar::new();
    for i in 0..20 {
        t.file(&format!("f{i}"), b"x");
    }
    let opts = UnpackOptions {
        limits: UnpackLimits {
            max_entries: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = fx
        .apply_opts(Resolver::Openat2, opts, &[t.finish()])
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { limit: 10 }),
        "{err:?}"
    );
    assert_eq!(fs::read_dir(&fx.root).unwrap().count(), 10);
}

#[test]
fn pax_and_path_limits() {
    let opts = UnpackOptions {
        limits: UnpackLimits {
            max_path_len: 64,
            max_pax_bytes: 4096,
            ..Default::default()
        },
        ..Default::default()
    };
    let fx = Fixture::new();
    let big = vec![b'a'; 8000];
    let layer = RawTar::new().pax(&[("comment", &big)]).empty("x").finish();
    let err = fx
        .apply_opts(Resolver::Openat2, opts, &[layer])
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::Archive(TarError::PaxTooLarge { size, limit: 4096, .. }) if size > 8000),
        "{err:?}"
    );

    let long = "d/".repeat(40) + "f";
    let layer = RawTar::new()
        .pax(&[("path", long.as_bytes())])
        .empty("x")
        .finish();
    let err = fx
        .apply_opts(Resolver::Openat2, opts, &[layer])
        .unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Archive(TarError::PathTooLong { limit: 64, .. })
        ),
        "{err:?}"
    );

    let mut t = RawTar::new();
    t.header(b"././@LongLink", b'L', 0o644, 1000, b"")
        .data(&[b'a'; 1000]);
    let layer = t.empty("x").finish();
    let err = fx
        .apply_opts(Resolver::Openat2, opts, &[layer])
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::Archive(TarError::PathTooLong { .. })),
        "{err:?}"
    );
}

#[test]
fn malformed_archives_are_errors() {
    let fx = Fixture::new();
    let mut layer = RawTar::new().file("f", b"data").finish();
    layer[0] = b'g'; // checksum no longer matches
    assert!(matches!(
        fx.apply(Resolver::Openat2, &[layer]),
        Err(UnpackError::Archive(TarError::BadChecksum { offset: 0 }))
    ));
    let layer = RawTar::new().file("f", &[7u8; 2000]).finish();
    assert!(matches!(
        fx.apply(Resolver::Openat2, &[layer[..1500].to_vec()]),
        Err(UnpackError::Archive(TarError::Truncated { .. }))
    ));
    let layer = RawTar::new().pax(&[("path", b"x")]).finish();
    assert!(matches!(
        fx.apply(Resolver::Openat2, &[layer]),
        Err(UnpackError::Archive(TarError::DanglingExtension { .. }))
    ));
    assert!(matches!(
        fx.builder(Resolver::Openat2, UnpackOptions::default())
            .apply_layer(&b"not gzip at all"[..], Compression::Gzip),
        Err(UnpackError::Archive(TarError::Io { .. }))
    ));
}

// ---------------------------------------------------------------- compression, diff_id

#[test]
fn gzip_and_plain_give_the_same_tree_and_diff_id() {
    let mut raw = RawTar::new()
        .dir("etc/", 0o755)
        .file("etc/os-release", b"ID=test\n")
        .file(
            "big",
            &(0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        )
        .finish();
    // Bytes after the end-of-archive marker are part of the diff_id.
    raw.extend_from_slice(&[0u8; 4096]);
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));

    let gz = gzip(&raw);
    // Two gzip members, as some tools write.
    let mut multi = gzip(&raw[..1000]);
    multi.extend(gzip(&raw[1000..]));

    let zst = zstd::bulk::compress(&raw, 3).unwrap();
    // Two zstd frames.
    let mut zst_multi = zstd::bulk::compress(&raw[..1000], 1).unwrap();
    zst_multi.extend(zstd::bulk::compress(&raw[1000..], 19).unwrap());
    assert_ne!(zst, raw);

    for (data, compression) in [
        (&raw, Compression::None),
        (&gz, Compression::Gzip),
        (&multi, Compression::Gzip),
        (&zst, Compression::Zstd),
        (&zst_multi, Compression::Zstd),
    ] {
        let fx = Fixture::new();
        let mut b = fx.builder(Resolver::Openat2, UnpackOptions::default());
        let stats = b.apply_layer(data.as_slice(), compression).unwrap();
        b.finish().unwrap();
        assert_eq!(stats.diff_id, expected);
        assert_eq!(stats.entries, 3);
        assert_eq!(stats.bytes, 300_000 + 8);
        assert_eq!(fx.read("etc/os-release"), b"ID=test\n");
        assert_eq!(fx.read("big").len(), 300_000);
    }
}

// ---------------------------------------------------------------- a normal image

#[test]
fn multi_layer_image() {
    for r in RESOLVERS {
        let fx = Fixture::new();
        let base_layer = RawTar::new()
            .dir("./", 0o755)
            .dir("etc/", 0o755)
            .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
            .dir("bin/", 0o755)
            .file_mode("bin/busybox", b"\x7fELF", 0o755)
            .symlink("bin/sh", "busybox")
            .finish();
        let app_layer = RawTar::new()
            .dir("etc/", 0o755)
            .empty("etc/.wh.passwd")
            .file("etc/hosts", b"127.0.0.1 localhost\n")
            // Hard link to a file of the lower layer.
            .hardlink("bin/ls", "bin/busybox")
            .hardlink("/bin/cat", "./bin/../bin/busybox")
            .finish();
        let stats = fx.apply(r, &[base_layer, app_layer]).unwrap();
        assert_eq!(stats[0].entries, 6);
        assert_eq!(stats[1].whiteouts, 1);
        assert!(!fx.exists("etc/passwd"));
        assert_eq!(fx.read("etc/hosts"), b"127.0.0.1 localhost\n");
        let busybox = fx.lmeta("bin/busybox");
        assert_eq!(busybox.nlink(), 3);
        assert_eq!(fx.lmeta("bin/ls").ino(), busybox.ino());
        assert_eq!(fx.lmeta("bin/cat").ino(), busybox.ino());
        assert_eq!(
            fs::read_link(fx.path("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(fx.read("bin/sh"), b"\x7fELF");
    }
}

#[test]
fn archives_written_by_the_tar_crate() {
    // GNU long names and long link targets, as a real writer emits them.
    let src = tempfile::tempdir().unwrap();
    let long_dir = "a".repeat(80) + "/" + &"b".repeat(80);
    fs::create_dir_all(src.path().join(&long_dir)).unwrap();
    fs::write(src.path().join(&long_dir).join("file"), b"deep").unwrap();
    std::os::unix::fs::symlink(format!("{long_dir}/file"), src.path().join("link")).unwrap();
    let mut builder = ::tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", src.path()).unwrap();
    let raw = builder.into_inner().unwrap();

    for r in RESOLVERS {
        let fx = Fixture::new();
        fx.apply(r, std::slice::from_ref(&raw)).unwrap();
        assert_eq!(fx.read(&format!("{long_dir}/file")), b"deep");
        assert_eq!(fx.read("link"), b"deep");
    }
}

// ---------------------------------------------------------------- pure helpers

#[test]
fn clean_paths() {
    let ok = |raw: &str| String::from_utf8(clean(raw.as_bytes()).unwrap()).unwrap();
    assert_eq!(ok("a/b/c"), "a/b/c");
    assert_eq!(ok("/a//./b/"), "a/b");
    assert_eq!(ok("./"), "");
    assert_eq!(ok("a/b/../../c"), "c");
    assert_eq!(ok("a/.."), "");
    assert_eq!(clean(b"../a"), Err(CleanError::Escape));
    assert_eq!(clean(b"a/../../b"), Err(CleanError::Escape));
    assert_eq!(clean(b"/.."), Err(CleanError::Escape));
    assert_eq!(clean(b"a\0b"), Err(CleanError::Nul));
    assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
    assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    assert_eq!(split(b""), (&b""[..], &b""[..]));
}

#[test]
fn the_builder_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<RootBuilder>();
}

#[test]
fn openat2_is_detected_on_this_kernel() {
    // The machines this project runs on have Linux >= 5.6; if this fails, the manual
    // resolver is what runs in production, and the other tests still cover it.
    let fx = Fixture::new();
    let b = RootBuilder::new(&fx.root, UnpackOptions::default()).unwrap();
    assert_eq!(b.resolver, Resolver::Openat2);
}
