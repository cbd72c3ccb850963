//! Package provenance, decided before anything is installed: npm's provenance attestations and PyPI's PEP 740
//! attestations, verified by the same verdict function as images ([`thv_sandbox_provenance::Verifier::verify`]),
//! under the same modes ([`Mode`]) and kept as verification records next to the images' ones.
//!
//! # What is checked, per package of the resolved tree
//! - npm: the attestations the registry serves for `NAME@VERSION` (`dist.attestations.url` of the version's
//!   packument when the caller has it, else `/-/npm/v1/attestations/NAME@VERSION` at the registry). The SLSA
//!   provenance bundles (Fulcio identity) are verified; the subject must be `pkg:npm/NAME@VERSION` with the
//!   tarball's sha512 from the lock (`integrity`). The publish attestation (signed with npm's registry key, not a
//!   Sigstore identity) is only checked to name the same package and digest: it is not counted as verification.
//! - PyPI: the PEP 740 provenance of the exact file (a simple-index PEP 691 `provenance` link, else the integrity
//!   API `/integrity/PROJECT/VERSION/FILENAME/provenance` at the index's host); each attestation is verified, its
//!   subject must be the file name with the file's sha256.
//!
//! # Identity and modes
//! The identity a package must be signed by is the registry entry's `provenance` when it pins one (then the
//! default mode is `enabled`: a claim that is made must hold, a missing attestation refuses the install). Without
//! a pin, the identity the index itself declares is used — npm: the packument's `repository`; PyPI: the Trusted
//! Publisher (repository and workflow) PyPI recorded with the attestations — and the default mode is `warn`.
//! `enabled` without a pin refuses, as for images: a package's own claim about itself is not a pin.
//! Dependencies are never pinned: each one that carries provenance is verified against its own declared identity;
//! one whose provenance fails is refused under `enabled` (evidence that exists and does not hold is what an
//! attack looks like) and warned about under `warn`. How many of the tree carry provenance is in [`TreeReport`].
//!
//! # Records
//! A positive verdict is stored in `<cache>/verification/packages/<key>.record.json` and the evidence beside it
//! (`<key>.evidence.json`), keyed by ecosystem, name, version and digest. A record is reused only under the very
//! same policy and trust-root material; otherwise the stored evidence is verified again before the index is asked.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use thv_sandbox_provenance as prov;
use thv_sandbox_provenance::packages as pp;

use crate::packages::lock::LockEntry;
use crate::packages::spec::PackageSpec;
use crate::trust::verification::{Mode, Verification};

/// The public npm registry.
pub const NPM_REGISTRY: &str = "https://registry.npmjs.org";
/// The public PyPI simple index.
pub const PYPI_INDEX: &str = "https://pypi.org/simple";

/// Which package index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// npm.
    Npm,
    /// PyPI.
    Pypi,
}

impl std::fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ecosystem::Npm => "npm",
            Ecosystem::Pypi => "pypi",
        })
    }
}

/// A package file's digest, as a lock pins it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Integrity {
    /// sha512, hex (npm's `integrity`).
    Sha512(String),
    /// sha256, hex (PyPI's `hashes.sha256`).
    Sha256(String),
}

impl Integrity {
    /// An npm/SRI `integrity` (`sha512-BASE64`, also `sha256-BASE64`); the strongest of several is taken.
    pub fn from_sri(sri: &str) -> Result<Integrity, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut best: Option<Integrity> = None;
        for part in sri.split_whitespace() {
            let (alg, value) = part
                .split_once('-')
                .ok_or_else(|| format!("`{part}` is not an integrity (ALG-BASE64)"))?;
            let value = value.split('?').next().unwrap_or(value);
            let bytes = b64
                .decode(value)
                .map_err(|e| format!("`{part}`: not base64: {e}"))?;
            let it = match (alg, bytes.len()) {
                ("sha512", 64) => Integrity::Sha512(hex::encode(bytes)),
                ("sha256", 32) => Integrity::Sha256(hex::encode(bytes)),
                ("sha512" | "sha256", n) => {
                    return Err(format!("`{part}`: {n} bytes is not a {alg} digest"))
                }
                _ => continue,
            };
            if best.is_none() || matches!(it, Integrity::Sha512(_)) {
                best = Some(it);
            }
        }
        best.ok_or_else(|| format!("`{sri}` has no sha512 or sha256 digest"))
    }

    /// The digest of `bytes` the ecosystem's attestations name: sha512 for npm tarballs, sha256 for PyPI files.
    pub fn of(ecosystem: Ecosystem, bytes: &[u8]) -> Integrity {
        match ecosystem {
            Ecosystem::Npm => Integrity::Sha512(hex::encode(sha2::Sha512::digest(bytes))),
            Ecosystem::Pypi => Integrity::Sha256(hex::encode(sha2::Sha256::digest(bytes))),
        }
    }

    /// Whether `bytes` have this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match self {
            Integrity::Sha512(h) => *h == hex::encode(sha2::Sha512::digest(bytes)),
            Integrity::Sha256(h) => *h == hex::encode(sha2::Sha256::digest(bytes)),
        }
    }

    fn subject(&self) -> prov::Subject<'_> {
        match self {
            Integrity::Sha512(h) => prov::Subject::Sha512(h),
            Integrity::Sha256(h) => prov::Subject::Sha256(h),
        }
    }

    fn parts(&self) -> (&'static str, &str) {
        match self {
            Integrity::Sha512(h) => ("sha512", h),
            Integrity::Sha256(h) => ("sha256", h),
        }
    }
}

impl std::fmt::Display for Integrity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, h) = self.parts();
        write!(f, "{a}:{h}")
    }
}

impl TryFrom<String> for Integrity {
    type Error = String;
    fn try_from(s: String) -> Result<Integrity, String> {
        let (alg, h) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not ALG:HEX"))?;
        let ok = h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        match (alg, h.len(), ok) {
            ("sha512", 128, true) => Ok(Integrity::Sha512(h.into())),
            ("sha256", 64, true) => Ok(Integrity::Sha256(h.into())),
            _ => Err(format!("`{s}` is not sha512:HEX or sha256:HEX")),
        }
    }
}

