//! `thv-sandbox`: run MCP servers from OCI images in rootless sandboxes.
//!
//! Parse (clap) → resolve settings → call the runtime → render errors. stdout belongs to the MCP server alone:
//! everything this binary says goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use thv_sandbox_provenance as prov;
use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::distribution::PullPolicy;
use thv_sandbox_runtime::{cache, doctor, runner, EXIT_SANDBOX_ERROR, EXIT_USAGE};

#[derive(Debug, Parser)]
#[command(
    name = "thv-sandbox",
    version,
    about = "Run MCP servers from OCI images in rootless sandboxes"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an MCP server over stdio in a sandbox: `thv-sandbox run IMAGE [-- ARGS…]`.
    Run(RunArgs),
    /// Pull an image from its registry into the cache; prints the pinned reference (`…@sha256:…`) on stdout.
    Pull(PullArgs),
    /// List the cached images with their sizes (a table on stdout; `--json` for a JSON array).
    Images(ImagesArgs),
    /// Remove from the cache what no cached image needs: blobs, unpacked roots, leftovers of interrupted pulls.
    Prune(PruneArgs),
    /// Check whether this host can run rootless sandboxes, and how to fix what is missing.
    Doctor,
    /// Verify provenance of an image (`verify IMAGE`, evidence from its registry, no layer fetched) or of a file
    /// (`verify --bundle F (--artifact F | --digest sha256:…)`). The exit status is the verdict: 0 verified,
    /// 1 refused, 2 usage.
    Verify(VerifyArgs),
    /// Internal: the runner process (started by `run`).
    #[command(name = "__runner", hide = true)]
    Runner { run_dir: PathBuf },
}

/// Where images come from.
#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// When to contact the registry: `always` (resolve the tag again), `missing` (use the cache when it has the
    /// image), `never` (cache only, no network).
    #[arg(long, value_enum, default_value_t = PullArg::Missing)]
    pull: PullArg,
    /// A registry (HOST[:PORT]) that may be reached over plain HTTP; loopback registries always may. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Cache directory (default: $XDG_CACHE_HOME/thv-sandbox or ~/.cache/thv-sandbox).
    #[arg(long, env = "THV_SANDBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PullArg {
    Always,
    Missing,
    Never,
}

impl From<PullArg> for PullPolicy {
    fn from(p: PullArg) -> PullPolicy {
        match p {
            PullArg::Always => PullPolicy::Always,
            PullArg::Missing => PullPolicy::Missing,
            PullArg::Never => PullPolicy::Never,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// The image: a registry reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`).
    image: String,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Debug, clap::Args)]
struct ImagesArgs {
    /// Print a JSON array instead of the table.
    #[arg(long)]
    json: bool,
    /// Cache directory (default: $XDG_CACHE_HOME/thv-sandbox or ~/.cache/thv-sandbox).
    #[arg(long, env = "THV_SANDBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PruneArgs {
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Cache directory (default: $XDG_CACHE_HOME/thv-sandbox or ~/.cache/thv-sandbox).
    #[arg(long, env = "THV_SANDBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// The identity the evidence must name (cosign's flags), and the trust material.
#[derive(Debug, Clone, Default, clap::Args)]
struct IdentityArgs {
    /// The exact certificate SAN, e.g. `https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1`.
    #[arg(long, value_name = "SAN")]
    certificate_identity: Option<String>,
    /// The OIDC issuer, e.g. `https://token.actions.githubusercontent.com`.
    #[arg(long, value_name = "URL")]
    certificate_oidc_issuer: Option<String>,
    /// The GitHub repository (`owner/repo`) the workflow ran in.
    #[arg(long, value_name = "OWNER/REPO")]
    certificate_github_workflow_repository: Option<String>,
    /// The git ref the workflow ran for, e.g. `refs/tags/v1.0.0`.
    #[arg(long, value_name = "REF")]
    certificate_github_workflow_ref: Option<String>,
    /// The commit the workflow ran for.
    #[arg(long, value_name = "SHA")]
    certificate_github_workflow_sha: Option<String>,
    /// The event that triggered the workflow, e.g. `push`, `release`.
    #[arg(long, value_name = "EVENT")]
    certificate_github_workflow_trigger: Option<String>,
    /// The workflow's display name.
    #[arg(long, value_name = "NAME")]
    certificate_github_workflow_name: Option<String>,
    /// Accept any signer the instance certified (no identity check). Explicit, never a default.
    #[arg(long)]
    insecure_any_identity: bool,
    /// The Sigstore instance that signed, by its TUF repository: `tuf-repo-cdn.sigstore.dev` (public-good,
    /// default) or `tuf-repo.github.com` (GitHub's). It decides which evidence is required.
    #[arg(long, value_name = "HOST")]
    sigstore_url: Option<String>,
    /// A trusted_root.json to use instead of the embedded trust roots (replaces trust material, not the evidence
    /// the instance requires).
    #[arg(long, value_name = "FILE")]
    trust_root: Option<PathBuf>,
}

impl IdentityArgs {
    fn any_identity_flag(&self) -> bool {
        [
            &self.certificate_identity,
            &self.certificate_oidc_issuer,
            &self.certificate_github_workflow_repository,
            &self.certificate_github_workflow_ref,
            &self.certificate_github_workflow_sha,
            &self.certificate_github_workflow_trigger,
            &self.certificate_github_workflow_name,
        ]
        .iter()
        .any(|f| f.is_some())
    }

