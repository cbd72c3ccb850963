//! Run directories under the state dir: one per sandbox, locked while anything of it lives, collected when not.
//!
//! The supervisor creates `runs/<id>/` and takes an exclusive `flock` on `runs/<id>/lock`; the runner processes
//! inherit that lock (same open file description), so it is held until the last of them is gone — whichever of
//! them dies last, and however. A later start that can take the lock knows the run is dead and removes it.
//!
//! A directory becomes visible under its name only once its lock is held ([`crate::dirs::create_locked`]): it is made as
//! `.creating-<name>`, its lock taken, then renamed into place. Collection never judges a directory whose owner
//! has not locked it yet (nor, by probing its lock, makes that owner's `flock` fail), so starts running at the
//! same time cannot remove each other's directories. A `.creating-` directory is collected only when unlocked and
//! more than a minute old (its creator was killed between `mkdir` and `rename`).

use std::io;
use std::os::fd::OwnedFd;
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
        let id = format!("thv-{}", crate::dirs::random_hex(12)?);
        let (path, lock) = crate::dirs::create_locked(runs, &id)?;
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

/// The cached roots (`<roots>/<key>/rootfs`) the live runs in `runs` use, as their `plan.json` names them. A run
/// whose lock nobody holds, or without a readable plan (it has not written one yet), is passed over.
pub fn live_roots(runs: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| !crate::dirs::is_abandoned(dir))
        .filter_map(|dir| {
            let bytes = std::fs::read(dir.join("plan.json")).ok()?;
            let plan: crate::sandbox::runner::RunnerPlan = serde_json::from_slice(&bytes).ok()?;
            Some(plan.rootfs)
        })
        .collect()
}

/// Removes run directories whose lock nobody holds any more (their processes are gone). Returns how many.
pub fn collect_stale(runs: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if crate::dirs::is_collectable(&dir) {
            // One cgroup directory a line, the deepest first (see `pipeline::plan_cgroup`).
            if let Ok(cg) = std::fs::read_to_string(dir.join("cgroup")) {
                for line in cg.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let _ = std::fs::remove_dir(line);
                }
            }
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dirs::CREATING;

    fn write_plan(run: &RunDir, rootfs: &Path) {
        let plan = serde_json::json!({
            "id": run.id, "bundle": "/b", "state_root": "/s", "netns": "/n", "cgroups_path": "/c",
            "rootfs": rootfs, "run_dir": run.path, "supervisor_pid": 1, "stop_timeout_ms": 1,
        });
        std::fs::write(run.path.join("plan.json"), plan.to_string()).unwrap();
    }

    #[test]
    fn live_roots_are_those_of_held_runs_with_a_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let live = RunDir::create(tmp.path()).unwrap();
        write_plan(&live, Path::new("/cache/roots/k1/rootfs"));
        let dead = RunDir::create(tmp.path()).unwrap();
        write_plan(&dead, Path::new("/cache/roots/k2/rootfs"));
        drop(dead.lock);
        let _starting = RunDir::create(tmp.path()).unwrap();
        assert_eq!(
            live_roots(tmp.path()),
            [PathBuf::from("/cache/roots/k1/rootfs")]
        );
        assert!(live_roots(&tmp.path().join("missing")).is_empty());
    }

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

    use crate::dirs::test_hooks::DELAY_US;

    /// Many starts at once while others collect stale runs (as every `run` does right before creating its own): no
    /// start may lose its directory, or fail to lock it, because of another's collection.
    #[test]
    fn concurrent_creation_and_collection_do_not_race() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().to_owned();
        DELAY_US.store(200, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let collectors: Vec<_> = (0..3)
            .map(|_| {
                let (runs, stop) = (runs.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        collect_stale(&runs);
                    }
                })
            })
            .collect();
        let creators: Vec<_> = (0..4)
            .map(|_| {
                let runs = runs.clone();
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    for _ in 0..300 {
                        match RunDir::create(&runs) {
                            Ok(run) => {
                                if let Err(e) = std::fs::create_dir(run.path.join("etc")) {
                                    failures.push(format!("{}/etc: {e}", run.path.display()));
                                }
                                // Dead from here on: a collector removes it.
                                drop(run.lock);
                            }
                            Err(e) => failures.push(format!("create: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        let failures: Vec<String> = creators
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        DELAY_US.store(0, Ordering::Relaxed);
        for c in collectors {
            c.join().unwrap();
        }
        assert!(
            failures.is_empty(),
            "{} of 1200 starts failed, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }

    #[test]
    fn a_directory_being_created_is_left_alone_until_it_is_old() {
        let tmp = tempfile::tempdir().unwrap();
        let young = tmp.path().join(format!("{CREATING}thv-young"));
        std::fs::create_dir(&young).unwrap();
        std::fs::write(young.join("lock"), b"").unwrap();
        // Unlocked, but its creator may be between creating the lock and taking it.
        assert_eq!(collect_stale(tmp.path()), 0);
        assert!(young.exists());
        let old = tmp.path().join(format!("{CREATING}thv-old"));
        std::fs::create_dir(&old).unwrap();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        assert_eq!(collect_stale(tmp.path()), 1);
        assert!(!old.exists());
    }
}