impl From<Integrity> for String {
    fn from(i: Integrity) -> String {
        i.to_string()
    }
}

/// One package of a resolved tree, as the lock pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Which index.
    pub ecosystem: Ecosystem,
    /// The name (npm: with its scope; PyPI: the project name).
    pub name: String,
    /// The exact version.
    pub version: String,
    /// The file installed: the tarball (npm) or the wheel/sdist (PyPI) file name.
    pub filename: String,
    /// The file's digest from the lock (checked against the downloaded bytes by the installer).
    pub integrity: Integrity,
    /// Where the index says its attestations are: npm's `dist.attestations.url`, PyPI's simple-index
    /// `provenance` link. `None`: the standard endpoint is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestations_url: Option<String>,
    /// npm: the source repository the packument's `repository` names ([`pp::repository_uri`]); the identity a
    /// package without a pinned one is held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

impl Package {
    /// `NAME@VERSION` (npm) or `NAME==VERSION` (PyPI).
    pub fn spec(&self) -> String {
        match self.ecosystem {
            Ecosystem::Npm => format!("{}@{}", self.name, self.version),
            Ecosystem::Pypi => format!("{}=={}", self.name, self.version),
        }
    }

    fn key(&self) -> String {
        let text = format!(
            "{}\0{}\0{}\0{}",
            self.ecosystem, self.name, self.version, self.integrity
        );
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }
}

/// The indexes asked for attestations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexes {
    /// The npm registry base URL.
    pub npm_registry: String,
    /// The PyPI simple index URL (`…/simple`); the integrity API is at its host (the `/simple` suffix removed).
    pub pypi_index: String,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes {
            npm_registry: NPM_REGISTRY.into(),
            pypi_index: PYPI_INDEX.into(),
        }
    }
}

impl Indexes {
    /// The npm attestations API URL for `name@version` (a scope's `/` escaped, as the npm client does).
    pub fn npm_attestations_url(&self, name: &str, version: &str) -> String {
        format!(
            "{}/-/npm/v1/attestations/{}@{}",
            self.npm_registry.trim_end_matches('/'),
            name.replace('/', "%2f"),
            version
        )
    }

    /// The PEP 691 project page.
    pub fn pypi_project_url(&self, project: &str) -> String {
        format!(
            "{}/{}/",
            self.pypi_index.trim_end_matches('/'),
            normalize_project(project)
        )
    }

    /// The integrity API URL of one file's provenance.
    pub fn pypi_integrity_url(&self, project: &str, version: &str, filename: &str) -> String {
        let base = self.pypi_index.trim_end_matches('/');
        let root = base.strip_suffix("/simple").unwrap_or(base);
        format!(
            "{root}/integrity/{}/{version}/{filename}/provenance",
            normalize_project(project)
        )
    }
}

/// PEP 503 normalization.
pub fn normalize_project(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// Attestations as the index served them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The URL they came from.
    pub source: String,
    /// The document: npm's attestations answer, or a PEP 740 provenance object.
    pub text: String,
}

/// What was decided about one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Its provenance verified against the identity it is held to.
    Verified,
    /// The index serves no provenance for it.
    NoProvenance,
    /// Not verified, installed anyway (`warn`).
    Unverified,
    /// Refused (`enabled`): nothing is installed.
    Refused,
    /// `disabled`.
    Skipped,
}

/// The verdict on one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The package.
    pub package: Package,
    /// What was decided.
    pub status: Status,
    /// Why, when not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The record, when verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Box<Record>>,
    /// Whether the record is an earlier one.
    #[serde(default)]
    pub reused: bool,
}

/// A positive verdict, kept under `<cache>/verification/packages/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Which index.
    pub ecosystem: Ecosystem,
    /// The package name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The file's digest that the attested subject names.
    pub integrity: Integrity,
    /// Where the attestation came from.
    pub evidence_source: String,
    /// When it was verified (seconds since the epoch).
    pub verified_at: u64,
    /// Whether the identity was pinned by the registry entry (else: declared by the index for the package).
    pub pinned: bool,
    /// The policy it satisfied, every field.
    pub policy: prov::Policy,
    /// npm's publish attestation, when the registry served one: what it names (not counted as verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_attestation: Option<String>,
    /// The verdict: signer, evidence, trust root.
    pub verified: prov::Verified,
}

impl Record {
    /// The workflow that signed: the build config (caller's workflow) if the certificate names one, else the SAN.
    pub fn workflow(&self) -> Option<&str> {
        self.verified
            .claims
            .build_config_uri
            .as_deref()
            .or(self.verified.claims.san.as_deref())
    }

    /// `REPOSITORY, WORKFLOW` as the stderr line and `inspect` show who built a verified package.
    pub fn built_by(&self) -> String {
        format!(
            "{}, {}",
            self.verified
                .claims
                .source_repository_uri
                .as_deref()
                .unwrap_or("?"),
            self.workflow().unwrap_or("?")
        )
    }
}

/// The verdicts on a resolved tree: data for the stderr line and for `inspect` / `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeReport {
    /// The mode in force for the package that was asked for.
    pub mode: Mode,
    /// The package that was asked for.
    pub package: Verdict,
    /// Every other package of the tree.
    pub dependencies: Vec<Verdict>,
}

impl TreeReport {
    /// Packages in the tree, the one asked for included.
    pub fn total(&self) -> usize {
        1 + self.dependencies.len()
    }

    /// Packages that carry provenance (verified or not).
    pub fn with_provenance(&self) -> usize {
        self.all()
            .filter(|v| !matches!(v.status, Status::NoProvenance | Status::Skipped))
            .count()
    }

    /// Packages whose provenance verified.
    pub fn verified(&self) -> usize {
        self.all().filter(|v| v.status == Status::Verified).count()
    }

    /// The first refusal, if any: the install must not go ahead.
    pub fn refusal(&self) -> Option<&Verdict> {
        self.all().find(|v| v.status == Status::Refused)
    }

    fn all(&self) -> impl Iterator<Item = &Verdict> {
        std::iter::once(&self.package).chain(self.dependencies.iter())
    }