    /// The policy the flags give; `None` when they name none (the caller decides whether that is an error).
    fn policy(&self) -> Result<Option<prov::Policy>, String> {
        if self.insecure_any_identity && self.any_identity_flag() {
            return Err(
                "--insecure-any-identity contradicts the identity flags given with it".into(),
            );
        }
        if self.insecure_any_identity {
            return Ok(Some(prov::Policy::InsecureAnyIdentity {
                sigstore_url: self.sigstore_url.clone(),
            }));
        }
        if !self.any_identity_flag() {
            return Ok(None);
        }
        Ok(Some(prov::Policy::Identity(prov::IdentityPolicy {
            sigstore_url: self.sigstore_url.clone(),
            certificate_identity: self.certificate_identity.clone(),
            certificate_oidc_issuer: self.certificate_oidc_issuer.clone(),
            github_workflow_repository: self.certificate_github_workflow_repository.clone(),
            github_workflow_ref: self.certificate_github_workflow_ref.clone(),
            github_workflow_sha: self.certificate_github_workflow_sha.clone(),
            github_workflow_trigger: self.certificate_github_workflow_trigger.clone(),
            github_workflow_name: self.certificate_github_workflow_name.clone(),
        })))
    }

    /// The verification settings for images.
    fn verification(
        &self,
        mode: Option<thv_sandbox_runtime::Mode>,
    ) -> Result<thv_sandbox_runtime::Verification, String> {
        Ok(thv_sandbox_runtime::Verification {
            mode,
            policy: self.policy()?,
            trust_root: self.trust_root.clone(),
            github_api: std::env::var("THV_SANDBOX_GITHUB_API")
                .ok()
                .filter(|v| !v.is_empty()),
            github_token: std::env::var("GITHUB_TOKEN").ok().filter(|v| !v.is_empty()),
        })
    }

