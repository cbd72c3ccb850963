//! `thv-sandbox inspect`: what a `run` with the same arguments would give the server — computed from the same
//! request `run` uses, without pulling or starting anything.

use serde::Serialize;

use crate::pipeline::{seccomp_for, Error};
use crate::sandbox::profile::NetworkMode;
use crate::settings::RunRequest;

/// The effective sandbox profile of a request.
#[derive(Debug, Clone, Serialize)]
pub struct EffectiveProfile {
    /// The registry entry's full name, when run by name.
    pub server: Option<String>,
    /// The image reference.
    pub image: String,
    /// `none` or `host`.
    pub network: NetworkMode,
    /// What the network mode means.
    pub network_meaning: &'static str,
    /// Egress through the proxy: the rules (`None`: no proxy, nothing outside is reachable).
    pub egress: Option<crate::sandbox::egress::Outbound>,
    /// An HTTP-transport server's transport and port inside the sandbox (bridged to stdio).
    pub http: Option<(crate::catalog::Transport, u16)>,
    /// Host paths bound in.
    pub mounts: Vec<MountView>,
    /// Environment variable names (values are not shown), secret ones marked.
    pub env: Vec<EnvView>,
    /// The seccomp profile in force.
    pub seccomp: SeccompView,
    /// The provenance the registry declares for the image (`None`: none declared).
    pub provenance: Option<crate::catalog::Provenance>,
    /// The resource limits the run would get on this host.
    pub limits: LimitsView,
    /// The cached image (its manifest digest) and its verification record, when the cache has them (filled by
    /// [`EffectiveProfile::add_cached`]; nothing is fetched).
    pub cached: Option<CachedView>,
    /// `npx://` / `uvx://`: what is installed, from where, onto what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageView>,
}

/// What `run npx://…` / `uvx://…` installs, from where, and what is installed already.
#[derive(Debug, Clone, Serialize)]
pub struct PackageView {
    /// The package as asked for.
    pub package: String,
    /// The base image it is installed onto.
    pub base_image: String,
    /// Where the base image came from (`flag --base-image`, `environment NAME`, `file PATH`, `default`).
    pub base_image_source: String,
    /// The installer that runs in the install sandbox.
    pub installer: &'static str,
    /// The index.
    pub index: String,
    /// Where the index came from (`file PATH`, `environment NAME`, `default`).
    pub index_source: String,
    /// More indexes (pip).
    pub extra_indexes: Vec<String>,
    /// Where the extra indexes came from.
    pub extra_indexes_source: String,
    /// `host:port` the install sandbox may reach (nothing else).
    pub install_egress: Vec<String>,
    /// The CA bundle copied into the install sandbox.
    pub ca_file: Option<String>,
    /// The installed roots of this package (one per base image digest), with their locks.
    pub installed: Vec<InstalledView>,
    /// The key tag of its roots.
    #[serde(skip)]
    key_tag: String,
}

/// One installed root of a package.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledView {
    /// The root's directory.
    pub root: String,
    /// The manifest digest of the base image it was installed onto (`sha256:…`, from the root's name).
    pub base_digest: Option<String>,
    /// The version the package resolved to.
    pub version: String,
    /// The index it came from.
    pub index: String,
    /// The command the server starts with.
    pub command: Vec<String>,
    /// Every package of the tree, pinned.
    pub entries: Vec<crate::packages::lock::LockEntry>,
    /// The provenance verdict on every package of the tree, as the install recorded it (`None`: the root has no
    /// record of it, e.g. installed by an older thv-sandbox).
    pub provenance: Option<crate::packages::verdict::Recorded>,
}

/// The resource limits of a run: what was asked (and by whom), and what this host enforces.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsView {
    /// The limits asked for, with their sources.
    pub requested: crate::sandbox::limits::Limits,
    /// The limits enforced on this host (a limit that cannot be is `null`); `None`: the run would be refused.
    pub enforced: Option<crate::sandbox::limits::Limits>,
    /// How the sandbox gets its cgroup (`None`: it gets none).
    pub how: Option<String>,
    /// The warning the run would give, or why it would be refused.
    pub note: Option<String>,
    /// The sizes of /tmp, /run, /dev/shm and of the volumes together, in MiB (within the memory limit).
    pub tmpfs_mib: TmpfsView,
}

