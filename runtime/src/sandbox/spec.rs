//! The OCI runtime configuration of a sandbox, as a pure function of (image config, profile, options).
//!
//! Nothing here touches the system: the same inputs give the same `config.json`, which the tests snapshot. The
//! user namespace is not in the spec: the runner creates it before libcontainer runs (see `runner`), so
//! libcontainer works in rootless mode inside it and the container's other namespaces are owned by it.

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use serde_json::json;

use crate::image::config::ImageRuntimeConfig;
use crate::rootfs::user::ResolvedUser;
use crate::sandbox::profile::{BindMount, NetworkMode};

/// `PATH` when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths masked with an empty file or tmpfs, as Docker masks them.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    // The host kernel's build configuration: tells an attacker which hardening is compiled out.
    "/proc/config.gz",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths mounted read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything else the spec depends on.
#[derive(Debug, Clone)]
pub struct SpecOptions {
    /// The unpacked, cached root (mounted read-only).
    pub rootfs: PathBuf,
    /// The resolved image user.
    pub user: ResolvedUser,
    /// Whether the user's home directory exists in the image (else a tmpfs is mounted there).
    pub home_in_image: bool,
    /// Arguments after `--`, replacing `Cmd`.
    pub args: Option<Vec<String>>,
    /// Extra environment (`NAME`, `VALUE`), overriding the image's.
    pub env: Vec<(String, String)>,
    /// The sandbox's hostname.
    pub hostname: String,
    /// Directory holding the generated `hosts`, `hostname` and `resolv.conf`.
    pub etc_dir: PathBuf,
    /// The network namespace the runner prepared (`lo` up, and `sandbox::unreachable`'s device where planned).
    pub netns: PathBuf,
    /// A cgroups path unique to this sandbox (absolute).
    pub cgroups_path: String,
    /// The seccomp profile in force.
    pub seccomp: LinuxSeccomp,
    /// RLIMIT_NOFILE (soft = hard).
    pub nofile: u64,
    /// RLIMIT_NPROC (soft = hard).
    pub nproc: u64,
    /// Host paths bound in (after every mount of the sandbox's own, so they may sit under /tmp or a volume).
    pub binds: Vec<BindMount>,
    /// The network namespace: the runner's own (`netns`), or the host's.
    pub network: NetworkMode,
    /// The server's supplementary groups, when the id-mapping mode lets the sandbox set them (not in single mode,
    /// where setgroups(2) is denied): then the invoking user's own supplementary groups are dropped.
    pub supplementary_gids: Option<Vec<u32>>,
    /// Size of `/tmp` and of a tmpfs home, in MiB. `/run` gets [`RUN_TMPFS_MIB`]; the image's volumes share
    /// [`VOLUMES_TMPFS_MIB`].
    pub tmp_mib: u64,
    /// The sandbox's memory limit, in bytes: its tmpfs mounts are sized within it ([`tmpfs_sizes`]).
    pub memory_limit: Option<u64>,
}

/// Default size of `/tmp` (and of a home the image lacks), in MiB. tmpfs pages are charged to no process's RSS,
/// so an unsized tmpfs lets a server take half of the host's memory where the OOM killer cannot see it.
pub const DEFAULT_TMP_MIB: u64 = 512;
/// Size of `/run`, in MiB.
pub const RUN_TMPFS_MIB: u64 = 64;
/// What the image's `Volumes` share between them, in MiB (each gets an equal part, at least [`MIN_VOLUME_MIB`]).
pub const VOLUMES_TMPFS_MIB: u64 = 512;
/// The least a volume's tmpfs gets, in MiB.
pub const MIN_VOLUME_MIB: u64 = 8;
/// The most `Volumes` an image may declare (each is a tmpfs).
pub const MAX_VOLUMES: usize = 64;
/// Inodes per MiB of tmpfs (enough for small files; bounds the kernel memory inodes take).
const INODES_PER_MIB: u64 = 256;