    fn verifier(&self) -> Result<prov::Verifier, prov::Refusal> {
        Ok(match &self.trust_root {
            Some(path) => prov::Verifier::with_trust_root(prov::TrustRoot::from_file(path)?),
            None => prov::Verifier::embedded(),
        })
    }
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// An image (registry reference): its evidence is found at the registry and verified; no layer is fetched.
    #[arg(conflicts_with_all = ["bundle", "artifact", "digest"])]
    image: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
    /// A Sigstore bundle (JSON, or JSON Lines with one bundle per line; any one that verifies is enough).
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// The file the bundle is about.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "digest",
        requires = "bundle"
    )]
    artifact: Option<PathBuf>,
    /// The digest of the artifact the bundle is about, `sha256:HEX`.
    #[arg(long, value_name = "sha256:HEX", requires = "bundle")]
    digest: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The image: a registry reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`) or an OCI image
    /// layout directory, `oci:PATH[:TAG]`.
    image: String,
    #[command(flatten)]
    source: SourceArgs,
    /// Provenance verification: `disabled`, `warn` (run, saying on stderr what failed), `enabled` (refuse on
    /// failure; an image without an expected identity is refused). Default: `enabled` when an identity is given,
    /// `warn` otherwise.
    #[arg(long, value_name = "MODE", env = "THV_SANDBOX_IMAGE_VERIFICATION")]
    image_verification: Option<thv_sandbox_runtime::Mode>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Set an environment variable in the sandbox (NAME=VALUE). Nothing from the host environment is passed
    /// otherwise.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Seconds the server gets to exit after SIGTERM (and after the client closes stdin) before SIGKILL.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    stop_timeout: f64,
    /// Print per-phase start timings to stderr (also THV_SANDBOX_TIMINGS=1).
    #[arg(long, hide = true)]
    timings: bool,
    /// Arguments for the server, replacing the image's Cmd.
    #[arg(last = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // clap prints help/version to stdout; that is fine for those, errors go to stderr.
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    init_logging(cli.verbose);
    let code = match cli.command {
        Command::Runner { run_dir } => runner::keeper_main(&run_dir),
        Command::Doctor => doctor_cmd(),
        Command::Verify(args) => verify_cmd(args),
        Command::Run(args) => run_cmd(args),
        Command::Pull(args) => pull_cmd(args),
        Command::Images(args) => images_cmd(args),
        Command::Prune(args) => prune_cmd(args),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},libcontainer=error,libcgroups=error"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .without_time()
        .try_init();
}

fn doctor_cmd() -> i32 {
    let dirs = match Dirs::from_env(None) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    let report = doctor::diagnose(&doctor::DoctorInputs {
        state_dir: dirs.state,
        cache_dir: dirs.cache,
    });
    eprint!("{}", report.render());
    if report.ok() {
        0
    } else {
        1
    }
}

fn run_cmd(args: RunArgs) -> i32 {
    let mut env = Vec::new();
    for e in &args.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_owned(), v.to_owned())),
            _ => {
                eprintln!("error: `-e {e}` is not NAME=VALUE");
                return EXIT_USAGE;
            }
        }
    }
    if !(args.stop_timeout.is_finite() && args.stop_timeout >= 0.0) {
        eprintln!("error: --stop-timeout must be a number of seconds ≥ 0");
        return EXIT_USAGE;
    }
    let dirs = match Dirs::from_env(args.source.cache_dir.clone()) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    let verification = match args.identity.verification(args.image_verification) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let req = thv_sandbox_runtime::RunRequest {
        image: args.image,
        pull_policy: args.source.pull.into(),
        insecure_registries: args.source.insecure_registry,
        args: (!args.args.is_empty()).then_some(args.args),
        env,
        stop_timeout: Duration::from_secs_f64(args.stop_timeout),
        cache_dir: args.source.cache_dir,
        exe: PathBuf::from("/proc/self/exe"),
        timings: args.timings || std::env::var_os("THV_SANDBOX_TIMINGS").is_some_and(|v| v == "1"),
        verification,
    };
    match thv_sandbox_runtime::run(&req, &dirs) {
        Ok(summary) => summary.exit_code,
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

fn pull_cmd(args: PullArgs) -> i32 {
    let dirs = match Dirs::from_env(args.source.cache_dir.clone()) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    match thv_sandbox_runtime::pull(
        &args.image,
        args.source.pull.into(),
        &args.source.insecure_registry,
        &dirs,
    ) {
        Ok(pulled) => {
            // stdout is data: the pinned reference, for scripts.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", pulled.tag_ref);
            0
        }
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

fn images_cmd(args: ImagesArgs) -> i32 {
    let dirs = match Dirs::from_env(args.cache_dir) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    let images = match cache::list(&dirs.cache) {
        Ok(i) => i,
        Err(e) => return report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    };
    // stdout is data: the table, or JSON for scripts.
    let out = if args.json {
        cache::render_json(&images)
    } else {
        cache::render_table(&images)
    };
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

fn prune_cmd(args: PruneArgs) -> i32 {
    let dirs = match Dirs::from_env(args.cache_dir) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    // Roots that live runs use are kept; without a state directory there are no live runs to ask.
    let runs = dirs.state.join("runs");
    let report = match cache::prune_keeping_runs(&dirs.cache, Some(&runs), args.dry_run) {
        Ok(r) => r,
        Err(e) => return report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    };
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &report.removed {
        eprintln!(
            "{verb} {} ({})",
            r.path.display(),
            cache::human_size(r.bytes)
        );
    }
    eprintln!(
        "{verb} {} blobs, {} unpacked roots, {} leftovers of interrupted pulls and unpacks: {} freed{}",
        report.count(cache::RemovedKind::Blob),
        report.count(cache::RemovedKind::Root),
        report.count(cache::RemovedKind::TempFile) + report.count(cache::RemovedKind::Staging),
        cache::human_size(report.bytes_freed()),
        if report.dry_run { " (dry run)" } else { "" },
    );
    if report.kept > 0 {
        eprintln!(
            "kept {} unreferenced items that are recent, locked or in use",
            report.kept
        );
    }
    let mut code = 0;
    for e in &report.failures {
        report_error(e, &[], None, 0);
        code = EXIT_SANDBOX_ERROR;
    }
    code
}

/// Exit status of a refused verification.
const EXIT_REFUSED: i32 = 1;

fn verify_cmd(args: VerifyArgs) -> i32 {
    if let Some(image) = &args.image {
        return verify_image_cmd(image, &args);
    }
    let Some(bundle_path) = &args.bundle else {
        eprintln!("error: give --bundle FILE with --artifact FILE or --digest sha256:HEX");
        return EXIT_USAGE;
    };
    let policy = match args.identity.policy() {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!(
                "error: no expected identity: give --certificate-identity and/or --certificate-oidc-issuer (or \
                 --certificate-github-workflow-repository …)"
            );
            eprintln!("hint: to accept any signer the instance certified, say so: --insecure-any-identity");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let artifact = match (&args.artifact, &args.digest) {
        (Some(path), None) => match std::fs::read(path) {
            Ok(b) => Blob::Bytes(b),
            Err(e) => {
                eprintln!("error: cannot read --artifact {}: {e}", path.display());
                return EXIT_USAGE;
            }
        },
        (None, Some(d)) => match d.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Blob::Sha256(hex.to_ascii_lowercase())
            }
            _ => {
                eprintln!("error: --digest {d:?} is not sha256:HEX (64 hex digits)");
                return EXIT_USAGE;
            }
        },
        _ => {
            eprintln!("error: give the artifact: --artifact FILE or --digest sha256:HEX");
            return EXIT_USAGE;
        }
    };
    let text = match std::fs::read_to_string(bundle_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read --bundle {}: {e}", bundle_path.display());
            return EXIT_USAGE;
        }
    };
    let subject = match &artifact {
        Blob::Bytes(b) => prov::Subject::Blob(b),
        Blob::Sha256(h) => prov::Subject::Sha256(h),
    };
    let verdict = prov::Bundle::parse_all(&text)
        .and_then(|bundles| args.identity.verifier()?.verify(&bundles, subject, &policy));
    report_verdict(&verdict, &bundle_path.display().to_string(), args.json)
}

/// `thv-sandbox verify IMAGE`: evidence from the registry, verified under `enabled`; no layer is fetched.
fn verify_image_cmd(image: &str, args: &VerifyArgs) -> i32 {
    let verification = match args
        .identity
        .verification(Some(thv_sandbox_runtime::Mode::Enabled))
    {
        Ok(v) if v.policy.is_some() => v,
        Ok(_) => {
            eprintln!(
                "error: no expected identity: give --certificate-identity and/or --certificate-oidc-issuer (or \
                 --certificate-github-workflow-repository …)"
            );
            eprintln!("hint: to accept any signer the instance certified, say so: --insecure-any-identity");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let dirs = match Dirs::from_env(args.source.cache_dir.clone()) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    let outcome = match thv_sandbox_runtime::pull_verified(
        image,
        args.source.pull.into(),
        &args.source.insecure_registry,
        &dirs,
        &verification,
        true,
    ) {
        Err(thv_sandbox_runtime::Error::VerifiedOnly(outcome)) => outcome,
        Ok((_, outcome)) => outcome,
        Err(e) => return report_runtime_error(&e, &dirs),
    };
    use thv_sandbox_runtime::verification::Outcome;
    match outcome {
        Some(Outcome::Verified { record, reused }) => {
            let what = format!(
                "{image} ({}{})",
                record.manifest_digest,
                if reused {
                    ", from the verification record"
                } else {
                    ""
                }
            );
            eprintln!(
                "  evidence from: {} for {}",
                record.evidence_source, record.evidence_subject
            );
            report_verdict(&Ok(record.verified.clone()), &what, args.json)
        }
        Some(Outcome::Refused { reason, hint }) => {
            eprintln!("refused: {image}: {reason}");
            eprintln!("hint: {hint}");
            if args.json {
                use std::io::Write;
                let doc = serde_json::json!({"verified": false, "message": reason, "hint": hint});
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            EXIT_REFUSED
        }
        other => {
            eprintln!("error: {image}: verification did not run ({other:?})");
            EXIT_SANDBOX_ERROR
        }
    }
}

enum Blob {
    Bytes(Vec<u8>),
    Sha256(String),
}

/// Says the verdict on stderr (and as JSON on stdout with `--json`); returns the exit status.
fn report_verdict(verdict: &Result<prov::Verified, prov::Refusal>, what: &str, json: bool) -> i32 {
    use std::io::Write;
    match verdict {
        Ok(v) => {
            let c = &v.claims;
            eprintln!("verified: {what}");
            eprintln!("  signer:      {}", c.san.as_deref().unwrap_or("-"));
            eprintln!("  issuer:      {}", c.issuer.as_deref().unwrap_or("-"));
            if let Some(r) = &c.source_repository_uri {
                eprintln!(
                    "  repository:  {r} @ {}",
                    c.source_repository_ref.as_deref().unwrap_or("-")
                );
            }
            if let Some(r) = &c.runner_environment {
                eprintln!("  runner:      {r}");
            }
            eprintln!(
                "  evidence:    {} ({} log entries, SCT {}, {} RFC 3161 timestamps), signed {}",
                v.evidence.kind,
                v.evidence.tlog_entries,
                if v.evidence.sct { "yes" } else { "no" },
                v.evidence.rfc3161_timestamps,
                v.evidence.signing_time
            );
            eprintln!(
                "  trust root:  {}{} ({})",
                v.trust_root.source,
                v.trust_root
                    .snapshot
                    .as_deref()
                    .map(|s| format!(" snapshot {s}"))
                    .unwrap_or_default(),
                v.instance
            );
            if json {
                let doc = serde_json::json!({"verified": true, "result": v});
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            0
        }
        Err(e) => {
            eprintln!("refused: {what}: {e}");
            eprintln!("hint: {}", e.hint());
            if json {
                let doc = serde_json::json!({
                    "verified": false,
                    "reason": e.kind(),
                    "message": e.to_string(),
                    "hint": e.hint(),
                });
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            EXIT_REFUSED
        }
    }
}

fn report_runtime_error(e: &thv_sandbox_runtime::Error, dirs: &Dirs) -> i32 {
    let code = match e {
        thv_sandbox_runtime::Error::BadReference(_) | thv_sandbox_runtime::Error::Reference(_) => {
            EXIT_USAGE
        }
        _ => EXIT_SANDBOX_ERROR,
    };
    report_error(e, e.remote_causes(), e.hint(Some(dirs)), code)
}

/// `error: …`, indented `caused by: …` lines, and a `hint: …`.
fn report_error(
    err: &dyn std::error::Error,
    remote: &[String],
    hint: Option<String>,
    code: i32,
) -> i32 {
    eprintln!("error: {err}");
    let mut seen = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !seen.contains(&s) {
            eprintln!("  caused by: {s}");
            seen.push(s);
        }
        cur = c.source();
    }
    for s in remote {
        if !seen.contains(s) {
            eprintln!("  caused by: {s}");
            seen.push(s.clone());
        }
    }
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    code
}
