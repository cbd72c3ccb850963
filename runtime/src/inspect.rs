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
    })
}

impl EffectiveProfile {
    /// Looks the image up in the cache (no network: `--pull never`, no verification step) and adds its digest and
    /// verification record.
    pub fn add_cached(&mut self, cache_dir: &std::path::Path) {
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
