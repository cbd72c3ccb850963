//! `npx://PACKAGE[@VERSION]`, `uvx://PACKAGE[@VERSION]` and `uvx://PACKAGE[EXTRAS]==VERSION`, parsed and checked.
//! Names and versions are passed to the installer as single arguments (never through a shell), and checked
//! here against what the indexes accept, so that a typo is an error before anything runs.

use std::fmt;

/// Which index and installer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// npm (`npx://`): installed by npm.
    Npm,
    /// PyPI (`uvx://`): installed by pip.
    Pypi,
}

impl Ecosystem {
    /// The scheme as written: `npx` or `uvx`.
    pub fn scheme(self) -> &'static str {
        match self {
            Ecosystem::Npm => "npx",
            Ecosystem::Pypi => "uvx",
        }
    }
}

/// A package to install and run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageSpec {
    /// npm or PyPI.
    pub ecosystem: Ecosystem,
    /// The name: npm's as written (`@scope/name`), PyPI's normalized (PEP 503: lower case, runs of `-_.` as `-`).
    pub name: String,
    /// The version or range asked for (`None`: the latest).
    pub version: Option<String>,
    /// PyPI extras (`pkg[a,b]`), sorted.
    pub extras: Vec<String>,
}

/// A package reference that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a package reference: {why}")]
pub struct SpecError {
    /// As written.
    pub given: String,
    /// What is wrong.
    pub why: String,
}

impl SpecError {
    /// What to write instead.
    pub fn hint(&self) -> String {
        "write `npx://NAME[@VERSION]` (`npx://@modelcontextprotocol/server-everything@2026.8.31`) or \
         `uvx://NAME[@VERSION]` / `uvx://NAME[EXTRAS]==VERSION` (`uvx://mcp-server-time==2026.10.19`)"
            .into()
    }
}

/// Whether `s` names a package (`npx://` or `uvx://`), whatever follows.
pub fn is_package_ref(s: &str) -> bool {
    s.starts_with("npx://") || s.starts_with("uvx://")
}

/// Parses `s`; `Ok(None)` when it is not a package reference at all (an image, a server's name).
pub fn parse(s: &str) -> Result<Option<PackageSpec>, SpecError> {
    let err = |why: &str| SpecError {
        given: s.to_owned(),
        why: why.to_owned(),
    };
    if let Some(rest) = s.strip_prefix("npx://") {
        return parse_npm(rest).map(Some).map_err(|w| err(&w));
    }
    if let Some(rest) = s.strip_prefix("uvx://") {
        return parse_pypi(rest).map(Some).map_err(|w| err(&w));
    }
    Ok(None)
}

/// Characters of a version or range: npm's semver ranges and tags, PEP 440 versions (no spaces, no shell
/// metacharacters: it is one argument).
fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-_~^<>=*!".contains(c))
        && !v.starts_with('-')
}

fn parse_npm(rest: &str) -> Result<PackageSpec, String> {
    // `@scope/name@version`: the version follows the last `@` that is not the first character.
    let (name, version) = match rest.rfind('@') {
        Some(i) if i > 0 => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '_'])
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~".contains(c))
    };
    let ok = match name.strip_prefix('@') {
        Some(scoped) => matches!(scoped.split_once('/'), Some((s, n)) if part_ok(s) && part_ok(n)),
        None => part_ok(name),
    };
    if !ok || name.len() > 214 {
        return Err("an npm package name is `name` or `@scope/name`, in lower case".into());
    }
    if let Some(v) = version {
        if !version_ok(v) {
            return Err(format!(
                "`{v}` is not a version, range or tag npm understands"
            ));
        }
    }
    Ok(PackageSpec {
        ecosystem: Ecosystem::Npm,
        name: name.to_owned(),
        version: version.map(str::to_owned),
        extras: Vec::new(),
    })
}