    /// The one line said on stderr before the install.
    pub fn summary_line(&self) -> String {
        let p = &self.package;
        let head = match (&p.status, &p.record) {
            (Status::Verified, Some(r)) => format!(
                "provenance: {} verified ({})",
                p.package.spec(),
                r.built_by()
            ),
            (Status::Skipped, _) => {
                format!("provenance: {} not checked (disabled)", p.package.spec())
            }
            (status, _) => format!(
                "provenance: {} {}: {}",
                p.package.spec(),
                match status {
                    Status::Refused => "REFUSED",
                    Status::NoProvenance => "has no provenance",
                    _ => "UNVERIFIED",
                },
                p.reason.as_deref().unwrap_or("")
            ),
        };
        let failed = self
            .dependencies
            .iter()
            .filter(|v| matches!(v.status, Status::Unverified | Status::Refused))
            .count();
        let deps = self.dependencies.len();
        let with = self
            .dependencies
            .iter()
            .filter(|v| !matches!(v.status, Status::NoProvenance | Status::Skipped))
            .count();
        let ok = self
            .dependencies
            .iter()
            .filter(|v| v.status == Status::Verified)
            .count();
        let mut line =
            format!("{head}; {with} of {deps} dependencies carry provenance, {ok} verified");
        if failed > 0 {
            line.push_str(&format!(", {failed} did not verify"));
        }
        line
    }
}

/// The install was refused: nothing of the tree is installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{package} was refused by provenance verification: {reason}")]
pub struct Refused {
    /// `NAME@VERSION`.
    pub package: String,
    /// Why.
    pub reason: String,
    /// What to do.
    pub hint: String,
}

/// Fetching attestations failed (not a 404: that is "no provenance").
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(reqwest::Error),
    /// The request failed.
    #[error("{url}: {source}")]
    Request {
        /// The URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The index answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
}

/// The provenance gate for package installs.
#[derive(Debug)]
pub struct PackageGate {
    cfg: Verification,
    mode: Mode,
    verifier: prov::Verifier,
    dir: PathBuf,
    indexes: Indexes,
    client: reqwest::Client,
}

impl PackageGate {
    /// A gate for `cfg` (its `policy` is the registry entry's pinned provenance, if any), keeping records under
    /// `<cache_dir>/verification/packages`, asking `indexes` for attestations.
    pub fn new(
        cfg: &Verification,
        cache_dir: &Path,
        indexes: Indexes,
    ) -> Result<PackageGate, prov::Refusal> {
        if let Some(p) = &cfg.policy {
            p.validate()?;
        }
        let verifier = match &cfg.trust_root {
            Some(path) => prov::Verifier::with_trust_root(prov::TrustRoot::from_file(path)?),
            None => prov::Verifier::with_tuf(cfg.tuf.options(cache_dir)),
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("thv-sandbox/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| prov::Refusal::TrustRoot(format!("HTTP client: {e}")))?;
        Ok(PackageGate {
            mode: cfg.effective_mode(),
            cfg: cfg.clone(),
            verifier,
            dir: cache_dir.join("verification").join("packages"),
            indexes,
            client,
        })
    }

    /// A gate that verifies with `verifier` (tests: a trust root of their own).
    pub fn with_verifier(mut self, verifier: prov::Verifier) -> PackageGate {
        self.verifier = verifier;
        self
    }

    /// The mode in force for the package asked for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Asks the index for `pkg`'s attestations; `Ok(None)` when it has none (404, or a simple-index entry
    /// without a provenance link whose integrity API answers 404).
    pub async fn fetch(&self, pkg: &Package) -> Result<Option<Evidence>, FetchError> {
        match pkg.ecosystem {
            Ecosystem::Npm => {
                let url = pkg
                    .attestations_url
                    .clone()
                    .unwrap_or_else(|| self.indexes.npm_attestations_url(&pkg.name, &pkg.version));
                self.get(&url, "application/json").await
            }
            Ecosystem::Pypi => {
                let url = match &pkg.attestations_url {
                    Some(u) => Some(u.clone()),
                    None => self.pypi_provenance_link(pkg).await,
                };
                let url = url.unwrap_or_else(|| {
                    self.indexes
                        .pypi_integrity_url(&pkg.name, &pkg.version, &pkg.filename)
                });
                self.get(
                    &url,
                    "application/vnd.pypi.integrity.v1+json, application/json",
                )
                .await
            }
        }
    }

    /// Reads `NAME/VERSION`'s packument at the npm registry: the source repository it names and where its
    /// attestations are (`dist.attestations.url`). `Ok(None)`: it declares no attestations.
    pub async fn describe_npm(&self, pkg: &Package) -> Result<Option<Package>, FetchError> {
        let url = format!(
            "{}/{}/{}",
            self.indexes.npm_registry.trim_end_matches('/'),
            pkg.name.replace('/', "%2f"),
            pkg.version
        );
        let Some(doc) = self.get(&url, "application/json").await? else {
            return Ok(None);
        };
        let doc: serde_json::Value = serde_json::from_str(&doc.text).unwrap_or_default();
        let Some(att) = doc
            .pointer("/dist/attestations/url")
            .and_then(|u| u.as_str())
        else {
            return Ok(None);
        };
        let mut out = pkg.clone();
        out.attestations_url = Some(att.to_string());
        out.repository = doc.get("repository").and_then(pp::repository_uri);
        Ok(Some(out))
    }

    /// The PEP 740 `provenance` link of `pkg`'s file on the PEP 691 project page, when the index gives one.
    async fn pypi_provenance_link(&self, pkg: &Package) -> Option<String> {
        let url = self.indexes.pypi_project_url(&pkg.name);
        let page = self
            .get(&url, "application/vnd.pypi.simple.v1+json")
            .await
            .ok()??;
        let doc: serde_json::Value = serde_json::from_str(&page.text).ok()?;
        let file =
            doc.get("files")?.as_array()?.iter().find(|f| {
                f.get("filename").and_then(|n| n.as_str()) == Some(pkg.filename.as_str())
            })?;
        let link = file.get("provenance")?.as_str()?;
        // A relative link is relative to the project page.
        reqwest::Url::parse(&url)
            .ok()?
            .join(link)
            .ok()
            .map(|u| u.to_string())
    }

    async fn get(&self, url: &str, accept: &str) -> Result<Option<Evidence>, FetchError> {
        let resp = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|source| FetchError::Request {
                url: url.into(),
                source,
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.into(),
                status: status.as_u16(),
            });
        }
        let text = resp.text().await.map_err(|source| FetchError::Request {
            url: url.into(),
            source,
        })?;
        Ok(Some(Evidence {
            source: url.into(),
            text,
        }))
    }

