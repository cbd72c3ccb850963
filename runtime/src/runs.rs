//! Run directories under the state dir: one per sandbox, locked while anything of it lives, collected when not.
//!
//! The supervisor creates `runs/<id>/` and takes an exclusive `flock` on `runs/<id>/lock`; the runner processes
//! inherit that lock (same open file description), so it is held until the last of them is gone — whichever of
//! them dies last, and however. A later start that can take the lock knows the run is dead and removes it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A run directory we created and hold locked.
#[derive(Debug)]
pub struct RunDir {
    /// The container id (also the directory name).
    pub id: String,
    /// `runs/<id>`.
    pub path: PathBuf,
    /// The locked file; passed on to the runner.
    pub lock: OwnedFd,
}

impl RunDir {
    /// Creates a fresh run directory with a random id.
    pub fn create(runs: &Path) -> io::Result<RunDir> {
        let id = format!("thv-{}", random_hex(12)?);
        let path = runs.join(&id);
        std::fs::create_dir(&path)?;
        let lock = File::options()
            .write(true)
            .create_new(true)
            .open(path.join("lock"))?;
        try_lock(&lock)?;
        Ok(RunDir {
            id,
            path,
            lock: lock.into(),
        })
    }

    /// Removes the directory (used when the run never started a runner).
    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes run directories whose lock nobody holds any more (their processes are gone). Returns how many.
pub fn collect_stale(runs: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if is_abandoned(&dir) {
            if let Ok(cg) = std::fs::read_to_string(dir.join("cgroup")) {
                let _ = std::fs::remove_dir(cg.trim());
            }
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Whether `dir` (holding a `lock` file its owners keep locked) has been abandoned: nobody holds the lock, or the
/// directory never got one and is not brand new (its creation was interrupted).
pub(crate) fn is_abandoned(dir: &Path) -> bool {
    match File::options().write(true).open(dir.join("lock")) {
        Ok(f) => try_lock(&f).is_ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::symlink_metadata(dir)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().map(|d| d.as_secs() > 60).unwrap_or(false))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Takes an exclusive `flock` without waiting.
pub(crate) fn try_lock(f: &File) -> io::Result<()> {
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `n` random bytes as hex, from the kernel.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_run_survives_collection_and_a_dead_one_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let live = RunDir::create(tmp.path()).unwrap();
        let dead = RunDir::create(tmp.path()).unwrap();
        let dead_path = dead.path.clone();
        drop(dead.lock);
        assert_eq!(collect_stale(tmp.path()), 1);
        assert!(live.path.exists());
        assert!(!dead_path.exists());
    }
}
