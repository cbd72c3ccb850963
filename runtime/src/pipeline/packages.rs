//! The install of an `npx://` / `uvx://` package (issue 16), as a [`Finish`] of the base image's root: the
//! ecosystem's own installer runs inside a sandbox on the staging root (writable for these runs only), whose only
//! egress is the package index (the egress proxy, with the index's hosts as its rules), with no host path, no
//! home and no credentials of the user. Two runs:
//!
//! 1. **resolve**: npm writes `package-lock.json` without installing (`--package-lock-only --ignore-scripts`);
//!    pip reports what it would install (`--dry-run --report`). Every package is pinned: exact version,
//!    tarball/wheel URL, sha512/sha256 ([`crate::packages::lock`]).
//! 2. the **provenance seam**, [`crate::packages::verdict::check_before_install`], gets those entries before
//!    anything is installed; a refusal ends the install here.
//! 3. **install** exactly the lock: `npm ci` (integrity checked by npm), `pip install --require-hashes --no-deps`
//!    from the hashed requirements. Install scripts (npm lifecycle scripts, sdist builds) run here, in the sandbox.
//!
//! The lock and the command are committed inside the root ([`crate::packages::lock::LOCK_PATH`]); the root is
//! named by the base image's digest and the install's key tag, and sealed with its record like any root. Runs
//! after that start from it with no network at all; its record is checked before every run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::image::config::ImageRuntimeConfig;
use crate::packages::lock::{self, Lock, LOCK_PATH, PREFIX, PROVENANCE_PATH};
use crate::packages::verdict::{self, Verdict};
use crate::packages::{Ecosystem, Install};
use crate::rootfs::{self, Finish, RootfsError};
use crate::sandbox::egress::{self, Rules};
use crate::sandbox::profile::NetworkMode;
use crate::sandbox::supervise::{self, RunEnd, ServerStdio, SupervisorArgs};

/// How long one installer run may take (killed after that).
pub const TIME_LIMIT: Duration = Duration::from_secs(900);

/// Where the install's own files are, inside the staging root (removed before the root is sealed).
const WORK: &str = ".thv-install";

/// The install of a package, as a [`Finish`] of its base image's root.
pub struct PackageInstall {
    install: Install,
    key: String,
    exe: PathBuf,
    runs: super::bytecode::StagingRuns,
    /// What the install has to say (the verdict's line), taken by the pipeline afterwards.
    said: Mutex<Vec<String>>,
    /// The seam's refusal, if it refused (the build's error then becomes [`super::Error::Refused`]).
    refused: Mutex<Option<String>>,
    /// Package provenance, checked before anything is installed ([`PackageInstall::with_checks`]).
    checks: Option<crate::packages::provenance::Checks>,
}

impl PackageInstall {
    /// The install of `install`, its runs started with `exe` as the runner in run directories under `runs_dir`,
    /// with the seccomp programs kept in the cache at `cache`.
    pub fn new(install: &Install, exe: &Path, runs_dir: &Path, cache: &Path) -> PackageInstall {
        PackageInstall {
            key: install.key_tag(),
            install: install.clone(),
            exe: exe.to_owned(),
            runs: super::bytecode::StagingRuns::new(runs_dir, cache),
            said: Mutex::new(Vec::new()),
            refused: Mutex::new(None),
            checks: None,
        }
    }

