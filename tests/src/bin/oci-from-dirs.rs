//! Writes an image whose layers are directory trees into an OCI layout, for the real-server images that
//! tests/images/build-real-servers.sh builds (a Debian root made by debootstrap, an app installed by pip or npm):
//!
//! ```text
//! oci-from-dirs LAYOUT TAG --layer DIR [--layer DIR]... [--entrypoint ARG]... [--cmd ARG]... [--env K=V]...
//!               [--workdir DIR] [--user USER] [--label K=V]...
//! ```
//!
//! Each `--layer DIR` becomes one gzip layer holding DIR's contents at the image's root (DIR itself is `/`),
//! in sorted order, with the files' own modes, owners and modification times. Hard links within a tree stay
//! hard links. Device nodes, fifos and sockets are refused (a container root has no business shipping them; the
//! runtime gives `/dev`). Layouts accumulate: several tags may share a layout and identical layers share a blob.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use thv_sandbox_e2e::{Compression, ImageBuilder, Layer};

const USAGE: &str =
    "usage: oci-from-dirs LAYOUT TAG --layer DIR [--layer DIR]... [--entrypoint ARG]... \
[--cmd ARG]... [--env K=V]... [--workdir DIR] [--user USER] [--label K=V]...";

#[derive(Debug, Default)]
struct Args {
    layout: PathBuf,
    tag: String,
    layers: Vec<PathBuf>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    labels: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<String>,
}

fn key_value(flag: &str, value: String) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{flag} wants KEY=VALUE, not {value:?}")),
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--layer" => parsed.layers.push(PathBuf::from(value()?)),
            "--entrypoint" => parsed.entrypoint.push(value()?),
            "--cmd" => parsed.cmd.push(value()?),
            "--env" => parsed.env.push(key_value("--env", value()?)?),
            "--label" => parsed.labels.push(key_value("--label", value()?)?),
            "--workdir" => parsed.workdir = Some(value()?),
            "--user" => parsed.user = Some(value()?),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => positional.push(arg),
        }
    }
    let [layout, tag] = <[String; 2]>::try_from(positional)
        .map_err(|p| format!("want LAYOUT and TAG, got {p:?}"))?;
    if parsed.layers.is_empty() {
        return Err("at least one --layer DIR".into());
    }
    parsed.layout = PathBuf::from(layout);
    parsed.tag = tag;
    Ok(parsed)
}

fn ctx(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The tree under `root` as an uncompressed tar, entries named relative to `root`.
fn tar_of_tree(root: &Path) -> io::Result<Vec<u8>> {
    let mut paths = Vec::new();
    collect(root, &mut paths)?;
    let mut builder = tar::Builder::new(Vec::new());
    let mut first_of_inode: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for path in paths {
        let rel = path.strip_prefix(root).expect("under the root");
        let meta = fs::symlink_metadata(&path).map_err(ctx(&path))?;
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);
        let add = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, rel, io::empty())
                .map_err(add)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(ctx(&path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            builder.append_link(&mut header, rel, target).map_err(add)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = first_of_inode.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    builder.append_link(&mut header, rel, first).map_err(add)?;
                    continue;
                }
                first_of_inode.insert((meta.dev(), meta.ino()), rel.to_path_buf());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = fs::File::open(&path).map_err(ctx(&path))?;
            builder.append_data(&mut header, rel, file).map_err(add)?;
        } else {
            let kind = if ft.is_char_device() || ft.is_block_device() {
                "a device node"
            } else if ft.is_fifo() {
                "a fifo"
            } else {
                "a socket"
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is {kind}; remove it from the tree (the runtime provides /dev)",
                    path.display()
                ),
            ));
        }
    }
    builder.into_inner()
}

/// Depth-first, siblings sorted by name, parents before children.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(ctx(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(ctx(dir))?;
    names.sort();
    for name in names {
        let path = dir.join(name);
        let is_dir = fs::symlink_metadata(&path).map_err(ctx(&path))?.is_dir();
        out.push(path.clone());
        if is_dir {
            collect(&path, out)?;
        }
    }
    Ok(())
}

fn build(args: &Args) -> io::Result<String> {
    let mut image = ImageBuilder::new();
    for dir in &args.layers {
        let tar = tar_of_tree(dir)?;
        image = image.layer(Layer::from_tar(tar, Compression::Gzip));
    }
    if !args.entrypoint.is_empty() {
        image = image.entrypoint(args.entrypoint.clone());
    }
    if !args.cmd.is_empty() {
        image = image.cmd(args.cmd.clone());
    }
    for (k, v) in &args.env {
        image = image.env(k, v);
    }
    for (k, v) in &args.labels {
        image = image.label(k, v);
    }
    if let Some(dir) = &args.workdir {
        image = image.working_dir(dir);
    }
    if let Some(user) = &args.user {
        image = image.user(user);
    }
    let built = image.write(&args.layout, &args.tag)?;
    Ok(built.manifest.digest)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match build(&args) {
        Ok(digest) => {
            // The manifest digest is the output (stdout); a failed write is a failure.
            match writeln!(io::stdout().lock(), "{digest}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing to stdout: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_becomes_a_sorted_tar_with_links_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        fs::write(root.join("usr/bin/python3.11"), b"interpreter").expect("write");
        fs::hard_link(root.join("usr/bin/python3.11"), root.join("usr/bin/py")).expect("link");
        std::os::unix::fs::symlink("python3.11", root.join("usr/bin/python3")).expect("symlink");
        fs::write(root.join("a"), b"first").expect("write");
        let tar = tar_of_tree(root).expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, tar::EntryType, Option<String>)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let link = e
                    .link_name()
                    .expect("link name")
                    .map(|l| l.display().to_string());
                (
                    e.path().expect("path").display().to_string(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect();
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        assert_eq!(
            entries,
            [
                ("a".into(), Regular, None),
                ("usr".into(), Directory, None),
                ("usr/bin".into(), Directory, None),
                ("usr/bin/py".into(), Regular, None),
                ("usr/bin/python3".into(), Symlink, Some("python3.11".into())),
                ("usr/bin/python3.11".into(), Link, Some("usr/bin/py".into())),
            ]
        );
    }

    #[test]
    fn a_fifo_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = tar_of_tree(dir.path()).expect_err("a fifo");
        assert!(err.to_string().contains("pipe is a fifo"), "{err}");
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| parse(a.iter().map(|s| s.to_string()));
        assert!(args(&["L", "T"]).unwrap_err().contains("--layer"));
        assert!(args(&["L", "--layer", "d"])
            .unwrap_err()
            .contains("LAYOUT and TAG"));
        assert!(args(&["L", "T", "--layer", "d", "--env", "NOEQUALS"])
            .unwrap_err()
            .contains("KEY=VALUE"));
        let ok = args(&[
            "L",
            "T",
            "--layer",
            "d",
            "--env",
            "A=b=c",
            "--entrypoint",
            "x",
        ])
        .expect("ok");
        assert_eq!(ok.env, [("A".to_owned(), "b=c".to_owned())]);
        assert_eq!(ok.entrypoint, ["x"]);
    }
}
