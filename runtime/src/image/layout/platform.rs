//! Platforms (`os/architecture[/variant]`, GOOS/GOARCH spelling) and how an index entry is
//! matched against the one wanted.

use std::fmt;
use std::str::FromStr;

use super::LayoutError;

/// An image platform in the spelling image indexes use (Go's GOOS / GOARCH).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `riscv64`, `ppc64le`, `s390x`, …
    pub architecture: String,
    /// `v8` for arm64, `v6`/`v7` for arm, absent for most others.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary was built for: always `linux`, with the Go name of the
    /// architecture. arm64 reports variant `v8`; 32-bit arm reports `v7` (the variant is not
    /// detected at run time).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            "mips" if cfg!(target_endian = "little") => ("mipsle", None),
            // riscv64, s390x, mips, mips64 are spelled the same in Rust and Go.
            other => (other, None),
        };
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Convert the platform of an index entry (or of an image config).
    pub(crate) fn from_parts(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// Spellings other tools use for the same thing, mapped to the Go ones; arm64 without a
    /// variant means v8 (as containerd does), so "arm64" and "arm64/v8" are the same platform.
    fn normalized(&self) -> (String, String, Option<String>) {
        let os = self.os.to_ascii_lowercase();
        let (architecture, default_variant) = match self.architecture.as_str() {
            "x86_64" | "x86-64" => ("amd64", None),
            "aarch64" | "arm64" => ("arm64", Some("v8")),
            "armhf" => ("arm", Some("v7")),
            "armel" => ("arm", Some("v6")),
            "i386" | "i686" => ("386", None),
            other => (other, None),
        };
        let variant = self
            .variant
            .clone()
            .or_else(|| default_variant.map(str::to_owned));
        (os, architecture.to_owned(), variant)
    }

    /// How well an image built for `candidate` fits `self` (the platform wanted): `None` when it
    /// cannot run, higher is better.
    ///
    /// - os and architecture must be equal (after normalizing spellings);
    /// - same variant: 2 (the best);
    /// - amd64 ignores variants (v2/v3 microarchitecture levels): a different one scores 1;
    /// - a candidate without variant when we have one (arm64 v8 vs. plain arm64): 1;
    /// - any other variant difference: no match.
    pub(crate) fn match_rank(&self, candidate: &Platform) -> Option<u8> {
        let (os, arch, variant) = self.normalized();
        let (c_os, c_arch, c_variant) = candidate.normalized();
        if os != c_os || arch != c_arch {
            return None;
        }
        if variant == c_variant {
            return Some(2);
        }
        if arch == "amd64" || (variant.is_some() && c_variant.is_none()) {
            return Some(1);
        }
        None
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = LayoutError;

    /// `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
    fn from_str(s: &str) -> Result<Platform, LayoutError> {
        let invalid = || LayoutError::InvalidPlatform {
            input: s.chars().take(100).collect(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform::from_parts(os, arch, None)),
            [os, arch, variant] => Ok(Platform::from_parts(os, arch, Some(variant))),
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(
            p("linux/arm64/v8"),
            Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into())
            }
        );
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        for bad in ["linux", "linux/", "/amd64", "linux/arm/v7/x", ""] {
            let err = bad.parse::<Platform>().unwrap_err();
            assert!(
                err.to_string()
                    .contains("expected OS/ARCH or OS/ARCH/VARIANT"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn host_is_linux_with_go_arch_name() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64/v8");
        assert_eq!(host.match_rank(&host), Some(2));
    }

    #[test]
    fn os_and_architecture_must_match() {
        assert_eq!(p("linux/amd64").match_rank(&p("windows/amd64")), None);
        assert_eq!(p("linux/amd64").match_rank(&p("linux/arm64")), None);
        assert_eq!(p("linux/amd64").match_rank(&p("linux/x86_64")), Some(2));
    }

    #[test]
    fn variant_exact_match_preferred_and_missing_variant_accepted() {
        let want = p("linux/arm64/v8");
        assert_eq!(want.match_rank(&p("linux/arm64/v8")), Some(2));
        // arm64 without a variant is v8.
        assert_eq!(want.match_rank(&p("linux/arm64")), Some(2));
        assert_eq!(p("linux/arm64").match_rank(&p("linux/arm64/v8")), Some(2));
        assert_eq!(want.match_rank(&p("linux/arm64/v9")), None);

        let want = p("linux/arm/v7");
        assert_eq!(want.match_rank(&p("linux/arm/v7")), Some(2));
        assert_eq!(want.match_rank(&p("linux/arm")), Some(1));
        assert_eq!(want.match_rank(&p("linux/arm/v6")), None);
        assert_eq!(p("linux/arm").match_rank(&p("linux/arm/v7")), None);
    }

    #[test]
    fn amd64_ignores_variant_but_prefers_exact() {
        let want = p("linux/amd64");
        assert_eq!(want.match_rank(&p("linux/amd64")), Some(2));
        assert_eq!(want.match_rank(&p("linux/amd64/v3")), Some(1));
        assert_eq!(p("linux/amd64/v2").match_rank(&p("linux/amd64")), Some(1));
    }
}