/// The tmpfs sizes, in MiB.
#[derive(Debug, Clone, Serialize)]
pub struct TmpfsView {
    /// `/tmp` (and a home the image lacks).
    pub tmp: u64,
    /// `/run`.
    pub run: u64,
    /// `/dev/shm`.
    pub shm: u64,
    /// The image's volumes together.
    pub volumes: u64,
}

/// The limits view of a request, on this host.
pub fn limits_view(req: &RunRequest) -> LimitsView {
    use crate::sandbox::cgroup;
    let choice = cgroup::choose(&cgroup::HostFacts::gather());
    let sizes = crate::sandbox::spec::tmpfs_sizes(req.tmp_mib, req.limits.memory.value);
    let tmpfs_mib = TmpfsView {
        tmp: sizes.tmp,
        run: sizes.run,
        shm: sizes.shm,
        volumes: sizes.volumes,
    };
    match cgroup::decide(&choice, &req.limits) {
        Ok(d) => LimitsView {
            requested: req.limits,
            enforced: Some(d.enforced),
            how: d.route.as_ref().map(cgroup::Route::describe),
            note: d.warning,
            tmpfs_mib,
        },
        Err(e) => LimitsView {
            requested: req.limits,
            enforced: None,
            how: None,
            note: Some(format!("`run` would refuse: {e}")),
            tmpfs_mib,
        },
    }
}

/// What the cache holds for the image.
#[derive(Debug, Clone, Serialize)]
pub struct CachedView {
    /// The platform manifest the reference resolves to in the cache.
    pub manifest_digest: String,
    /// The verification record kept with it, if it was verified.
    pub verification: Option<crate::trust::verification::Record>,
}

/// One bind mount.
#[derive(Debug, Clone, Serialize)]
pub struct MountView {
    /// Host path.
    pub host: String,
    /// Path inside.
    pub container: String,
    /// `ro` or `rw`.
    pub mode: &'static str,
}

/// One environment variable (name only).
#[derive(Debug, Clone, Serialize)]
pub struct EnvView {
    /// The name.
    pub name: String,
    /// Whether its value is secret (delivered in memory, never written).
    pub secret: bool,
    /// Required by the registry entry but not given: `run` with the same arguments refuses until it is.
    pub missing: bool,
    /// The registry's description (given for missing variables, which the user has to look up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The seccomp profile, as a reviewer reads it: the variant's delta in full, the base as counts.
#[derive(Debug, Clone, Serialize)]
pub struct SeccompView {
    /// The profile's name (`default`, a variant, or `VARIANT+override`).
    pub name: String,
    /// The profile it extends, if a variant.
    pub extends: Option<String>,
    /// Its description.
    pub description: String,
    /// What a syscall not listed gets.
    pub default_action: String,
    /// Rules removed from the base.
    pub removed: Vec<RuleView>,
    /// Groups added on top of the base (by the variant or the user's override).
    pub added: Vec<RuleView>,
    /// Groups of the base profile, counted.
    pub base_groups: usize,
    /// Every syscall allowed (unconditionally or with argument conditions), sorted.
    pub allowed_syscalls: Vec<String>,
}

/// One rule of a variant or override.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    /// Where it comes from (`browser`, `override`, …).
    pub origin: String,
    /// The action (for added groups).
    pub action: Option<String>,
    /// Whether argument conditions restrict it.
    pub conditional: bool,
    /// The syscalls.
    pub syscalls: Vec<String>,
    /// Why.
    pub reason: String,
}