    /// Decides a whole resolved tree before anything of it is installed: `top` is the package asked for (held
    /// to the pinned identity, if any), `deps` every other package of the lock. Asks the index only for packages
    /// without a reusable record. `Err` when the install must not go ahead.
    pub async fn check_tree(&self, top: &Package, deps: &[Package]) -> Result<TreeReport, Refused> {
        use futures_util::StreamExt as _;
        let package = self.check_one(top, true).await;
        // Dependencies eight at a time: a tree of a hundred packages is a hundred questions to the index.
        let dependencies: Vec<Verdict> = futures_util::stream::iter(deps)
            .map(|d| self.check_one(d, false))
            .buffered(8)
            .collect()
            .await;
        let report = TreeReport {
            mode: self.mode,
            package,
            dependencies,
        };
        if let Some(v) = report.refusal() {
            return Err(Refused {
                package: v.package.spec(),
                reason: v.reason.clone().unwrap_or_default(),
                hint: v.hint.clone().unwrap_or_default(),
            });
        }
        Ok(report)
    }

    async fn check_one(&self, pkg: &Package, top: bool) -> Verdict {
        if self.mode == Mode::Disabled {
            return self.decide(pkg, None, top);
        }
        if let Some(policy) = self.policy_for(pkg, None, top) {
            if let Some(record) = self.reusable_record(pkg, &policy) {
                return verified(pkg, record, true);
            }
        }
        if let Some(ev) = self.stored_evidence(pkg) {
            let v = self.decide(pkg, Some(&ev), top);
            if v.status == Status::Verified {
                return v;
            }
        }
        let described;
        let pkg = if pkg.ecosystem == Ecosystem::Npm
            && pkg.repository.is_none()
            && pkg.attestations_url.is_none()
        {
            match self.describe_npm(pkg).await {
                Ok(Some(p)) => {
                    described = p;
                    &described
                }
                // The version's packument declares no attestations (`dist.attestations`): npm's own client
                // takes that as "no provenance" and so does this, without asking the attestations API.
                Ok(None) => return self.decide(pkg, None, top),
                Err(e) => return self.fail(
                    pkg,
                    top,
                    format!("cannot read its package metadata: {e}"),
                    "check that the package index is reachable, or use --image-verification=warn"
                        .into(),
                    false,
                ),
            }
        } else {
            pkg
        };
        match self.fetch(pkg).await {
            Ok(ev) => self.decide(pkg, ev.as_ref(), top),
            Err(e) => self.fail(
                pkg,
                top,
                format!("cannot fetch its attestations: {e}"),
                "check that the package index is reachable, or use --image-verification=warn"
                    .into(),
                false,
            ),
        }
    }

    /// The verdict on one package from the attestations the index served (`None`: it served none). `top`: the
    /// package asked for (held to the pinned identity and the gate's mode); else a dependency.
    pub fn decide(&self, pkg: &Package, evidence: Option<&Evidence>, top: bool) -> Verdict {
        if self.mode == Mode::Disabled {
            return verdict(pkg, Status::Skipped, None, None);
        }
        if top && self.cfg.policy.is_none() && self.mode == Mode::Enabled {
            return verdict(
                pkg,
                Status::Refused,
                Some(
                    "its registry entry pins no provenance identity; --image-verification=enabled refuses a \
                     package held only to its own claims"
                        .into(),
                ),
                Some(
                    "give the registry entry a `provenance` (repository_uri, signer_identity), or use \
                     --image-verification=warn"
                        .into(),
                ),
            );
        }
        let Some(ev) = evidence else {
            let reason = format!(
                "the {} index serves no provenance attestation for it",
                pkg.ecosystem
            );
            return if top && self.cfg.policy.is_some() && self.mode == Mode::Enabled {
                verdict(
                    pkg,
                    Status::Refused,
                    Some(format!("{reason}, and its registry entry pins a signer")),
                    Some("use --image-verification=warn to install it unverified".into()),
                )
            } else {
                verdict(pkg, Status::NoProvenance, Some(reason), None)
            };
        };
        match self.verify(pkg, ev, top) {
            Ok(record) => {
                write_json(&self.evidence_path(pkg), ev);
                write_json(&self.record_path(pkg), &record);
                verified(pkg, record, false)
            }
            Err(VerifyError::NoProvenance(reason)) => {
                if top && self.cfg.policy.is_some() && self.mode == Mode::Enabled {
                    verdict(
                        pkg,
                        Status::Refused,
                        Some(format!("{reason}, and its registry entry pins a signer")),
                        Some("use --image-verification=warn to install it unverified".into()),
                    )
                } else {
                    verdict(pkg, Status::NoProvenance, Some(reason), None)
                }
            }
            Err(VerifyError::NoIdentity(reason)) => self.fail(
                pkg,
                top,
                reason,
                "pin the identity in the registry entry".into(),
                true,
            ),
            Err(VerifyError::Refusal(r)) => self.fail(
                pkg,
                top,
                format!("provenance verification failed: {r}"),
                r.hint(),
                false,
            ),
        }
    }

    /// Not verified: refused under `enabled`, warned about otherwise. `soft`: nothing is wrong with evidence,
    /// there is only nothing to hold it to (a dependency is then only warned about).
    fn fail(&self, pkg: &Package, top: bool, reason: String, hint: String, soft: bool) -> Verdict {
        let refuse = self.mode == Mode::Enabled && (top || !soft);
        if refuse {
            verdict(pkg, Status::Refused, Some(reason), Some(hint))
        } else {
            tracing::info!("{}: {hint}", pkg.spec());
            verdict(pkg, Status::Unverified, Some(reason), None)
        }
    }

