//! The lock: what the resolver chose, pinned exactly, with the integrity hash of every tarball or wheel.
//!
//! Read from npm's `package-lock.json` (lockfile v2/v3: `packages`, each with `version`, `resolved` and an SRI
//! `integrity`) or from pip's installation report (`pip install --dry-run --report`: `install[]` with
//! `metadata.name`/`version` and `download_info.url`/`archive_info.hashes`). The installer then installs exactly
//! the lock (`npm ci`; `pip install --require-hashes --no-deps`), and the lock is committed inside the root
//! ([`LOCK_PATH`]), where the root's record covers it.

use serde::{Deserialize, Serialize};

use super::spec::{Ecosystem, PackageSpec};

/// Where the installed tree lives inside the root.
pub const PREFIX: &str = "/opt/thv-package";
/// Where the lock is committed inside the root.
pub const LOCK_PATH: &str = "/opt/thv-package/thv-sandbox-lock.json";
/// Where the install's provenance verdicts ([`super::verdict::Recorded`]) are committed inside the root, next to
/// the lock (covered by the root's record like it).
pub const PROVENANCE_PATH: &str = "/opt/thv-package/thv-sandbox-provenance.json";

/// One package of the resolved tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// Its name (npm as written, PyPI normalized).
    pub name: String,
    /// The exact version.
    pub version: String,
    /// The tarball (npm) or wheel/sdist (PyPI) URL.
    pub url: String,
    /// `sha512` (npm's SRI integrity) or `sha256` (PyPI).
    pub algorithm: String,
    /// The digest: base64 for npm's `sha512-…`, hex for PyPI.
    pub digest: String,
}

/// The lock committed in the root, and what to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Lock format version.
    pub version: u32,
    /// The package asked for.
    pub top: PackageSpec,
    /// The version the top package resolved to.
    pub top_version: String,
    /// Every package of the tree, sorted by name and version.
    pub entries: Vec<LockEntry>,
    /// The index it came from.
    pub index: String,
    /// The command that starts the server (inside the root).
    pub command: Vec<String>,
    /// Environment the server needs to find the tree (`PYTHONPATH`).
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// A lock or report that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the resolver's lock cannot be used: {0}")]
pub struct LockError(pub String);