/// PEP 503 normalization.
pub fn normalize_pypi(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if "-_.".contains(c) {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn parse_pypi(rest: &str) -> Result<PackageSpec, String> {
    let (head, version) = if let Some((h, v)) = rest.split_once("==") {
        (h, Some(v))
    } else if let Some((h, v)) = rest.rsplit_once('@') {
        (h, Some(v))
    } else {
        (rest, None)
    };
    let (name, extras) = match head.split_once('[') {
        Some((n, e)) => {
            let e = e
                .strip_suffix(']')
                .ok_or("extras are written `name[extra1,extra2]`")?;
            let mut extras: Vec<String> = e.split(',').map(|x| normalize_pypi(x.trim())).collect();
            if extras.iter().any(|x| x.is_empty()) {
                return Err("an extra is empty".into());
            }
            extras.sort();
            extras.dedup();
            (n, extras)
        }
        None => (head, Vec::new()),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err("a PyPI project name is letters, digits, `-`, `_` and `.`".into());
    }
    if let Some(v) = version {
        if !version_ok(v) || v.contains(['<', '>', '=', '!', '*', '^', '~']) {
            return Err(format!(
                "`{v}` is not an exact version (write `NAME==VERSION` or `NAME@VERSION`)"
            ));
        }
    }
    Ok(PackageSpec {
        ecosystem: Ecosystem::Pypi,
        name: normalize_pypi(name),
        version: version.map(str::to_owned),
        extras,
    })
}

impl PackageSpec {
    /// What the installer is asked for: `name@version` (npm), `name[extras]==version` (pip).
    pub fn requirement(&self) -> String {
        match self.ecosystem {
            Ecosystem::Npm => match &self.version {
                Some(v) => format!("{}@{v}", self.name),
                None => self.name.clone(),
            },
            Ecosystem::Pypi => {
                let extras = match self.extras.is_empty() {
                    true => String::new(),
                    false => format!("[{}]", self.extras.join(",")),
                };
                match &self.version {
                    Some(v) => format!("{}{extras}=={v}", self.name),
                    None => format!("{}{extras}", self.name),
                }
            }
        }
    }
}

impl fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.ecosystem.scheme(), self.requirement())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> PackageSpec {
        parse(s).unwrap().unwrap()
    }

    #[test]
    fn npm_names_and_versions() {
        let p = ok("npx://@modelcontextprotocol/server-everything@2026.8.31");
        assert_eq!(p.ecosystem, Ecosystem::Npm);
        assert_eq!(p.name, "@modelcontextprotocol/server-everything");
        assert_eq!(p.version.as_deref(), Some("2026.8.31"));
        let p = ok("npx://@modelcontextprotocol/server-everything");
        assert_eq!(p.version, None);
        assert_eq!(
            p.to_string(),
            "npx://@modelcontextprotocol/server-everything"
        );
        assert_eq!(ok("npx://left-pad@^1.3").version.as_deref(), Some("^1.3"));
        assert_eq!(ok("npx://left-pad@latest").requirement(), "left-pad@latest");
        for bad in [
            "npx://",
            "npx://Left-Pad",
            "npx://@scope",
            "npx://@/x",
            "npx://a b",
            "npx://x@",
            "npx://x@1;rm -rf",
            "npx://x@--registry=evil",
            "npx://.hidden",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.hint().contains("npx://"), "{bad}");
        }
    }

    #[test]
    fn pypi_forms() {
        let p = ok("uvx://mcp-server-time==2026.10.19");
        assert_eq!(p.ecosystem, Ecosystem::Pypi);
        assert_eq!(
            (p.name.as_str(), p.version.as_deref()),
            ("mcp-server-time", Some("2026.10.19"))
        );
        assert_eq!(ok("uvx://mcp-server-time@2026.10.19"), p);
        let p = ok("uvx://MCP_Server.Fetch[Socks, http2]==1.0");
        assert_eq!(p.name, "mcp-server-fetch");
        assert_eq!(p.extras, vec!["http2", "socks"]);
        assert_eq!(p.requirement(), "mcp-server-fetch[http2,socks]==1.0");
        assert_eq!(ok("uvx://mcp-server-time").version, None);
        for bad in [
            "uvx://",
            "uvx://x>=1",
            "uvx://x==",
            "uvx://x[a",
            "uvx://x[]",
            "uvx://-x",
            "uvx://x y",
            "uvx://x==1 ;",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn others_are_not_packages() {
        assert_eq!(parse("ghcr.io/a/b:1").unwrap(), None);
        assert_eq!(parse("oci:/x:y").unwrap(), None);
        assert_eq!(parse("time").unwrap(), None);
        assert!(!is_package_ref("go://x"));
    }

    #[test]
    fn pep503() {
        assert_eq!(normalize_pypi("Foo__Bar.baz"), "foo-bar-baz");
    }
}