    /// The identity `pkg` is held to: the pin for the package asked for, else what the index declares for it.
    fn policy_for(
        &self,
        pkg: &Package,
        publisher: Option<&pp::Publisher>,
        top: bool,
    ) -> Option<prov::Policy> {
        if top {
            if let Some(p) = &self.cfg.policy {
                return Some(p.clone());
            }
        }
        let declared = match pkg.ecosystem {
            Ecosystem::Npm => pkg.repository.as_ref().map(|r| prov::Provenance {
                repository_uri: Some(r.clone()),
                cert_issuer: Some(prov::GITHUB_ACTIONS_ISSUER.into()),
                ..prov::Provenance::default()
            }),
            Ecosystem::Pypi => publisher.and_then(pp::Publisher::policy),
        }?;
        Some(prov::Policy::Provenance(declared))
    }

    fn verify(&self, pkg: &Package, ev: &Evidence, top: bool) -> Result<Record, VerifyError> {
        match pkg.ecosystem {
            Ecosystem::Npm => self.verify_npm(pkg, ev, top),
            Ecosystem::Pypi => self.verify_pypi(pkg, ev, top),
        }
    }

    fn verify_npm(&self, pkg: &Package, ev: &Evidence, top: bool) -> Result<Record, VerifyError> {
        let atts = pp::npm_attestations(&ev.text).map_err(VerifyError::Refusal)?;
        let purl = pp::npm_purl(&pkg.name, &pkg.version);
        let (alg, hex) = pkg.integrity.parts();
        let publish = atts
            .iter()
            .find(|a| a.predicate_type == pp::NPM_PUBLISH_V01)
            .map(|a| describe_publish(&a.bundle, &purl, alg, hex));
        let bundles: Vec<prov::Bundle> = atts
            .into_iter()
            .filter(|a| a.is_provenance())
            .map(|a| a.bundle)
            .collect();
        if bundles.is_empty() {
            return Err(VerifyError::NoProvenance(
                "the npm registry serves no provenance (SLSA) attestation for it".into(),
            ));
        }
        let policy = self.policy_for(pkg, None, top).ok_or_else(|| {
            VerifyError::NoIdentity(
                "it carries provenance, but its package metadata names no source repository to hold it to"
                    .into(),
            )
        })?;
        check_subject_names(&bundles, &purl, alg, hex)?;
        let verified = self
            .verifier
            .verify(&bundles, pkg.integrity.subject(), &policy)
            .map_err(VerifyError::Refusal)?;
        Ok(self.record(pkg, ev, top, policy, publish, verified))
    }

    fn verify_pypi(&self, pkg: &Package, ev: &Evidence, top: bool) -> Result<Record, VerifyError> {
        let groups = pp::pypi_provenance(&ev.text).map_err(VerifyError::Refusal)?;
        let (alg, hex) = pkg.integrity.parts();
        let mut refusals = Vec::new();
        let mut any = false;
        for g in &groups {
            if g.attestations.is_empty() {
                continue;
            }
            any = true;
            let Some(policy) = self.policy_for(pkg, g.publisher.as_ref(), top) else {
                refusals.push(prov::Refusal::Malformed(format!(
                    "the attestations' Trusted Publisher ({}) is not a GitHub repository and workflow",
                    g.publisher.as_ref().map_or("none", |p| p.kind.as_str())
                )));
                continue;
            };
            if let Err(e) = check_subject_names(&g.attestations, &pkg.filename, alg, hex) {
                match e {
                    VerifyError::Refusal(r) => refusals.push(r),
                    other => return Err(other),
                }
                continue;
            }
            match self
                .verifier
                .verify(&g.attestations, pkg.integrity.subject(), &policy)
            {
                Ok(v) => return Ok(self.record(pkg, ev, top, policy, None, v)),
                Err(r) => refusals.push(r),
            }
        }
        if !any {
            return Err(VerifyError::NoProvenance(
                "its PEP 740 provenance holds no attestation".into(),
            ));
        }
        Err(VerifyError::Refusal(match refusals.len() {
            1 => refusals.remove(0),
            _ => prov::Refusal::AllRefused(refusals),
        }))
    }

    fn record(
        &self,
        pkg: &Package,
        ev: &Evidence,
        top: bool,
        policy: prov::Policy,
        publish: Option<String>,
        verified: prov::Verified,
    ) -> Record {
        Record {
            ecosystem: pkg.ecosystem,
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            integrity: pkg.integrity.clone(),
            evidence_source: ev.source.clone(),
            verified_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            pinned: top && self.cfg.policy.is_some(),
            policy,
            publish_attestation: publish,
            verified,
        }
    }

    /// A stored record for `pkg` under `policy` and the current trust-root material.
    fn reusable_record(&self, pkg: &Package, policy: &prov::Policy) -> Option<Record> {
        let text = std::fs::read_to_string(self.record_path(pkg)).ok()?;
        let record: Record = serde_json::from_str(&text).ok()?;
        let root = self.verifier.trust_root(policy.instance().ok()?).ok()?;
        let same = record.ecosystem == pkg.ecosystem
            && record.name == pkg.name
            && record.version == pkg.version
            && record.integrity == pkg.integrity
            && &record.policy == policy
            && record.verified.policy == policy.fingerprint()
            && record.verified.trust_root.same_material(root.id());
        same.then_some(record)
    }