/// The entries of an npm `package-lock.json` (v2 or v3). Every installed package must carry `version`,
/// `resolved` and a `sha512` integrity: a lock without them could not be checked.
pub fn from_npm_lock(json: &[u8]) -> Result<Vec<LockEntry>, LockError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| LockError(format!("package-lock.json: {e}")))?;
    let packages = v
        .get("packages")
        .and_then(|p| p.as_object())
        .ok_or_else(|| {
            LockError("package-lock.json has no `packages` (lockfile v2 or later)".into())
        })?;
    let mut out = Vec::new();
    for (path, p) in packages {
        let Some(tail) = path.rsplit_once("node_modules/").map(|(_, n)| n) else {
            continue; // the project itself ("")
        };
        if p.get("link").and_then(|l| l.as_bool()) == Some(true) {
            return Err(LockError(format!(
                "{path} is a link, not a package from the index"
            )));
        }
        let field = |k: &str| p.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let name = field("name").unwrap_or_else(|| tail.to_owned());
        let version =
            field("version").ok_or_else(|| LockError(format!("{path} has no version")))?;
        let url =
            field("resolved").ok_or_else(|| LockError(format!("{path} has no `resolved` URL")))?;
        let integrity =
            field("integrity").ok_or_else(|| LockError(format!("{path} has no integrity hash")))?;
        let digest = integrity
            .split_whitespace()
            .find_map(|i| i.strip_prefix("sha512-"))
            .ok_or_else(|| LockError(format!("{path}: integrity `{integrity}` has no sha512")))?;
        out.push(LockEntry {
            name,
            version,
            url,
            algorithm: "sha512".into(),
            digest: digest.to_owned(),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out.dedup();
    Ok(out)
}

/// The entries of a pip installation report (`pip install --dry-run --report FILE`, format version 1).
pub fn from_pip_report(json: &[u8]) -> Result<Vec<LockEntry>, LockError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| LockError(format!("pip report: {e}")))?;
    let install = v
        .get("install")
        .and_then(|i| i.as_array())
        .ok_or_else(|| LockError("pip's report has no `install` list".into()))?;
    let mut out = Vec::new();
    for item in install {
        let meta = item.get("metadata");
        let s = |x: Option<&serde_json::Value>, k: &str| {
            x.and_then(|m| m.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let name = s(meta, "name").ok_or_else(|| LockError("an entry has no name".into()))?;
        let version =
            s(meta, "version").ok_or_else(|| LockError(format!("{name} has no version")))?;
        let info = item.get("download_info");
        let url = s(info, "url").ok_or_else(|| LockError(format!("{name} has no download URL")))?;
        let archive = info.and_then(|i| i.get("archive_info"));
        let sha256 = archive
            .and_then(|a| a.get("hashes"))
            .and_then(|h| h.get("sha256"))
            .and_then(|h| h.as_str())
            .map(str::to_owned)
            .or_else(|| {
                s(archive, "hash").and_then(|h| h.strip_prefix("sha256=").map(str::to_owned))
            })
            .ok_or_else(|| {
                LockError(format!(
                    "{name} {version} ({url}) has no sha256: not from an index"
                ))
            })?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LockError(format!("{name}: `{sha256}` is not a sha256")));
        }
        out.push(LockEntry {
            name: super::spec::normalize_pypi(&name),
            version,
            url,
            algorithm: "sha256".into(),
            digest: sha256.to_ascii_lowercase(),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(out)
}

/// pip's requirements for exactly these entries: `name==version --hash=sha256:…`, one a line (installed with
/// `--require-hashes --no-deps`: a file whose hash differs is refused by pip).
pub fn pip_requirements(entries: &[LockEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}=={} --hash=sha256:{}\n", e.name, e.version, e.digest))
        .collect()
}

/// The version `top` resolved to among `entries`.
pub fn top_version(top: &PackageSpec, entries: &[LockEntry]) -> Option<String> {
    let name = match top.ecosystem {
        Ecosystem::Npm => top.name.clone(),
        Ecosystem::Pypi => super::spec::normalize_pypi(&top.name),
    };
    entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.version.clone())
}

/// The npm package's command: its `bin` (a string, or the entry named like the package without its scope, or
/// the only one), as `node PATH`.
pub fn npm_command(name: &str, package_json: &[u8]) -> Result<Vec<String>, LockError> {
    let v: serde_json::Value = serde_json::from_slice(package_json)
        .map_err(|e| LockError(format!("{name}/package.json: {e}")))?;
    let short = name.rsplit('/').next().unwrap_or(name);
    let bin = match v.get("bin") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(m)) => m
            .get(short)
            .or_else(|| (m.len() == 1).then(|| m.values().next()).flatten())
            .and_then(|b| b.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                LockError(format!(
                    "{name} has several commands ({}) and none is named `{short}`",
                    m.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?,
        _ => {
            return Err(LockError(format!(
                "{name} has no command (`bin` in its package.json)"
            )))
        }
    };
    let rel = bin.trim_start_matches("./");
    if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(LockError(format!(
            "{name}: its `bin` {bin} leaves the package"
        )));
    }
    Ok(vec![
        "node".into(),
        format!("{PREFIX}/node_modules/{name}/{rel}"),
    ])
}

/// The Python package's command from its `entry_points.txt`: the console script named like the package, else
/// the only one; run as `python3 -c` importing it (no launcher script, whose `#!` would name an interpreter).
pub fn pip_command(name: &str, entry_points: &str) -> Result<Vec<String>, LockError> {
    let mut in_scripts = false;
    let mut scripts = Vec::new();
    for line in entry_points.lines().map(str::trim) {
        if line.starts_with('[') {
            in_scripts = line == "[console_scripts]";
            continue;
        }
        if in_scripts {
            if let Some((k, v)) = line.split_once('=') {
                scripts.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    let norm = super::spec::normalize_pypi(name);
    let chosen = scripts
        .iter()
        .find(|(k, _)| super::spec::normalize_pypi(k) == norm)
        .or_else(|| (scripts.len() == 1).then(|| &scripts[0]))
        .ok_or_else(|| LockError(format!("{name} has no console script named `{name}`")))?;
    let (module, attr) = chosen.1.split_once(':').ok_or_else(|| {
        LockError(format!(
            "{name}: entry point `{}` names no function",
            chosen.1
        ))
    })?;
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    let attr = attr.split_whitespace().next().unwrap_or_default();
    if !ident(module) || !ident(attr) {
        return Err(LockError(format!(
            "{name}: entry point `{}` is not module:function",
            chosen.1
        )));
    }
    let (first, rest) = attr.split_once('.').unwrap_or((attr, ""));
    let call = match rest.is_empty() {
        true => format!("{first}()"),
        false => format!("{first}.{rest}()"),
    };
    Ok(vec![
        "python3".into(),
        "-c".into(),
        format!(
            "import sys; sys.argv[0] = {name:?}; from {module} import {first}; sys.exit({call})"
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_lock_entries() {
        let lock = br#"{"lockfileVersion":3,"packages":{
          "":{"dependencies":{"a":"1"}},
          "node_modules/a":{"version":"1.0.0","resolved":"https://r/a/-/a-1.0.0.tgz","integrity":"sha512-AAA="},
          "node_modules/a/node_modules/@s/b":{"version":"2.0.0","resolved":"https://r/@s/b/-/b-2.0.0.tgz","integrity":"sha1-x sha512-BBB="}
        }}"#;
        let e = from_npm_lock(lock).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "@s/b");
        assert_eq!(e[0].digest, "BBB=");
        assert_eq!(e[1].url, "https://r/a/-/a-1.0.0.tgz");
        let no_integrity =
            br#"{"packages":{"node_modules/a":{"version":"1","resolved":"https://r/a.tgz"}}}"#;
        assert!(from_npm_lock(no_integrity)
            .unwrap_err()
            .0
            .contains("integrity"));
        let sha1_only = br#"{"packages":{"node_modules/a":{"version":"1","resolved":"u","integrity":"sha1-x"}}}"#;
        assert!(from_npm_lock(sha1_only).is_err());
        let link = br#"{"packages":{"node_modules/a":{"link":true,"resolved":"../a"}}}"#;
        assert!(from_npm_lock(link).is_err());
    }

    #[test]
    fn pip_report_entries() {
        let h = "a".repeat(64);
        let report = format!(
            r#"{{"version":"1","install":[
              {{"metadata":{{"name":"MCP_Server_Time","version":"1.0"}},"download_info":{{"url":"https://f/x.whl","archive_info":{{"hashes":{{"sha256":"{h}"}}}}}}}},
              {{"metadata":{{"name":"tzdata","version":"2"}},"download_info":{{"url":"https://f/t.whl","archive_info":{{"hash":"sha256={h}"}}}}}}
            ]}}"#
        );
        let e = from_pip_report(report.as_bytes()).unwrap();
        assert_eq!(e[0].name, "mcp-server-time");
        assert_eq!(e[1].digest, h);
        assert_eq!(
            pip_requirements(&e[..1]),
            format!("mcp-server-time==1.0 --hash=sha256:{h}\n")
        );
        let local = r#"{"install":[{"metadata":{"name":"x","version":"1"},"download_info":{"url":"file:///x","dir_info":{}}}]}"#;
        assert!(from_pip_report(local.as_bytes())
            .unwrap_err()
            .0
            .contains("sha256"));
    }

    #[test]
    fn commands() {
        let c = npm_command(
            "@m/server-everything",
            br#"{"bin":{"mcp-server-everything":"dist/index.js"}}"#,
        )
        .unwrap();
        assert_eq!(
            c[1],
            "/opt/thv-package/node_modules/@m/server-everything/dist/index.js"
        );
        assert!(npm_command("x", br#"{"bin":"../../etc/passwd"}"#).is_err());
        assert!(npm_command("x", br#"{"bin":{"a":"a.js","b":"b.js"}}"#).is_err());
        assert!(npm_command("x", br#"{}"#).is_err());
        let c = pip_command(
            "mcp-server-time",
            "[console_scripts]\nmcp-server-time = mcp_server_time:main\n",
        )
        .unwrap();
        assert!(
            c[2].contains("from mcp_server_time import main; sys.exit(main())"),
            "{c:?}"
        );
        assert!(pip_command("x", "[console_scripts]\nx = os; import evil:main\n").is_err());
        assert!(pip_command("x", "[gui_scripts]\nx = a:b\n").is_err());
    }
}