fn package_view(p: &crate::packages::Install) -> PackageView {
    PackageView {
        package: p.spec.to_string(),
        base_image: p.base_image.clone(),
        base_image_source: p.base_image_source.clone(),
        installer: match p.spec.ecosystem {
            crate::packages::Ecosystem::Npm => "npm (resolve: npm install --package-lock-only; install: npm ci)",
            crate::packages::Ecosystem::Pypi => {
                "pip (resolve: pip install --dry-run --report; install: pip install --require-hashes --no-deps)"
            }
        },
        index: p.index.url.clone(),
        index_source: p.index.source.clone(),
        extra_indexes: p.index.extra.clone(),
        extra_indexes_source: p.index.extra_source.clone(),
        install_egress: p.index.hosts.iter().map(|(h, port)| format!("{h}:{port}")).collect(),
        ca_file: p.ca_file.as_ref().map(|f| f.display().to_string()),
        installed: Vec::new(),
        key_tag: p.key_tag(),
    }
}

/// Every installed package root of `cache` (`npx://`/`uvx://`), with its committed lock: for `images`.
pub fn installed_packages(cache: &std::path::Path) -> Vec<(String, InstalledView)> {
    installed_where(cache, &|name| name.contains("-pkg-"))
}

/// The installed roots in `cache` named `…-<key_tag>`, with their committed locks.
fn installed(key_tag: &str, cache: &std::path::Path) -> Vec<InstalledView> {
    let tag = format!("-{key_tag}");
    installed_where(cache, &|name| name.ends_with(&tag))
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// The installed package roots of `cache` whose names `pick` picks: each with the package, pinned
/// (`npx://NAME@VERSION`), and its lock.
fn installed_where(
    cache: &std::path::Path,
    pick: &dyn Fn(&str) -> bool,
) -> Vec<(String, InstalledView)> {
    let Ok(dir) = std::fs::read_dir(crate::rootfs::roots_dir(cache)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !pick(&name) {
            continue;
        }
        let lock_path = e
            .path()
            .join("rootfs")
            .join(crate::packages::lock::LOCK_PATH.trim_start_matches('/'));
        let Some(lock) = std::fs::read(&lock_path)
            .ok()
            .and_then(|t| serde_json::from_slice::<crate::packages::lock::Lock>(&t).ok())
        else {
            continue;
        };
        let provenance = std::fs::read(
            e.path()
                .join("rootfs")
                .join(crate::packages::lock::PROVENANCE_PATH.trim_start_matches('/')),
        )
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok());
        let pinned = crate::packages::PackageSpec {
            version: Some(lock.top_version.clone()),
            ..lock.top.clone()
        }
        .to_string();
        out.push((
            pinned,
            InstalledView {
                root: e.path().display().to_string(),
                base_digest: name
                    .split_once('-')
                    .and_then(|(alg, rest)| Some(format!("{alg}:{}", rest.split('-').next()?))),
                version: lock.top_version,
                index: lock.index,
                command: lock.command,
                entries: lock.entries,
                provenance,
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The recorded provenance verdicts of an installed root: the summary, then one line per package.
fn render_provenance(o: &mut String, recorded: Option<&crate::packages::verdict::Recorded>) {
    use crate::packages::provenance::Status;
    use crate::packages::verdict::Recorded;
    use std::fmt::Write as _;
    let report = match recorded {
        None => {
            let _ = writeln!(
                o,
                "  provenance: no verdict recorded in the root (installed by an older thv-sandbox)"
            );
            return;
        }
        Some(Recorded::NotChecked) => {
            let _ = writeln!(
                o,
                "  provenance: not checked at install (disabled): pinned by integrity hashes only"
            );
            return;
        }
        Some(Recorded::Checked { report }) => report,
    };
    let _ = writeln!(
        o,
        "  provenance ({}): {}",
        report.mode,
        report.summary_line()
    );
    for v in std::iter::once(&report.package).chain(&report.dependencies) {
        let what = match (v.status, &v.record) {
            (Status::Verified, Some(r)) => format!("verified ({})", r.built_by()),
            (Status::Verified, None) => "verified".to_owned(),
            (Status::NoProvenance, _) => "no provenance".to_owned(),
            (Status::Unverified, _) => "UNVERIFIED".to_owned(),
            (Status::Refused, _) => "REFUSED".to_owned(),
            (Status::Skipped, _) => "not checked".to_owned(),
        };
        let why = v
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let _ = writeln!(o, "    {} {what}{why}", v.package.spec());
    }
}

/// The effective profile of `req`.
pub fn effective_profile(req: &RunRequest) -> Result<EffectiveProfile, Error> {
    let seccomp = seccomp_for(req)?;
    let root = seccomp.extends().unwrap_or(seccomp.name()).to_owned();
    let base_origin = |o: &str| o == root || o == "default" && seccomp.extends().is_none();
    let mut allowed: Vec<String> = seccomp.allowed_syscalls().map(str::to_owned).collect();
    allowed.sort();
    allowed.dedup();
    let view = SeccompView {
        name: seccomp.name().to_owned(),
        extends: seccomp.extends().map(str::to_owned),
        description: seccomp.description().to_owned(),
        default_action: format!("{:?}", seccomp.default_action()),
        removed: seccomp
            .removals()
            .iter()
            .map(|r| RuleView {
                origin: r.origin().to_owned(),
                action: None,
                conditional: false,
                syscalls: r.syscalls().map(str::to_owned).collect(),
                reason: r.reason().to_owned(),
            })
            .collect(),
        added: seccomp
            .groups()
            .iter()
            .filter(|g| !base_origin(g.origin()))
            .map(|g| RuleView {
                origin: g.origin().to_owned(),
                action: Some(format!("{:?}", g.action())),
                conditional: g.is_conditional(),
                syscalls: g.syscalls().map(str::to_owned).collect(),
                reason: g.reason().to_owned(),
            })
            .collect(),
        base_groups: seccomp
            .groups()
            .iter()
            .filter(|g| base_origin(g.origin()))
            .count(),
        allowed_syscalls: allowed,
    };
    let mut env: Vec<EnvView> = req
        .env
        .iter()
        .map(|(n, _)| EnvView {
            name: n.clone(),
            secret: false,
            missing: false,
            description: None,
        })
        .chain(req.secrets.iter().map(|s| EnvView {
            name: s.name.clone(),
            secret: true,
            missing: false,
            description: None,
        }))
        .chain(req.missing_env.iter().map(|m| EnvView {
            name: m.name.clone(),
            secret: m.secret,
            missing: true,
            description: Some(m.description.clone()),
        }))
        .collect();
    env.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(EffectiveProfile {
        server: req.server_name.clone(),
        image: req.image.clone(),
        network: req.network,
        network_meaning: match req.network {
            NetworkMode::None => "own network namespace with loopback only; no DNS",
            NetworkMode::Host => {
                "the host's network namespace: everything the user can reach, host loopback services included"
            }
        },
        egress: req
            .egress
            .clone()
            .filter(|_| req.network == NetworkMode::None),
        http: req.http.map(|(t, port)| (t.into(), port)),
        mounts: req
            .mounts
            .iter()
            .map(|m| MountView {
                host: m.host.display().to_string(),
                container: m.container.clone(),
                mode: if m.read_only { "ro" } else { "rw" },
            })
            .collect(),
        env,
        seccomp: view,
        provenance: req.provenance.clone(),
        limits: limits_view(req),
        cached: None,
        package: req.package.as_ref().map(package_view),
    })
}

impl EffectiveProfile {
    /// Looks the image up in the cache (no network: `--pull never`, no verification step) and adds its digest and
    /// verification record.
    pub fn add_cached(&mut self, cache_dir: &std::path::Path) {
        if let Some(p) = &mut self.package {
            p.installed = installed(&p.key_tag, cache_dir);
        }
        if self.image.starts_with("oci:") {
            return;
        }
        let Ok(reference) = self.image.parse::<crate::image::reference::Reference>() else {
            return;
        };
        let mut opts = crate::distribution::PullOptions::new(cache_dir);
        opts.policy = crate::distribution::PullPolicy::Never;
        if let Ok(pulled) = crate::distribution::pull(&reference, &opts) {
            self.cached = Some(CachedView {
                manifest_digest: pulled.manifest_digest.to_string(),
                verification: crate::trust::verification::read_record(
                    &cache_dir.join("verification"),
                    &pulled.manifest_digest,
                ),
            });
        }
    }

    /// The text `inspect` prints for people.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        if let Some(s) = &self.server {
            let _ = writeln!(o, "server:   {s}");
        }
        let _ = writeln!(o, "image:    {}", self.image);
        if let Some(p) = &self.package {
            let _ = writeln!(o, "package:  {} onto the base image above", p.package);
            let _ = writeln!(
                o,
                "  base image: {} ({})",
                p.base_image, p.base_image_source
            );
            let _ = writeln!(o, "  installer: {}, in the install sandbox", p.installer);
            let _ = writeln!(o, "  index:     {} ({})", p.index, p.index_source);
            for x in &p.extra_indexes {
                let _ = writeln!(o, "  index:     {x} (extra, {})", p.extra_indexes_source);
            }
            let _ = writeln!(
                o,
                "  install egress: {} only; runs from the installed root have no network",
                p.install_egress.join(", ")
            );
            if let Some(ca) = &p.ca_file {
                let _ = writeln!(o, "  CA bundle: {ca} (copied into the install sandbox)");
            }
            if p.installed.is_empty() {
                let _ = writeln!(
                    o,
                    "  installed: not yet (the first run or `pull` installs it)"
                );
            }
            for i in &p.installed {
                let _ = writeln!(
                    o,
                    "  installed: {} from {}, {} packages pinned (sha512/sha256), root {}",
                    i.version,
                    i.index,
                    i.entries.len(),
                    i.root
                );
                for e in &i.entries {
                    let _ = writeln!(o, "    {} {} {}", e.name, e.version, e.url);
                }
                render_provenance(&mut o, i.provenance.as_ref());
            }
        }
        let _ = writeln!(
            o,
            "network:  {} ({})",
            self.network.as_str(),
            self.network_meaning
        );
        if let Some(e) = &self.egress {
            let mut what = Vec::new();
            if e.insecure_allow_all {
                // It overrides the lists (as in ToolHive): they are not shown as if they narrowed it.
                what.push("any public destination on any port (insecure_allow_all)".to_owned());
            } else {
                if !e.allow_host.is_empty() {
                    what.push(format!("hosts {}", e.allow_host.join(", ")));
                }
                if !e.allow_port.is_empty() {
                    let ports: Vec<String> = e.allow_port.iter().map(|p| p.to_string()).collect();
                    what.push(format!("ports {}", ports.join(", ")));
                }
            }
            if !e.allow.is_empty() {
                let added: Vec<String> = e.allow.iter().map(|a| a.to_string()).collect();
                what.push(format!(
                    "added by --allow-host/--allow-port: {}",
                    added.join(", ")
                ));
            }
            let _ = writeln!(
                o,
                "egress:   through the proxy at 127.0.0.1:{}: {}",
                crate::sandbox::egress::PROXY_PORT,
                what.join("; ")
            );
        }
        if let Some((t, port)) = &self.http {
            let _ = writeln!(
                o,
                "transport: {t} on port {port} inside the sandbox, bridged to stdio"
            );
        }
        if self.mounts.is_empty() {
            let _ = writeln!(o, "mounts:   none (no host path is visible)");
        } else {
            let _ = writeln!(o, "mounts:");
            for m in &self.mounts {
                let _ = writeln!(o, "  {} -> {} ({})", m.host, m.container, m.mode);
            }
        }
        if self.env.is_empty() {
            let _ = writeln!(o, "env:      none besides the image's own");
        } else {
            let names: Vec<String> = self
                .env
                .iter()
                .map(|e| match (e.secret, e.missing) {
                    (false, false) => e.name.clone(),
                    (true, false) => format!("{} (secret)", e.name),
                    (false, true) => format!("{} (missing)", e.name),
                    (true, true) => format!("{} (secret, missing)", e.name),
                })
                .collect();
            let _ = writeln!(o, "env:      {}", names.join(", "));
            let missing: Vec<&EnvView> = self.env.iter().filter(|e| e.missing).collect();
            if let Some(first) = missing.first() {
                let _ = writeln!(o, "missing:  required, and `run` refuses until given:");
                let width = missing.iter().map(|e| e.name.len()).max().unwrap_or(0);
                for e in &missing {
                    let _ = writeln!(
                        o,
                        "  {:width$}  {}",
                        e.name,
                        e.description.as_deref().unwrap_or("")
                    );
                }
                let _ = writeln!(
                    o,
                    "  set each in the MCP client's `env` for this server, or give `-e {}=VALUE` / `--env-file FILE`",
                    first.name
                );
            }
        }
        let l = &self.limits;
        let _ = writeln!(o, "limits:   {}", l.requested.describe());
        match (&l.enforced, &l.how) {
            (Some(e), Some(how)) => {
                let _ = writeln!(o, "  enforced: {} ({how})", e.describe_set());
            }
            (Some(_), None) => {
                let _ = writeln!(o, "  enforced: none");
            }
            (None, _) => {}
        }
        if let Some(note) = &l.note {
            let _ = writeln!(o, "  {note}");
        }
        let t = &l.tmpfs_mib;
        let _ = writeln!(
            o,
            "  tmpfs: /tmp {} MiB, /run {} MiB, /dev/shm {} MiB, volumes {} MiB together",
            t.tmp, t.run, t.shm, t.volumes
        );
        let s = &self.seccomp;
        match &s.extends {
            Some(base) => {
                let _ = writeln!(o, "seccomp:  {} (extends {base})", s.name);
            }
            None => {
                let _ = writeln!(o, "seccomp:  {}", s.name);
            }
        }
        let _ = writeln!(
            o,
            "  default action {}; {} syscalls allowed; {} groups of the base profile",
            s.default_action,
            s.allowed_syscalls.len(),
            s.base_groups
        );
        for r in &s.removed {
            let _ = writeln!(
                o,
                "  - removed [{}] {}: {}",
                r.origin,
                r.syscalls.join(", "),
                r.reason
            );
        }
        for r in &s.added {
            let _ = writeln!(
                o,
                "  + {} [{}] {}{}: {}",
                r.action.as_deref().unwrap_or(""),
                r.origin,
                r.syscalls.join(", "),
                if r.conditional {
                    " (with argument conditions)"
                } else {
                    ""
                },
                r.reason
            );
        }
        match &self.cached {
            None => {
                let _ = writeln!(o, "cached:   no (the first run pulls and verifies it)");
            }
            Some(c) => {
                let _ = writeln!(o, "cached:   {}", c.manifest_digest);
                match &c.verification {
                    None => {
                        let _ = writeln!(
                            o,
                            "verified: no record (it ran unverified, or was never run)"
                        );
                    }
                    Some(r) => {
                        let _ = writeln!(
                            o,
                            "verified: at {} (unix time) from {} for {}; signer {}",
                            r.verified_at,
                            r.evidence_source,
                            r.evidence_subject,
                            r.workflow().unwrap_or("?")
                        );
                    }
                }
            }
        }
        match &self.provenance {
            None => {
                let _ = writeln!(o, "provenance: none declared");
            }
            Some(p) => {
                let _ = writeln!(o, "provenance:");
                for (k, v) in [
                    ("sigstore_url", &p.sigstore_url),
                    ("repository_uri", &p.repository_uri),
                    ("repository_ref", &p.repository_ref),
                    ("signer_identity", &p.signer_identity),
                    ("runner_environment", &p.runner_environment),
                    ("cert_issuer", &p.cert_issuer),
                ] {
                    if let Some(v) = v {
                        let _ = writeln!(o, "  {k}: {v}");
                    }
                }
            }
        }
        o
    }
}