/// Why no spec could be made.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither Entrypoint, Cmd nor user arguments name a program.
    #[error("the image has no Entrypoint or Cmd and no command was given after `--`")]
    NoCommand,
    /// A path in the image config is not absolute.
    #[error("{what} `{path}` in the image config is not an absolute path")]
    RelativePath {
        /// Which field.
        what: &'static str,
        /// The value.
        path: String,
    },
    /// A cgroups path that is empty or relative would share or take over a cgroup (libcontainer pitfall 1).
    #[error("cgroups path `{0}` must be absolute and unique to the sandbox")]
    BadCgroupsPath(String),
    /// A volume path the sandbox cannot mount a tmpfs on.
    #[error("Volume `{path}` in the image config {problem}")]
    BadVolume {
        /// The value.
        path: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// More volumes than the sandbox mounts.
    #[error("the image config declares {0} Volumes; at most {MAX_VOLUMES} are mounted")]
    TooManyVolumes(usize),
    /// An environment entry the kernel cannot pass (NUL) or that has no name.
    #[error("environment entry {0} in the image config or the run's variables is not NAME=VALUE without NUL bytes")]
    BadEnv(String),
    /// The result did not parse as an OCI runtime spec, or cannot be written as JSON (a bug).
    #[error("generated spec is invalid")]
    Json(#[source] serde_json::Error),
    /// The spec breaks what must hold for every sandbox (a bug: refused before anything runs).
    #[error("generated spec is invalid: {0}")]
    Invalid(#[from] Invariant),
}

/// What must hold for every sandbox's spec ([`check_invariants`]), one variant per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invariant {
    /// The root is writable.
    #[error("root must be read-only")]
    ReadOnlyRoot,
    /// no_new_privs is not set.
    #[error("no_new_privs must be set")]
    NoNewPrivileges,
    /// A capability set is not empty.
    #[error("capability sets must be empty")]
    Capabilities,
    /// No seccomp profile.
    #[error("a seccomp profile must be set")]
    Seccomp,
    /// One of the always-on namespaces is missing.
    #[error("the pid, ipc, uts, mount and cgroup namespaces must be present")]
    Namespaces,
    /// A network namespace without `--network none`, or none with it.
    #[error("a network namespace exactly when the network is `none`")]
    NetworkNamespace,
}

/// The files the runner writes into `etc_dir` and the spec binds over the image's.
pub fn etc_files(hostname: &str) -> [(&'static str, String); 3] {
    [
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        ("hostname", format!("{hostname}\n")),
        // No resolver that resolves: the sandbox has only loopback, and name lookups must not become a way out.
        // 127.0.0.1:53 is answered by thv-sandbox, which refuses every name at once and reports it (see
        // `sandbox::nameserver`); one attempt, since a refusal is final.
        (
            "resolv.conf",
            "# thv-sandbox: no DNS inside the sandbox; lookups are refused and reported by thv-sandbox\n\
             nameserver 127.0.0.1\noptions attempts:1\n"
                .to_owned(),
        ),
    ]
}

/// Sizes of the sandbox's tmpfs mounts, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmpfsSizes {
    /// `/tmp`, and a home the image lacks.
    pub tmp: u64,
    /// `/run`.
    pub run: u64,
    /// `/dev/shm`.
    pub shm: u64,
    /// All of the image's volumes together.
    pub volumes: u64,
}

/// The tmpfs sizes under a memory limit. tmpfs pages are charged to the sandbox's memory cgroup, so a server
/// filling its tmpfs mounts is filling its memory limit, and a tmpfs larger than the limit would end in an
/// out-of-memory kill instead of a full disk. So all of them together stay within half of the limit
/// ([`crate::sandbox::limits::tmpfs_budget_mib`]): `/tmp`, a tmpfs home and the volumes a quarter of that each,
/// `/run` and `/dev/shm` an eighth; never more than without a limit, never less than 1 MiB.
pub fn tmpfs_sizes(tmp_mib: u64, memory_limit: Option<u64>) -> TmpfsSizes {
    let budget = crate::sandbox::limits::tmpfs_budget_mib(memory_limit);
    let cap = |mib: u64, share: u64| budget.map_or(mib, |b| mib.min((b / share).max(1)));
    TmpfsSizes {
        tmp: cap(tmp_mib, 4),
        run: cap(RUN_TMPFS_MIB, 8),
        shm: cap(64, 8),
        volumes: cap(VOLUMES_TMPFS_MIB, 4),
    }
}

/// Builds the runtime spec.
pub fn build(image: &ImageRuntimeConfig, opts: &SpecOptions) -> Result<Spec, SpecError> {
    if !opts.cgroups_path.starts_with('/') || opts.cgroups_path.trim_matches('/').is_empty() {
        return Err(SpecError::BadCgroupsPath(opts.cgroups_path.clone()));
    }
    let mut args = image.entrypoint.clone();
    args.extend(opts.args.clone().unwrap_or_else(|| image.cmd.clone()));
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let cwd = image
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError::RelativePath {
            what: "WorkingDir",
            path: cwd,
        });
    }
    for v in &image.volumes {
        check_volume(v)?;
    }
    if image.volumes.len() > MAX_VOLUMES {
        return Err(SpecError::TooManyVolumes(image.volumes.len()));
    }
    let user = &opts.user;
    let home = user.home.clone().unwrap_or_else(|| "/".into());
    let env = environment(image, opts, &home);
    for e in &env {
        check_env_entry(e)?;
    }
    let sizes = tmpfs_sizes(opts.tmp_mib, opts.memory_limit);
    let volume_mib = (sizes.volumes / image.volumes.len().max(1) as u64).max(MIN_VOLUME_MIB);

    let tmpfs = |dest: &str, mode: &str, owned: bool, noexec: bool, mib: u64| {
        let mut o = vec![
            "nosuid".to_owned(),
            "nodev".to_owned(),
            format!("mode={mode}"),
            format!("size={mib}m"),
            format!("nr_inodes={}", mib * INODES_PER_MIB),
        ];
        if noexec {
            o.push("noexec".into());
        }
        if owned {
            o.push(format!("uid={}", user.uid));
            o.push(format!("gid={}", user.gid));
        }
        json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": o})
    };
    let bind_ro = |dest: &str, src: &Path| {
        json!({"destination": dest, "type": "bind", "source": src,
               "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        // No gid=5 option: group 5 is not mapped in single-uid mode.
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={}k", sizes.shm * 1024)]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        // A fresh sysfs (not the host's): it shows only this network namespace's interfaces. With the host's
        // network a user namespace may not mount sysfs (it does not own that network namespace): the host's is
        // bound read-only instead.
        if opts.network == NetworkMode::Host {
            json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        } else {
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]})
        },
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        tmpfs("/tmp", "1777", false, false, sizes.tmp),
        tmpfs("/run", "755", true, false, sizes.run),
    ];
    for (name, _) in etc_files(&opts.hostname) {
        mounts.push(bind_ro(&format!("/etc/{name}"), &opts.etc_dir.join(name)));
    }
    if !opts.home_in_image && home != "/" {
        mounts.push(tmpfs(&home, "700", true, false, sizes.tmp));
    }
    for v in &image.volumes {
        mounts.push(tmpfs(v, "755", true, false, volume_mib));
    }
    for b in &opts.binds {
        let mut o = vec!["rbind", "nosuid", "nodev"];
        if b.read_only {
            o.push("ro");
        }
        mounts.push(
            json!({"destination": b.container, "type": "bind", "source": b.host, "options": o}),
        );
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if opts.network == NetworkMode::None {
        namespaces.push(json!({"type": "network", "path": opts.netns}));
    }

    let rlimit = |typ: &str, n: u64| json!({"type": typ, "hard": n, "soft": n});
    let spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": opts.rootfs, "readonly": true},
        "hostname": opts.hostname,
        "mounts": mounts,
        "process": {
            "terminal": false,
            "user": match &opts.supplementary_gids {
                Some(groups) => json!({"uid": user.uid, "gid": user.gid, "additionalGids": groups}),
                None => json!({"uid": user.uid, "gid": user.gid}),
            },
            "args": args,
            "env": env,
            "cwd": cwd,
            // No capabilities in any set: the server needs none, and the user namespace's root is not root anyway.
            "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
            "noNewPrivileges": true,
            "rlimits": [
                rlimit("RLIMIT_NOFILE", opts.nofile),
                rlimit("RLIMIT_CORE", 0),
                rlimit("RLIMIT_NPROC", opts.nproc),
            ],
        },
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": opts.cgroups_path,
            "seccomp": opts.seccomp,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "rootfsPropagation": "private",
        },
    });
    serde_json::from_value::<Spec>(spec).map_err(SpecError::Json)
}