    fn stored_evidence(&self, pkg: &Package) -> Option<Evidence> {
        let text = std::fs::read_to_string(self.evidence_path(pkg)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn record_path(&self, pkg: &Package) -> PathBuf {
        self.dir.join(format!("{}.record.json", pkg.key()))
    }

    fn evidence_path(&self, pkg: &Package) -> PathBuf {
        self.dir.join(format!("{}.evidence.json", pkg.key()))
    }
}

/// What the install flow needs to check a resolved tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    /// Mode, pinned identity (the registry entry's package provenance), trust root, TUF settings.
    pub verification: Verification,
    /// The cache directory (records under `verification/packages`, TUF state under `trust`).
    pub cache_dir: PathBuf,
    /// The index URL the install uses (npm registry, or pip's index URL).
    pub index_url: String,
}

/// The package a lock entry pins.
pub fn package_of(spec: &PackageSpec, entry: &LockEntry) -> Result<Package, String> {
    let ecosystem = match spec.ecosystem {
        crate::packages::Ecosystem::Npm => Ecosystem::Npm,
        crate::packages::Ecosystem::Pypi => Ecosystem::Pypi,
    };
    let integrity = match entry.algorithm.as_str() {
        "sha512" => Integrity::from_sri(&format!("sha512-{}", entry.digest))?,
        "sha256" => Integrity::try_from(format!("sha256:{}", entry.digest.to_ascii_lowercase()))?,
        other => {
            return Err(format!(
                "{}: no sha512/sha256 in the lock ({other})",
                entry.name
            ))
        }
    };
    let filename = entry
        .url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    Ok(Package {
        ecosystem,
        name: entry.name.clone(),
        version: entry.version.clone(),
        filename,
        integrity,
        attestations_url: None,
        repository: None,
    })
}

/// Why a tree was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Provenance refused a package.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The check could not be set up (trust root file, policy, a lock entry without a usable digest).
    #[error("package provenance: {0}")]
    Setup(String),
}

/// The install flow's check (synchronous: it runs on a thread of its own with its own runtime, whatever the
/// caller's context): `entries` is the whole resolved tree, `top` the package asked for.
pub fn check_lock(
    top: &PackageSpec,
    entries: &[LockEntry],
    checks: &Checks,
) -> Result<TreeReport, CheckError> {
    let top_name = match top.ecosystem {
        crate::packages::Ecosystem::Npm => top.name.clone(),
        crate::packages::Ecosystem::Pypi => normalize_project(&top.name),
    };
    let mut head = None;
    let mut deps = Vec::new();
    for e in entries {
        let p = package_of(top, e).map_err(CheckError::Setup)?;
        let is_top = match p.ecosystem {
            Ecosystem::Npm => p.name == top_name,
            Ecosystem::Pypi => normalize_project(&p.name) == top_name,
        };
        if is_top && head.is_none() {
            head = Some(p);
        } else {
            deps.push(p);
        }
    }
    let head = head.ok_or_else(|| {
        CheckError::Setup(format!("{} is not in what the resolver chose", top.name))
    })?;
    let indexes = match top.ecosystem {
        crate::packages::Ecosystem::Npm => Indexes {
            npm_registry: checks.index_url.clone(),
            ..Indexes::default()
        },
        crate::packages::Ecosystem::Pypi => Indexes {
            pypi_index: checks.index_url.clone(),
            ..Indexes::default()
        },
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let gate = PackageGate::new(&checks.verification, &checks.cache_dir, indexes)
                .map_err(|e| CheckError::Setup(e.to_string()))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CheckError::Setup(format!("runtime: {e}")))?;
            rt.block_on(gate.check_tree(&head, &deps))
                .map_err(CheckError::Refused)
        })
        .join()
        .unwrap_or_else(|_| Err(CheckError::Setup("the check panicked".into())))
    })
}

enum VerifyError {
    /// The index's document holds no provenance attestation.
    NoProvenance(String),
    /// Provenance is there, but there is no identity to hold it to.
    NoIdentity(String),
    /// Verification refused it.
    Refusal(prov::Refusal),
}

/// Every statement must name the package (npm: its purl; PyPI: the file name); one naming it with another digest
/// is a digest mismatch. (The verifier binds the digest; this binds the name.)
fn check_subject_names(
    bundles: &[prov::Bundle],
    name: &str,
    alg: &str,
    hex: &str,
) -> Result<(), VerifyError> {
    for b in bundles {
        let subjects = pp::statement_subjects(b);
        let Some(s) = subjects.iter().find(|s| s.name.eq_ignore_ascii_case(name)) else {
            let names: Vec<&str> = subjects.iter().map(|s| s.name.as_str()).collect();
            return Err(VerifyError::Refusal(prov::Refusal::DigestMismatch(
                format!("the attestation is about {names:?}, not {name}"),
            )));
        };
        if let Some((_, h)) = s.digests.iter().find(|(a, _)| a == alg) {
            if h != hex {
                return Err(VerifyError::Refusal(prov::Refusal::DigestMismatch(
                    format!(
                    "the attestation names {name} with {alg}:{}…, the file installed is {alg}:{}…",
                    &h[..h.len().min(16)],
                    &hex[..hex.len().min(16)]
                ),
                )));
            }
        }
    }
    Ok(())
}

fn describe_publish(bundle: &prov::Bundle, purl: &str, alg: &str, hex: &str) -> String {
    let subjects = pp::statement_subjects(bundle);
    let matches = subjects
        .iter()
        .any(|s| s.name == purl && s.digests.iter().any(|(a, h)| a == alg && h == hex));
    if matches {
        format!("names {purl} with this {alg} (signed by npm's registry key; that signature is not checked)")
    } else {
        format!("does NOT name {purl} with this {alg} (signed by npm's registry key; not checked)")
    }
}

fn verdict(pkg: &Package, status: Status, reason: Option<String>, hint: Option<String>) -> Verdict {
    Verdict {
        package: pkg.clone(),
        status,
        reason,
        hint,
        record: None,
        reused: false,
    }
}

fn verified(pkg: &Package, record: Record, reused: bool) -> Verdict {
    Verdict {
        package: pkg.clone(),
        status: Status::Verified,
        reason: None,
        hint: None,
        record: Some(Box::new(record)),
        reused,
    }
}