    /// `e` as a refusal ([`crate::EXIT_REFUSED`]) when the provenance seam refused the install, else as it is.
    pub fn refusal(&self, e: super::Error) -> super::Error {
        match self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(reason) => refused(&self.install.spec, reason),
            None => e,
        }
    }

    /// Checks package provenance before the install, against the install's own verification (its pin, mode,
    /// trust root, TUF: [`Install::verification`]), keeping records under `cache_dir`.
    pub fn with_checks(mut self, cache_dir: &Path) -> PackageInstall {
        self.checks = Some(crate::packages::provenance::Checks {
            verification: crate::Verification {
                server: None,
                ..self.install.verification.clone()
            },
            cache_dir: cache_dir.to_owned(),
            index_url: self.install.index.url.clone(),
        });
        self
    }

    /// What the install said (drained).
    pub fn take_lines(&self) -> Vec<String> {
        std::mem::take(&mut *self.said.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Finish for PackageInstall {
    fn key_tag(&self) -> &str {
        &self.key
    }

    fn finish(&self, tree: &Path, runtime: &ImageRuntimeConfig) -> Result<(), RootfsError> {
        let fail = |why: String| RootfsError::Io {
            path: tree.to_owned(),
            source: std::io::Error::other(format!("installing {}: {why}", self.install.spec)),
        };
        let work = tree.join(WORK);
        let result = self.install_into(tree, &work, runtime);
        let _ = rootfs::remove_tree(&work);
        result.map_err(fail)
    }
}

/// The staging root's path of `inside` (an absolute path in the root).
fn at(tree: &Path, inside: &str) -> PathBuf {
    tree.join(inside.trim_start_matches('/'))
}

impl PackageInstall {
    fn install_into(
        &self,
        tree: &Path,
        work: &Path,
        runtime: &ImageRuntimeConfig,
    ) -> Result<(), String> {
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let spec = &self.install.spec;
        let index = &self.install.index;
        std::fs::create_dir_all(work.join("home"))
            .map_err(|e| io("the install's work directory", e))?;
        std::fs::create_dir_all(at(tree, PREFIX)).map_err(|e| io(PREFIX, e))?;
        let work_in = format!("/{WORK}");
        let mut env = vec![
            ("HOME".to_owned(), format!("{work_in}/home")),
            (
                "npm_config_cache".to_owned(),
                format!("{work_in}/home/.npm"),
            ),
            (
                "npm_config_userconfig".to_owned(),
                format!("{work_in}/npmrc"),
            ),
            ("npm_config_update_notifier".to_owned(), "false".to_owned()),
            ("npm_config_fund".to_owned(), "false".to_owned()),
            ("npm_config_audit".to_owned(), "false".to_owned()),
            ("npm_config_registry".to_owned(), index.url.clone()),
            ("PIP_DISABLE_PIP_VERSION_CHECK".to_owned(), "1".to_owned()),
            ("PIP_NO_INPUT".to_owned(), "1".to_owned()),
            ("PIP_NO_CACHE_DIR".to_owned(), "1".to_owned()),
            ("PIP_BREAK_SYSTEM_PACKAGES".to_owned(), "1".to_owned()),
            ("PIP_ROOT_USER_ACTION".to_owned(), "ignore".to_owned()),
            ("PIP_INDEX_URL".to_owned(), index.url.clone()),
        ];
        std::fs::write(work.join("npmrc"), b"").map_err(|e| io("npmrc", e))?;
        if !index.extra.is_empty() {
            env.push(("PIP_EXTRA_INDEX_URL".to_owned(), index.extra.join(" ")));
        }
        if let Some(ca) = &self.install.ca_file {
            std::fs::copy(ca, work.join("ca.pem")).map_err(|e| io(&ca.display().to_string(), e))?;
            let ca_in = format!("{work_in}/ca.pem");
            for k in [
                "npm_config_cafile",
                "PIP_CERT",
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
            ] {
                env.push((k.to_owned(), ca_in.clone()));
            }
        }

        // 1. resolve: every package pinned, nothing installed, no script run.
        let resolve: Vec<String> = match spec.ecosystem {
            Ecosystem::Npm => [
                "npm",
                "install",
                "--package-lock-only",
                "--ignore-scripts",
                "--omit=dev",
                "--prefix",
                PREFIX,
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([spec.requirement()])
            .collect(),
            Ecosystem::Pypi => [
                "python3",
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("{work_in}/report.json"), spec.requirement()])
            .collect(),
        };
        // What we made belongs to the root's owner (the sandbox's uid 0), as the image's files do.
        own_like_root(tree, &[work.to_owned(), at(tree, PREFIX)])
            .map_err(|e| io("the install's files", e))?;
        self.run_installer(tree, runtime, &resolve, &env, "resolve")?;
        let entries = match spec.ecosystem {
            Ecosystem::Npm => {
                let text = std::fs::read(at(tree, &format!("{PREFIX}/package-lock.json")))
                    .map_err(|e| io("npm's package-lock.json", e))?;
                lock::from_npm_lock(&text)
            }
            Ecosystem::Pypi => {
                let text =
                    std::fs::read(work.join("report.json")).map_err(|e| io("pip's report", e))?;
                lock::from_pip_report(&text)
            }
        }
        .map_err(|e| e.to_string())?;
        let top_version = lock::top_version(spec, &entries)
            .ok_or_else(|| format!("{} is not in what the resolver chose", spec.name))?;

        // 2. the provenance seam: before anything is installed.
        let verdict = verdict::check_before_install(spec, &entries, self.checks.as_ref());
        if let Verdict::Refused { reason } = &verdict {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
            return Err(format!("refused before anything was installed: {reason}"));
        }
        if let Some(line) = verdict.line(spec) {
            self.said
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        }

        // 3. install exactly the lock.
        let install: Vec<String> = match spec.ecosystem {
            Ecosystem::Npm => ["npm", "ci", "--omit=dev", "--prefix", PREFIX]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Ecosystem::Pypi => {
                std::fs::write(work.join("lock.txt"), lock::pip_requirements(&entries))
                    .map_err(|e| io("the hashed requirements", e))?;
                own_like_root(tree, &[work.join("lock.txt")])
                    .map_err(|e| io("the hashed requirements", e))?;
                [
                    "python3",
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--require-hashes",
                    "--target",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([
                    format!("{PREFIX}/site"),
                    "-r".into(),
                    format!("{work_in}/lock.txt"),
                ])
                .collect()
            }
        };
        self.run_installer(tree, runtime, &install, &env, "install")?;

        let (command, run_env) = match spec.ecosystem {
            Ecosystem::Npm => {
                let pj = std::fs::read(at(
                    tree,
                    &format!("{PREFIX}/node_modules/{}/package.json", spec.name),
                ))
                .map_err(|e| io("the package's package.json", e))?;
                (
                    lock::npm_command(&spec.name, &pj).map_err(|e| e.to_string())?,
                    Vec::new(),
                )
            }
            Ecosystem::Pypi => {
                let site = at(tree, &format!("{PREFIX}/site"));
                let ep = entry_points(&site, &spec.name)
                    .map_err(|e| io("the package's entry points", e))?;
                (
                    lock::pip_command(&spec.name, &ep).map_err(|e| e.to_string())?,
                    vec![("PYTHONPATH".to_owned(), format!("{PREFIX}/site"))],
                )
            }
        };
        let committed = Lock {
            version: 1,
            top: spec.clone(),
            top_version,
            entries,
            index: index.url.clone(),
            command,
            env: run_env,
        };
        let json = serde_json::to_vec_pretty(&committed).map_err(|e| e.to_string())?;
        std::fs::write(at(tree, LOCK_PATH), json).map_err(|e| io(LOCK_PATH, e))?;
        // Every package's provenance verdict, next to the lock: in the staging root, so it is committed (by the
        // root's rename) and sealed (by its record) with the tree, never apart from it.
        if let Some(recorded) = verdict.recorded() {
            let json = serde_json::to_vec_pretty(&recorded).map_err(|e| e.to_string())?;
            std::fs::write(at(tree, PROVENANCE_PATH), json).map_err(|e| io(PROVENANCE_PATH, e))?;
        }
        Ok(())
    }

    /// Runs `argv` (its stdout sent to stderr) on the staging root `tree` in a sandbox whose only egress is the
    /// index; fails unless it exits 0.
    fn run_installer(
        &self,
        tree: &Path,
        runtime: &ImageRuntimeConfig,
        argv: &[String],
        env: &[(String, String)],
        step: &str,
    ) -> Result<(), String> {
        let mut image = runtime.clone();
        // `sh -c 'exec "$@" 1>&2' sh ARGV…`: the installer's stdout is not ours (ours is the server's).
        image.entrypoint = ["/bin/sh", "-c", "exec \"$@\" 1>&2", "sh"]
            .iter()
            .map(|s| s.to_string())
            .chain(argv.iter().cloned())
            .collect();
        image.cmd = Vec::new();
        image.working_dir = Some("/".into());
        image.env.retain(|e| {
            let k = e.split('=').next().unwrap_or_default();
            !env.iter().any(|(n, _)| n == k)
        });
        let mut req = super::bytecode::request(self.exe.clone());
        req.egress = Some(self.install.index.outbound());
        req.network = NetworkMode::None;
        req.env = env.to_vec();
        let (run_dir, plan, idmap) = super::bytecode::staging_run(
            &req,
            &self.runs,
            tree,
            image,
            "package-install",
            TIME_LIMIT,
        )?;
        let rules = Rules::from_outbound(&self.install.index.outbound())
            .map_err(|e| e.to_string())?
            .with_local_names(&self.install.index.names());
        let refusals = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        let mut proxy = None;
        let (stdin, _) = super::bytecode::pipe().map_err(|e| e.to_string())?;
        let (out_r, out_w) = super::bytecode::pipe().map_err(|e| e.to_string())?;
        let (end_r, end_w) = super::bytecode::pipe().map_err(|e| e.to_string())?;
        let outcome = supervise::supervise(SupervisorArgs {
            exe: req.exe.clone(),
            run_dir: &run_dir.path,
            plan: &plan,
            idmap: &idmap,
            secrets: &[],
            stop_timeout: req.stop_timeout,
            on_started: &mut |_| {},
            on_unreachable: &mut |_| {},
            on_egress: &mut |listener| {
                let refusals = refusals.clone();
                match egress::spawn(listener, rules.clone(), move |line| {
                    tracing::warn!("package install: {line}");
                    refusals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.to_owned());
                }) {
                    Ok(h) => proxy = Some(h),
                    Err(e) => tracing::warn!("the install's egress proxy could not start: {e}"),
                }
            },
            on_dns: &mut |_| {},
            server_stdio: ServerStdio::Port {
                stdin,
                stdout: out_w,
                end: end_r,
            },
        });
        drop(end_w);
        drop(run_dir);
        drop(proxy);
        let mut printed = String::new();
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&out_r),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let _ = std::fs::File::from(out_r)
            .take(64 * 1024)
            .read_to_string(&mut printed);
        let refused = refusals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let why = |what: String| match refused.first() {
            Some(r) => format!("{what}; the egress proxy refused: {r}"),
            None => what,
        };
        match outcome.map_err(|e| e.to_string())? {
            RunEnd::Exited(0) => Ok(()),
            RunEnd::Exited(code) if code == 128 + libc::SIGKILL => Err(why(format!(
                "the {step} step was stopped after {} s",
                TIME_LIMIT.as_secs()
            ))),
            RunEnd::Exited(code) | RunEnd::Stopped(code) | RunEnd::OutOfMemory(code) => {
                Err(why(format!(
                    "the {step} step ({}) exited with code {code}",
                    argv[..2].join(" ")
                )))
            }
            RunEnd::Failed(f) => Err(format!("{}: {}", f.stage, f.chain.join(": "))),
        }
    }
}

/// Gives `paths` (and everything under them) the owner of the image's root-owned files in `tree`.
fn own_like_root(tree: &Path, paths: &[PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // `/usr` is the image's (the staging directory itself may be ours).
    let meta =
        std::fs::symlink_metadata(tree.join("usr")).or_else(|_| std::fs::symlink_metadata(tree))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    fn walk(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(p)?.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    for p in paths {
        walk(p, uid, gid)?;
    }
    Ok(())
}

/// The `entry_points.txt` of `name` in pip's `--target` directory `site`.
fn entry_points(site: &Path, name: &str) -> std::io::Result<String> {
    let want = crate::packages::spec::normalize_pypi(name);
    for e in std::fs::read_dir(site)?.flatten() {
        let file = e.file_name();
        let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".dist-info")) else {
            continue;
        };
        let dist = stem.rsplit_once('-').map_or(stem, |(n, _)| n);
        if crate::packages::spec::normalize_pypi(dist) == want {
            return std::fs::read_to_string(e.path().join("entry_points.txt"));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no {name}-*.dist-info in {}", site.display()),
    ))
}

/// The server's runtime config on an installed root: the lock's command and environment, the request's
/// arguments after it. The root's record is checked first (a root changed since it was sealed, its lock
/// included, is refused), then the lock read.
pub fn runtime_for(
    root: &rootfs::Root,
    base: &ImageRuntimeConfig,
) -> Result<(ImageRuntimeConfig, Lock), RootfsError> {
    let tampered = || RootfsError::Tampered {
        path: root.path.parent().unwrap_or(&root.path).to_owned(),
    };
    if !root.unpacked_now {
        let record = rootfs::tree_record(&root.path).map_err(|source| RootfsError::Io {
            path: root.path.clone(),
            source,
        })?;
        if root.meta.tree.as_deref() != Some(record.as_str()) {
            return Err(tampered());
        }
    }
    let text = std::fs::read(at(&root.path, LOCK_PATH)).map_err(|source| RootfsError::Io {
        path: at(&root.path, LOCK_PATH),
        source,
    })?;
    let lock: Lock = serde_json::from_slice(&text).map_err(|_| tampered())?;
    let mut runtime = base.clone();
    runtime.entrypoint = lock.command.clone();
    runtime.cmd = Vec::new();
    runtime.working_dir = Some("/".into());
    for (k, v) in &lock.env {
        runtime
            .env
            .retain(|e| e.split('=').next() != Some(k.as_str()));
        runtime.env.push(format!("{k}={v}"));
    }
    Ok((runtime, lock))
}

/// `--image-verification enabled` without a pin refuses a package before anything else, as its install would
/// (`PackageGate::decide`): runs from an installed root do not check again, so a root an earlier install under
/// `warn` left for the same package and base must not run instead.
pub(super) fn check_mode(install: &Install) -> Result<(), super::Error> {
    let v = &install.verification;
    if v.mode == Some(crate::trust::verification::Mode::Enabled) && v.policy.is_none() {
        return Err(refused(
            &install.spec,
            "its registry entry pins no provenance identity; --image-verification=enabled refuses a package \
             held only to its own claims (also when an earlier install left a root for it)"
                .into(),
        ));
    }
    Ok(())
}

/// The install for `req` (an `npx://` / `uvx://` request), run as the finish of its base image's root.
pub(super) fn installer(
    req: &crate::settings::RunRequest,
    runs_dir: &Path,
    cache_dir: &Path,
) -> Option<PackageInstall> {
    req.package
        .as_ref()
        .map(|p| PackageInstall::new(p, &req.exe, runs_dir, cache_dir).with_checks(cache_dir))
}

/// After step 5 of a package run: what the install said, and the server's runtime config on the installed root
/// (`runtime` unchanged for an image).
pub(super) fn installed(
    install: Option<&PackageInstall>,
    root: &rootfs::Root,
    runtime: ImageRuntimeConfig,
    reporter: &dyn crate::report::Reporter,
) -> Result<ImageRuntimeConfig, super::Error> {
    let Some(install) = install else {
        return Ok(runtime);
    };
    for line in install.take_lines() {
        reporter.report(crate::report::Event::Warning(&line));
    }
    let (runtime, lock) = runtime_for(root, &runtime)?;
    tracing::info!(
        "{}: {} {} and {} more packages, from {}",
        lock.top,
        lock.top.name,
        lock.top_version,
        lock.entries.len().saturating_sub(1),
        lock.index
    );
    Ok(runtime)
}

/// `thv-sandbox pull npx://…` / `uvx://…` (or a registry entry whose server is a package): the base image pulled
/// (or read from its layout) under its own verification ([`crate::packages::base_verification`]) and the package
/// installed onto it under the install's ([`Install::verification`]: the entry's pin), as the first `run` would,
/// without starting the server. Returns the committed lock.
pub fn pull_package(
    install: &Install,
    policy: crate::distribution::PullPolicy,
    access: &crate::distribution::RegistryAccess,
    reporter: &dyn crate::report::Reporter,
    dirs: &crate::dirs::Dirs,
) -> Result<Lock, super::Error> {
    use crate::image::layout::{OciLayout, Platform};
    check_mode(install)?;
    let runs_dir = dirs.runs()?;
    crate::dirs::private_root(&dirs.cache)?;
    let finish = PackageInstall::new(install, Path::new(super::SELF_EXE), &runs_dir, &dirs.cache)
        .with_checks(&dirs.cache);
    let (layout, image) = match install.base_image.starts_with("oci:") {
        true => {
            let (path, tag) = crate::image::layout::parse_oci_ref(&install.base_image)?;
            let oci = OciLayout::open(&path)?;
            let image = oci.resolve(tag.as_deref(), &Platform::host())?;
            (oci, image)
        }
        false => {
            // The base image with its own verification (never the package's pin), as `run` does.
            let base =
                crate::packages::base_verification(&install.base_image, &install.verification);
            let (pulled, _) = super::pull_verified_with(
                &install.base_image,
                policy,
                access,
                reporter,
                dirs,
                &base,
                false,
            )?;
            pulled.open(&Platform::host())?
        }
    };
    let runtime = ImageRuntimeConfig::from_image(&image.config);
    let target = super::unpack_target();
    let root = rootfs::ensure_with(
        &dirs.cache,
        &layout,
        &image,
        &runtime,
        target.mode,
        target.ownership,
        Some(&finish),
    )
    .map_err(|e| finish.refusal(e.into()))?;
    for line in finish.take_lines() {
        reporter.report(crate::report::Event::Warning(&line));
    }
    Ok(runtime_for(&root, &runtime)?.1)
}

/// The pipeline's error for a package the provenance seam refused: nothing of it was installed.
pub fn refused(spec: &crate::packages::PackageSpec, reason: String) -> super::Error {
    super::Error::Refused(crate::trust::verification::Refused {
        reference: spec.to_string(),
        reason,
        hint: "nothing of the package was installed or run; `thv-sandbox inspect` shows the identity it is held to \
               (the registry entry's `provenance`, or your identity flags); check that pin against the package's \
               source repository and release workflow"
            .into(),
    })
}

/// [`PackageInstall::refusal`] when there is an install.
pub(super) fn refusal(install: Option<&PackageInstall>, e: super::Error) -> super::Error {
    match install {
        Some(i) => i.refusal(e),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_the_seam_is_a_refusal_of_the_run() {
        let spec = crate::packages::spec::parse("npx://left-pad@1.3.0")
            .unwrap()
            .unwrap();
        let install = Install::new(
            spec,
            Some("oci:/x:y"),
            &crate::packages::index::Configured::default(),
            &|_| None,
        )
        .unwrap();
        let i = PackageInstall::new(
            &install,
            Path::new("/proc/self/exe"),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        );
        let other = || super::super::Error::Port("x".into());
        // No refusal: the error is kept.
        assert!(matches!(i.refusal(other()), super::super::Error::Port(_)));
        *i.refused.lock().unwrap() = Some("no attestation".into());
        let e = refusal(Some(&i), other());
        assert_eq!(e.exit_code(), crate::EXIT_REFUSED);
        assert!(e.to_string().contains("npx://left-pad@1.3.0"), "{e}");
        assert!(e.to_string().contains("no attestation"), "{e}");
    }
}