/// Checks what of the image config the sandbox relies on before anything of the image is unpacked: every
/// `Volumes` entry (see [`build`]) and every `Env` entry (`NAME=VALUE`, no NUL).
pub fn check_image_config(image: &ImageRuntimeConfig) -> Result<(), SpecError> {
    for v in &image.volumes {
        check_volume(v)?;
    }
    if image.volumes.len() > MAX_VOLUMES {
        return Err(SpecError::TooManyVolumes(image.volumes.len()));
    }
    for e in &image.env {
        // An entry without `=` is a variable with an empty value (as `environment` reads it).
        if e.contains('=') {
            check_env_entry(e)?;
        } else {
            check_env_entry(&format!("{e}="))?;
        }
    }
    Ok(())
}

/// A `Volumes` entry the sandbox can put a tmpfs on: absolute, normal (no `.`, `..` or empty components), not `/`
/// and not in the kernel's filesystems (`/proc`, `/sys`, `/dev`), whose masks and read-only binds a tmpfs would
/// shadow.
fn check_volume(v: &str) -> Result<(), SpecError> {
    let bad = |problem| {
        Err(SpecError::BadVolume {
            path: v.to_owned(),
            problem,
        })
    };
    if !v.starts_with('/') {
        return Err(SpecError::RelativePath {
            what: "Volume",
            path: v.to_owned(),
        });
    }
    if v.contains('\0') {
        return bad("contains a NUL byte");
    }
    let parts: Vec<&str> = v.trim_end_matches('/').split('/').skip(1).collect();
    if parts.is_empty() || parts == [""] {
        return bad("is the root itself");
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return bad("is not a normal path (empty, `.` or `..` components)");
    }
    if ["proc", "sys", "dev"].contains(&parts[0]) {
        return bad("is inside /proc, /sys or /dev");
    }
    Ok(())
}