fn write_json(path: &Path, value: &impl Serialize) {
    let write = || -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::dirs::private_dir(dir).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, value)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!("cannot store {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "https://github.com/sigstore/sigstore-js";

    /// `../shared/fixtures/sigstore` next to the repository (or `$THV_SANDBOX_FIXTURES/sigstore`); missing fixtures
    /// fail under `CI=true` and skip elsewhere.
    fn fixtures() -> Option<PathBuf> {
        let base = std::env::var_os("THV_SANDBOX_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
        let dir = base.join("sigstore");
        if dir.join("cases.json").is_file() {
            return Some(dir);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prerequisite missing under CI: Sigstore fixtures at {}",
            dir.display()
        );
        eprintln!(
            "SKIP: prerequisite missing: Sigstore fixtures at {}",
            dir.display()
        );
        None
    }

    struct Fx {
        dir: PathBuf,
        tgz: Vec<u8>,
        cache: tempfile::TempDir,
    }

    fn fx() -> Option<Fx> {
        let dir = fixtures()?;
        let tgz =
            std::fs::read(dir.join("gh-attestations/public-good/sigstore-js-2.1.0.tgz")).unwrap();
        Some(Fx {
            dir,
            tgz,
            cache: tempfile::tempdir().unwrap(),
        })
    }

    impl Fx {
        /// The npm attestations API's answer holding the fixture bundle of `version` (`v0.1`, `v0.3`).
        fn evidence(&self, version: &str) -> Evidence {
            let path = format!("gh-attestations/public-good/sigstore-js-2.1.0.npm-provenance.{version}.sigstore.json");
            let bundle: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(self.dir.join(path)).unwrap())
                    .unwrap();
            Evidence {
                source: "fixture".into(),
                text: serde_json::json!({"attestations": [
                    {"predicateType": pp::SLSA_PROVENANCE_V1, "bundle": bundle}
                ]})
                .to_string(),
            }
        }

        fn gate(&self, mode: Option<Mode>, pin: Option<prov::Provenance>) -> PackageGate {
            let cfg = Verification {
                mode,
                policy: pin.map(prov::Policy::Provenance),
                trust_root: Some(self.dir.join("trusted_root/public-good.trusted_root.json")),
                ..Verification::default()
            };
            PackageGate::new(&cfg, self.cache.path(), Indexes::default()).unwrap()
        }

        fn package(&self) -> Package {
            Package {
                ecosystem: Ecosystem::Npm,
                name: "sigstore".into(),
                version: "2.1.0".into(),
                filename: "sigstore-2.1.0.tgz".into(),
                integrity: Integrity::of(Ecosystem::Npm, &self.tgz),
                attestations_url: None,
                repository: Some(REPO.into()),
            }
        }
    }

    fn pin(repo: &str, workflow: &str) -> prov::Provenance {
        prov::Provenance {
            repository_uri: Some(repo.into()),
            signer_identity: Some(workflow.into()),
            cert_issuer: Some(prov::GITHUB_ACTIONS_ISSUER.into()),
            ..prov::Provenance::default()
        }
    }

    #[test]
    fn real_npm_provenance_v01_and_v03_verify() {
        let Some(f) = fx() else { return };
        for version in ["v0.1", "v0.3"] {
            // Pinned: enabled by default.
            let gate = f.gate(None, Some(pin(REPO, "/.github/workflows/release.yml")));
            assert_eq!(gate.mode(), Mode::Enabled);
            let v = gate.decide(&f.package(), Some(&f.evidence(version)), true);
            assert_eq!(v.status, Status::Verified, "{version}: {v:?}");
            let r = v.record.unwrap();
            assert!(r.pinned);
            assert_eq!(
                r.verified.claims.source_repository_uri.as_deref(),
                Some(REPO)
            );
            assert_eq!(
                r.verified.claims.san.as_deref(),
                Some("https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main")
            );
            // Unpinned: held to the packument's repository, under warn.
            let gate = f.gate(None, None);
            assert_eq!(gate.mode(), Mode::Warn);
            let v = gate.decide(&f.package(), Some(&f.evidence(version)), true);
            assert_eq!(v.status, Status::Verified, "{version}: {v:?}");
            assert!(!v.record.unwrap().pinned);
        }
    }

    #[test]
    fn the_lock_digest_alone_is_enough_and_is_bound() {
        let Some(f) = fx() else { return };
        let mut pkg = f.package();
        pkg.integrity = Integrity::from_sri(&format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&f.tgz))
        ))
        .unwrap();
        assert_eq!(pkg.integrity, Integrity::of(Ecosystem::Npm, &f.tgz));
        let gate = f.gate(None, Some(pin(REPO, "/.github/workflows/release.yml")));
        assert_eq!(
            gate.decide(&pkg, Some(&f.evidence("v0.3")), true).status,
            Status::Verified
        );
    }

    #[test]
    fn wrong_repository_or_workflow_is_refused_when_pinned() {
        let Some(f) = fx() else { return };
        for (repo, wf, field) in [
            (
                "https://github.com/sigstore/sigstore-python",
                "/.github/workflows/release.yml",
                "repository_uri",
            ),
            (REPO, "/.github/workflows/publish.yml", "signer_identity"),
        ] {
            for version in ["v0.1", "v0.3"] {
                let gate = f.gate(None, Some(pin(repo, wf)));
                let v = gate.decide(&f.package(), Some(&f.evidence(version)), true);
                assert_eq!(v.status, Status::Refused, "{version} {field}: {v:?}");
                assert!(v.reason.as_deref().unwrap().contains(field), "{v:?}");
                // Under warn the same failure is a warning, and the package installs.
                let gate = f.gate(Some(Mode::Warn), Some(pin(repo, wf)));
                let v = gate.decide(&f.package(), Some(&f.evidence(version)), true);
                assert_eq!(v.status, Status::Unverified, "{v:?}");
            }
        }
        // Unpinned, the packument's repository is the identity: a package claiming another repository fails.
        let gate = f.gate(None, None);
        let mut pkg = f.package();
        pkg.repository = Some("https://github.com/evil/sigstore-js".into());
        let v = gate.decide(&pkg, Some(&f.evidence("v0.3")), true);
        assert_eq!(v.status, Status::Unverified, "{v:?}");
    }

    #[test]
    fn a_tarball_whose_digest_differs_from_the_attested_subject_is_refused() {
        let Some(f) = fx() else { return };
        let gate = f.gate(None, Some(pin(REPO, "/.github/workflows/release.yml")));
        let mut tampered = f.tgz.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut pkg = f.package();
        pkg.integrity = Integrity::of(Ecosystem::Npm, &tampered);
        for version in ["v0.1", "v0.3"] {
            let v = gate.decide(&pkg, Some(&f.evidence(version)), true);
            assert_eq!(v.status, Status::Refused, "{v:?}");
            assert!(
                v.reason.as_deref().unwrap().contains("digest mismatch"),
                "{v:?}"
            );
        }
        // The same bytes under another package name: the statement is about sigstore@2.1.0 only.
        let mut other = f.package();
        other.version = "2.1.1".into();
        let v = gate.decide(&other, Some(&f.evidence("v0.3")), true);
        assert_eq!(v.status, Status::Refused, "{v:?}");
        assert!(
            v.reason
                .as_deref()
                .unwrap()
                .contains("pkg:npm/sigstore@2.1.0"),
            "{v:?}"
        );
    }

    #[test]
    fn absent_provenance_refused_under_enabled_counted_otherwise() {
        let Some(f) = fx() else { return };
        let pinned = f.gate(None, Some(pin(REPO, "/.github/workflows/release.yml")));
        let v = pinned.decide(&f.package(), None, true);
        assert_eq!(v.status, Status::Refused, "{v:?}");
        // Only a publish attestation is no provenance either.
        let empty = Evidence {
            source: "x".into(),
            text: r#"{"attestations":[]}"#.into(),
        };
        assert_eq!(
            pinned.decide(&f.package(), Some(&empty), true).status,
            Status::Refused
        );
        // A dependency without provenance is counted, not refused.
        assert_eq!(
            pinned.decide(&f.package(), None, false).status,
            Status::NoProvenance
        );
        let unpinned = f.gate(None, None);
        assert_eq!(
            unpinned.decide(&f.package(), None, true).status,
            Status::NoProvenance
        );
        // `enabled` without a pin refuses even verifiable provenance: the package's own claim is not a pin.
        let strict = f.gate(Some(Mode::Enabled), None);
        let v = strict.decide(&f.package(), Some(&f.evidence("v0.3")), true);
        assert_eq!(v.status, Status::Refused, "{v:?}");
        let off = f.gate(Some(Mode::Disabled), None);
        assert_eq!(off.decide(&f.package(), None, true).status, Status::Skipped);
    }

    #[test]
    fn a_dependency_whose_provenance_fails_is_refused_under_enabled_only() {
        let Some(f) = fx() else { return };
        let mut dep = f.package();
        dep.integrity = Integrity::of(Ecosystem::Npm, b"another tarball");
        let enabled = f.gate(None, Some(pin(REPO, "/.github/workflows/release.yml")));
        assert_eq!(
            enabled
                .decide(&dep, Some(&f.evidence("v0.3")), false)
                .status,
            Status::Refused
        );
        let warn = f.gate(None, None);
        assert_eq!(
            warn.decide(&dep, Some(&f.evidence("v0.3")), false).status,
            Status::Unverified
        );
        // A dependency with provenance but no repository to hold it to: only a warning, even under enabled.
        let mut anon = f.package();
        anon.repository = None;
        let v = enabled.decide(&anon, Some(&f.evidence("v0.3")), false);
        assert_eq!(v.status, Status::Unverified, "{v:?}");
    }

    #[test]
    fn a_record_is_reused_only_under_the_same_policy() {
        let Some(f) = fx() else { return };
        let p = pin(REPO, "/.github/workflows/release.yml");
        let gate = f.gate(None, Some(p.clone()));
        let pkg = f.package();
        assert_eq!(
            gate.decide(&pkg, Some(&f.evidence("v0.3")), true).status,
            Status::Verified
        );
        let policy = prov::Policy::Provenance(p);
        assert!(gate.reusable_record(&pkg, &policy).is_some());
        let other = prov::Policy::Provenance(pin(REPO, "/.github/workflows/other.yml"));
        assert!(gate.reusable_record(&pkg, &other).is_none());
        let mut changed = pkg.clone();
        changed.integrity = Integrity::of(Ecosystem::Npm, b"x");
        assert!(gate.reusable_record(&changed, &policy).is_none());
        assert!(gate.stored_evidence(&pkg).is_some());
    }

    #[test]
    fn tree_report_counts_and_says_one_line() {
        let Some(f) = fx() else { return };
        let gate = f.gate(None, None);
        let top = gate.decide(&f.package(), Some(&f.evidence("v0.3")), true);
        let mut dep = f.package();
        dep.name = "left-pad".into();
        let none = gate.decide(&dep, None, false);
        let report = TreeReport {
            mode: gate.mode(),
            package: top,
            dependencies: vec![none.clone(), none],
        };
        assert_eq!(
            (report.total(), report.with_provenance(), report.verified()),
            (3, 1, 1)
        );
        let line = report.summary_line();
        assert!(
            line.contains("sigstore@2.1.0 verified (https://github.com/sigstore/sigstore-js"),
            "{line}"
        );
        assert!(
            line.contains("0 of 2 dependencies carry provenance"),
            "{line}"
        );
        assert!(report.refusal().is_none());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["package"]["status"], "verified");
        assert_eq!(json["dependencies"][0]["status"], "no-provenance");
    }

    #[test]
    fn integrity_forms() {
        let sri = "sha512-kPIj+Q==";
        assert!(Integrity::from_sri(sri)
            .unwrap_err()
            .contains("not a sha512"));
        assert!(Integrity::from_sri("md5-AAAA").is_err());
        let h = Integrity::of(Ecosystem::Pypi, b"abc");
        assert!(h.matches(b"abc") && !h.matches(b"abd"));
        let back: Integrity = serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert!(Integrity::try_from("sha256:XYZ".to_string()).is_err());
        assert_eq!(normalize_project("Mcp_Server.Time"), "mcp-server-time");
        let ix = Indexes::default();
        assert_eq!(
            ix.npm_attestations_url("@modelcontextprotocol/server-everything", "1.0.0"),
            "https://registry.npmjs.org/-/npm/v1/attestations/@modelcontextprotocol%2fserver-everything@1.0.0"
        );
        assert_eq!(
            ix.pypi_integrity_url("mcp_server_time", "1.0", "f.whl"),
            "https://pypi.org/integrity/mcp-server-time/1.0/f.whl/provenance"
        );
    }
}