/// One `NAME=VALUE` entry the container's init can set: a non-empty name without `=` and no NUL anywhere.
fn check_env_entry(e: &str) -> Result<(), SpecError> {
    match e.split_once('=') {
        Some((name, _)) if !name.is_empty() && !e.contains('\0') => Ok(()),
        _ => Err(SpecError::BadEnv(format!(
            "`{}`",
            e.split('=').next().unwrap_or_default().escape_debug()
        ))),
    }
}

/// The image's environment, then defaults it lacks, then the caller's overrides.
fn environment(image: &ImageRuntimeConfig, opts: &SpecOptions, home: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str, replace: bool| match env.iter_mut().find(|(n, _)| n == k) {
        Some(slot) if replace => slot.1 = v.to_owned(),
        Some(_) => {}
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v, true);
    }
    set("PATH", DEFAULT_PATH, false);
    set("HOME", home, false);
    set("HOSTNAME", &opts.hostname, true);
    for (k, v) in &opts.env {
        set(k, v, true);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Checks the spec against what must hold for every sandbox, whatever the inputs (used by tests and, cheaply,
/// before every run): no capabilities, no_new_privs, seccomp present, read-only root, the six namespaces (the
/// network one only when `network` is [`NetworkMode::None`]; with the host's network it must be absent).
pub fn check_invariants(spec: &Spec, network: NetworkMode) -> Result<(), SpecError> {
    use oci_spec::runtime::LinuxNamespaceType as Ns;
    // On the typed spec, not its JSON: serializing it (the seccomp section is hundreds of rules) cost a start
    // ~0.1 ms for a handful of fields.
    let ensure = |ok: bool, broken: Invariant| if ok { Ok(()) } else { Err(broken) };
    ensure(
        spec.root().as_ref().and_then(|r| r.readonly()) == Some(true),
        Invariant::ReadOnlyRoot,
    )?;
    let process = spec.process().as_ref();
    ensure(
        process.and_then(|p| p.no_new_privileges()) == Some(true),
        Invariant::NoNewPrivileges,
    )?;
    let caps = process.and_then(|p| p.capabilities().as_ref());
    let empty = |set: Option<&oci_spec::runtime::Capabilities>| set.is_some_and(|s| s.is_empty());
    ensure(
        caps.is_some_and(|c| {
            empty(c.bounding().as_ref())
                && empty(c.effective().as_ref())
                && empty(c.inheritable().as_ref())
                && empty(c.permitted().as_ref())
                && empty(c.ambient().as_ref())
        }),
        Invariant::Capabilities,
    )?;
    let linux = spec.linux().as_ref();
    ensure(
        linux.is_some_and(|l| l.seccomp().is_some()),
        Invariant::Seccomp,
    )?;
    let kinds: Vec<Ns> = linux
        .and_then(|l| l.namespaces().as_ref())
        .map(|n| n.iter().map(|n| n.typ()).collect())
        .unwrap_or_default();
    for ns in [Ns::Pid, Ns::Ipc, Ns::Uts, Ns::Mount, Ns::Cgroup] {
        ensure(kinds.contains(&ns), Invariant::Namespaces)?;
    }
    ensure(
        kinds.contains(&Ns::Network) == (network == NetworkMode::None),
        Invariant::NetworkNamespace,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::mountpoints;
    use serde_json::Value;

    fn opts() -> SpecOptions {
        SpecOptions {
            rootfs: "/cache/roots/v1/abc/rootfs".into(),
            user: ResolvedUser {
                uid: 1000,
                gid: 1000,
                home: Some("/home/app".into()),
            },
            home_in_image: false,
            args: None,
            env: vec![],
            hostname: "thv-probe".into(),
            etc_dir: "/run/user/1000/thv-sandbox/runs/x/etc".into(),
            netns: "/run/user/1000/thv-sandbox/runs/x/netns".into(),
            cgroups_path: "/thv-sandbox/x".into(),
            seccomp: sandbox_profiles::default_seccomp().to_oci(),
            nofile: 1024,
            nproc: 4096,
            binds: vec![],
            network: NetworkMode::None,
            supplementary_gids: Some(vec![1000]),
            tmp_mib: DEFAULT_TMP_MIB,
            memory_limit: None,
        }
    }

    fn image() -> ImageRuntimeConfig {
        ImageRuntimeConfig {
            entrypoint: vec!["/bin/server".into()],
            cmd: vec!["--stdio".into()],
            env: vec!["PATH=/app/bin".into(), "LANG=C.UTF-8".into()],
            working_dir: Some("/app".into()),
            volumes: vec!["/data".into()],
            user: "app".into(),
        }
    }

    fn value(spec: &Spec) -> Value {
        serde_json::to_value(spec).unwrap()
    }

    #[test]
    fn honours_the_image_config() {
        let s = value(&build(&image(), &opts()).unwrap());
        assert_eq!(s["process"]["args"], json!(["/bin/server", "--stdio"]));
        assert_eq!(s["process"]["cwd"], "/app");
        assert_eq!(
            s["process"]["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [1000]})
        );
        assert_eq!(
            s["process"]["env"],
            json!([
                "PATH=/app/bin",
                "LANG=C.UTF-8",
                "HOME=/home/app",
                "HOSTNAME=thv-probe"
            ])
        );
        assert_eq!(
            s["root"],
            json!({"path": "/cache/roots/v1/abc/rootfs", "readonly": true})
        );
        assert_eq!(s["hostname"], "thv-probe");
        check_invariants(&build(&image(), &opts()).unwrap(), NetworkMode::None).unwrap();
    }

    #[test]
    fn user_args_replace_cmd_but_not_entrypoint() {
        let mut o = opts();
        o.args = Some(vec!["--port".into(), "1".into()]);
        let s = value(&build(&image(), &o).unwrap());
        assert_eq!(s["process"]["args"], json!(["/bin/server", "--port", "1"]));
        let mut img = image();
        img.entrypoint.clear();
        let s = value(&build(&img, &o).unwrap());
        assert_eq!(s["process"]["args"], json!(["--port", "1"]));
    }

    #[test]
    fn no_command_is_an_error() {
        let mut img = image();
        img.entrypoint.clear();
        img.cmd.clear();
        assert!(matches!(
            build(&img, &opts()).unwrap_err(),
            SpecError::NoCommand
        ));
    }

    #[test]
    fn defaults_path_and_home_and_overrides_env() {
        let mut img = image();
        img.env = vec!["FOO=1".into(), "HOME=/img".into()];
        let mut o = opts();
        o.env = vec![("FOO".into(), "2".into())];
        let s = value(&build(&img, &o).unwrap());
        assert_eq!(
            s["process"]["env"],
            json!([
                "FOO=2",
                "HOME=/img",
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=thv-probe"
            ])
        );
    }

    #[test]
    fn isolation_is_complete() {
        let s = value(&build(&image(), &opts()).unwrap());
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup", "network"]);
        assert!(
            !ns.contains(&"user"),
            "the user namespace belongs to the runner, not the spec"
        );
        assert_eq!(
            s["linux"]["namespaces"][5]["path"],
            "/run/user/1000/thv-sandbox/runs/x/netns"
        );
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["process"]["capabilities"]["bounding"], json!([]));
        assert_eq!(
            s["process"]["rlimits"],
            json!([
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                {"type": "RLIMIT_NPROC", "hard": 4096, "soft": 4096},
            ])
        );
        assert_eq!(
            s["linux"]["maskedPaths"].as_array().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert!(s["linux"]["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sys")));
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn host_paths_are_bound_last_read_only_where_asked() {
        let mut o = opts();
        o.binds = vec![
            BindMount {
                host: "/home/u/notes".into(),
                container: "/notes".into(),
                read_only: true,
            },
            BindMount {
                host: "/home/u/out".into(),
                container: "/tmp/out".into(),
                read_only: false,
            },
        ];
        let s = value(&build(&image(), &o).unwrap());
        let mounts = s["mounts"].as_array().unwrap();
        let n = mounts.len();
        assert_eq!(mounts[n - 2]["destination"], "/notes");
        assert_eq!(mounts[n - 2]["source"], "/home/u/notes");
        assert_eq!(
            mounts[n - 2]["options"],
            json!(["rbind", "nosuid", "nodev", "ro"])
        );
        // After the /tmp tmpfs, or the tmpfs would hide it.
        assert_eq!(mounts[n - 1]["destination"], "/tmp/out");
        assert_eq!(
            mounts[n - 1]["options"],
            json!(["rbind", "nosuid", "nodev"])
        );
        check_invariants(&build(&image(), &o).unwrap(), NetworkMode::None).unwrap();
    }

    #[test]
    fn host_network_drops_the_namespace_and_binds_sys() {
        let mut o = opts();
        o.network = NetworkMode::Host;
        let spec = build(&image(), &o).unwrap();
        let s = value(&spec);
        let kinds: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["pid", "ipc", "uts", "mount", "cgroup"]);
        let sys = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert_eq!(sys["type"], "bind");
        assert!(sys["options"].as_array().unwrap().contains(&json!("ro")));
        check_invariants(&spec, NetworkMode::Host).unwrap();
        // The invariant check ties the namespace to the mode both ways.
        assert!(matches!(
            check_invariants(&spec, NetworkMode::None),
            Err(SpecError::Invalid(Invariant::NetworkNamespace))
        ));
        let err =
            check_invariants(&build(&image(), &opts()).unwrap(), NetworkMode::Host).unwrap_err();
        assert_eq!(
            err.to_string(),
            "generated spec is invalid: a network namespace exactly when the network is `none`"
        );
    }

    #[test]
    fn writable_places_are_tmpfs_and_etc_is_bound_read_only() {
        let s = value(&build(&image(), &opts()).unwrap());
        let mounts = s["mounts"].as_array().unwrap();
        let find = |d: &str| {
            mounts
                .iter()
                .find(|m| m["destination"] == d)
                .unwrap_or_else(|| panic!("{d}"))
        };
        for d in ["/tmp", "/run", "/home/app", "/data", "/dev/shm"] {
            assert_eq!(find(d)["type"], "tmpfs", "{d}");
        }
        assert!(find("/home/app")["options"]
            .as_array()
            .unwrap()
            .contains(&json!("uid=1000")));
        for f in ["hosts", "hostname", "resolv.conf"] {
            let m = find(&format!("/etc/{f}"));
            assert_eq!(
                m["source"],
                format!("/run/user/1000/thv-sandbox/runs/x/etc/{f}")
            );
            assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
        }
        assert_eq!(find("/sys")["type"], "sysfs");
        // The home of an image that has it is not hidden.
        let mut o = opts();
        o.home_in_image = true;
        let s = value(&build(&image(), &o).unwrap());
        assert!(!s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/home/app"));
    }

    #[test]
    fn mountpoints_cover_every_mount_outside_dev_proc_sys() {
        let img = image();
        let o = opts();
        let s = value(&build(&img, &o).unwrap());
        let points: Vec<String> = mountpoints(&img, &o.user, o.home_in_image)
            .into_iter()
            .map(|p| p.0)
            .collect();
        for m in s["mounts"].as_array().unwrap() {
            let d = m["destination"].as_str().unwrap();
            let covered = points
                .iter()
                .any(|p| d == p || d.starts_with(&format!("{p}/")));
            assert!(covered, "{d} has no mount point in the cached root");
        }
    }

    #[test]
    fn refuses_shared_or_relative_cgroups_paths_and_relative_dirs() {
        for bad in ["", "/", "thv/x"] {
            let mut o = opts();
            o.cgroups_path = bad.into();
            assert!(
                matches!(build(&image(), &o), Err(SpecError::BadCgroupsPath(_))),
                "{bad:?}"
            );
        }
        let mut img = image();
        img.working_dir = Some("app".into());
        assert!(matches!(
            build(&img, &opts()),
            Err(SpecError::RelativePath { .. })
        ));
    }

    #[test]
    fn every_tmpfs_is_sized() {
        let mut img = image();
        img.volumes = vec!["/data".into(), "/cache".into()];
        let s = serde_json::to_value(build(&img, &opts()).unwrap()).unwrap();
        let mut seen = Vec::new();
        for m in s["mounts"].as_array().unwrap() {
            if m["type"] != "tmpfs" {
                continue;
            }
            let o: Vec<&str> = m["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let size = o.iter().find_map(|x| x.strip_prefix("size="));
            assert!(size.is_some(), "{} has no size: {o:?}", m["destination"]);
            seen.push((
                m["destination"].as_str().unwrap().to_owned(),
                size.unwrap().to_owned(),
            ));
            if !["/dev", "/dev/shm"].contains(&m["destination"].as_str().unwrap()) {
                assert!(o.iter().any(|x| x.starts_with("nr_inodes=")), "{o:?}");
            }
        }
        let size_of = |d: &str| seen.iter().find(|(x, _)| x == d).map(|(_, s)| s.as_str());
        assert_eq!(size_of("/tmp"), Some("512m"));
        assert_eq!(size_of("/run"), Some("64m"));
        assert_eq!(size_of("/home/app"), Some("512m"));
        assert_eq!(size_of("/data"), Some("256m"));
        assert_eq!(size_of("/cache"), Some("256m"));
        let mut o = opts();
        o.tmp_mib = 2048;
        let s = serde_json::to_value(build(&img, &o).unwrap()).unwrap();
        let tmp = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .unwrap();
        assert!(tmp["options"]
            .as_array()
            .unwrap()
            .contains(&json!("size=2048m")));
    }

    #[test]
    fn supplementary_groups_are_set_only_where_the_mode_allows() {
        let s = serde_json::to_value(build(&image(), &opts()).unwrap()).unwrap();
        assert_eq!(
            s["process"]["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [1000]})
        );
        let mut o = opts();
        o.supplementary_gids = None;
        let s = serde_json::to_value(build(&image(), &o).unwrap()).unwrap();
        assert_eq!(s["process"]["user"], json!({"uid": 1000, "gid": 1000}));
    }

    #[test]
    fn volumes_are_checked_before_anything_runs() {
        for (v, ok) in [
            ("/data", true),
            ("/var/lib/x/", true),
            ("/", false),
            ("//", false),
            ("/proc/x", false),
            ("/sys", false),
            ("/dev/shm/x", false),
            ("/data/../../etc", false),
            ("/data/./x", false),
            ("/a//b", false),
            ("data", false),
            ("/da\0ta", false),
        ] {
            let mut img = image();
            img.volumes = vec![v.into()];
            assert_eq!(build(&img, &opts()).is_ok(), ok, "{v:?}");
        }
        let mut img = image();
        img.volumes = (0..=MAX_VOLUMES).map(|i| format!("/v{i}")).collect();
        assert!(matches!(
            build(&img, &opts()).unwrap_err(),
            SpecError::TooManyVolumes(n) if n == MAX_VOLUMES + 1
        ));
    }

    #[test]
    fn environment_with_nul_or_no_name_is_refused_not_a_panic_later() {
        for bad in ["A=\n\u{0}B", "=x", "A\u{0}B=1"] {
            let mut img = image();
            img.env = vec![bad.into()];
            assert!(
                matches!(build(&img, &opts()), Err(SpecError::BadEnv(_))),
                "{bad:?}"
            );
        }
        let mut o = opts();
        o.env = vec![("X".into(), "a\u{0}b".into())];
        assert!(matches!(build(&image(), &o), Err(SpecError::BadEnv(_))));
    }

    #[test]
    fn each_invariant_is_checked() {
        let good = build(&image(), &opts()).unwrap();
        check_invariants(&good, NetworkMode::None).unwrap();
        let broken = |f: &dyn Fn(&mut Value)| {
            let mut v = serde_json::to_value(&good).unwrap();
            f(&mut v);
            let spec: Spec = serde_json::from_value(v).unwrap();
            match check_invariants(&spec, NetworkMode::None) {
                Err(SpecError::Invalid(i)) => i,
                other => panic!("{other:?}"),
            }
        };
        assert!(matches!(
            broken(&|v| v["root"]["readonly"] = json!(false)),
            Invariant::ReadOnlyRoot
        ));
        assert!(matches!(
            broken(&|v| v["process"]["noNewPrivileges"] = json!(false)),
            Invariant::NoNewPrivileges
        ));
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            assert!(matches!(
                broken(&|v| v["process"]["capabilities"][set] = json!(["CAP_CHOWN"])),
                Invariant::Capabilities
            ));
        }
        assert!(matches!(
            broken(&|v| v["linux"]
                .as_object_mut()
                .unwrap()
                .remove("seccomp")
                .map(drop)
                .unwrap()),
            Invariant::Seccomp
        ));
        for ns in ["pid", "ipc", "uts", "mount", "cgroup"] {
            let drop_ns = |v: &mut Value| {
                v["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != ns)
            };
            assert!(matches!(broken(&drop_ns), Invariant::Namespaces), "{ns}");
        }
    }

    #[test]
    fn proc_config_gz_is_masked() {
        assert!(MASKED_PATHS.contains(&"/proc/config.gz"));
    }

    /// The whole config.json for each network mode, as reviewed files: a change to what every sandbox gets shows
    /// in the diff. `UPDATE_GOLDEN=1 cargo test -p thv-sandbox-runtime golden` rewrites them.
    #[test]
    fn golden_config_per_network_mode() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sandbox/spec/golden");
        for (name, network) in [
            ("network-none.json", NetworkMode::None),
            ("network-host.json", NetworkMode::Host),
        ] {
            let mut o = opts();
            o.network = network;
            // The seccomp filter has its own reviewed data (sandbox-profiles); here it would be noise.
            o.seccomp = serde_json::from_value(json!({"defaultAction": "SCMP_ACT_ERRNO"})).unwrap();
            o.binds = vec![BindMount {
                host: "/home/u/project".into(),
                container: "/work".into(),
                read_only: false,
            }];
            let spec = build(&image(), &o).unwrap();
            check_invariants(&spec, network).unwrap();
            let got = serde_json::to_string_pretty(&spec).unwrap() + "\n";
            let path = dir.join(name);
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
            assert_eq!(
                got, want,
                "{name} changed: review the diff, then UPDATE_GOLDEN=1"
            );
        }
    }

    #[test]
    fn tmpfs_mounts_stay_within_half_of_the_memory_limit() {
        let free = tmpfs_sizes(DEFAULT_TMP_MIB, None);
        assert_eq!(
            free,
            TmpfsSizes {
                tmp: DEFAULT_TMP_MIB,
                run: RUN_TMPFS_MIB,
                shm: 64,
                volumes: VOLUMES_TMPFS_MIB
            }
        );
        let s = tmpfs_sizes(DEFAULT_TMP_MIB, Some(512 << 20));
        assert_eq!(
            s,
            TmpfsSizes {
                tmp: 64,
                run: 32,
                shm: 32,
                volumes: 64
            }
        );
        // With a home tmpfs as large as /tmp, everything together is within half of the limit.
        assert!(2 * s.tmp + s.run + s.shm + s.volumes <= 256);
        // A limit larger than the sizes changes nothing.
        assert_eq!(tmpfs_sizes(DEFAULT_TMP_MIB, Some(64 << 30)), free);
        let mut o = opts();
        o.memory_limit = Some(512 << 20);
        let v = serde_json::to_value(build(&image(), &o).unwrap()).unwrap();
        let tmp = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .unwrap();
        assert!(
            tmp["options"]
                .as_array()
                .unwrap()
                .contains(&json!("size=64m")),
            "{tmp}"
        );
    }
}
