//! Image references as users write them: `alpine`, `user/img:1.2`, `ghcr.io/org/img:tag`,
//! `localhost:5000/x`, `img@sha256:…`, `img:tag@sha256:…`.
//!
//! Parsing follows the grammar of the distribution project (the one `docker pull` accepts), and
//! normalizes the way Docker does:
//! - the first path component is a registry host when it contains `.` or `:`, is `localhost`, or
//!   has an uppercase letter; otherwise the registry is `docker.io`;
//! - `index.docker.io` is `docker.io`, and a one-component repository on `docker.io` is in
//!   `library/` (`alpine` → `docker.io/library/alpine`);
//! - no tag and no digest means the tag `latest`.
//!
//! So every [`Reference`] has a registry, a repository, and a tag or a digest (or both). Digests
//! are sha256 only ([`Digest`]). With both a tag and a digest, the digest decides what is pulled;
//! the tag is kept only for display.

use std::fmt;
use std::str::FromStr;

use crate::image::digest::{Digest, DigestError};

/// The registry of Docker Hub, as references name it after normalization.
pub const DOCKER_HUB: &str = "docker.io";
/// The longest repository name (`registry/path`), as the distribution grammar bounds it.
const MAX_NAME_LEN: usize = 255;
/// How many characters of a rejected input an error repeats.
const MAX_ECHOED_INPUT: usize = 200;

/// A parsed, normalized image reference.
///
/// Invariant: `tag` or `digest` (or both) is present; every part matches the distribution
/// grammar; `registry` is lowercase-insensitive as written except for `docker.io` aliases.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference. The messages say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The string does not follow the reference grammar.
    #[error("invalid image reference {input:?}: {reason}")]
    Invalid {
        /// The rejected input (at most 200 characters of it).
        input: String,
        /// What is wrong, and what would be right.
        reason: String,
    },
    /// The part after `@` is not a sha256 digest.
    #[error("invalid image reference {input:?}: bad digest")]
    Digest {
        /// The rejected input (at most 200 characters of it).
        input: String,
        /// What is wrong with the digest.
        #[source]
        source: DigestError,
    },
}

impl Reference {
    /// The registry host, with its port if one was given: `docker.io`, `ghcr.io`,
    /// `localhost:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/alpine`, `org/img`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository@digest`: the name of exactly that content.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }

    /// The same image, pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// What the cache names this reference by: `registry/repository@digest` when it pins a
    /// digest (a tag beside it is not a claim about what the tag points to now), else
    /// `registry/repository:tag`.
    pub fn cache_name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => self.pinned(digest),
            (None, Some(tag)) => format!("{}/{}:{tag}", self.registry, self.repository),
            // The constructor guarantees a tag or a digest; a tagless, digestless reference
            // means latest.
            (None, None) => format!("{}/{}:latest", self.registry, self.repository),
        }
    }

    /// The host part of [`Reference::registry`], without port or brackets: `localhost`,
    /// `127.0.0.1`, `::1`, `ghcr.io`.
    pub fn registry_host(&self) -> &str {
        split_host_port(&self.registry).0
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Split `host[:port]` (or `[v6]:port`) into the bare host and the port text.
pub(crate) fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
    }
    match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        parse(s)
    }
}

fn echo(input: &str) -> String {
    input.chars().take(MAX_ECHOED_INPUT).collect()
}

fn parse(input: &str) -> Result<Reference, ReferenceError> {
    let invalid = |reason: &str| ReferenceError::Invalid {
        input: echo(input),
        reason: reason.to_owned(),
    };
    if input.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some((scheme, _)) = input.split_once("://") {
        return Err(invalid(&format!(
            "write it without the `{}://` prefix, e.g. `ghcr.io/org/image:tag`",
            echo(scheme)
        )));
    }
    if input.len() == 64
        && input
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(invalid(
            "64 hex digits look like an image ID; name the image and pin it as `IMAGE@sha256:<hex>`",
        ));
    }
    if input.chars().any(char::is_whitespace) {
        return Err(invalid("it contains white space"));
    }

    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            let digest = digest
                .parse::<Digest>()
                .map_err(|source| ReferenceError::Digest {
                    input: echo(input),
                    source,
                })?;
            (rest, Some(digest))
        }
        None => (input, None),
    };

    // A tag is what follows the last `:` after the last `/` (a `:` before a `/` is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(&rest[at + 1..]))
        }
        None => (rest, None),
    };
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Err(invalid(
                "the tag must be 1 to 128 characters of letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
            ));
        }
    }
    if name.is_empty() {
        return Err(invalid("the image name is missing"));
    }

    let (registry, path) = split_registry(name);
    let registry = match registry {
        Some(registry) => {
            check_registry(registry).map_err(|reason| invalid(&reason.to_string()))?;
            if registry == "index.docker.io" {
                DOCKER_HUB.to_owned()
            } else {
                registry.to_owned()
            }
        }
        None => DOCKER_HUB.to_owned(),
    };
    if path.is_empty() {
        return Err(invalid("the repository name is missing after the registry"));
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid("repository names must be lowercase"));
    }
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(invalid(&format!(
                "{:?} is not a valid repository path component: use lowercase letters and digits, \
                 separated by `.`, `_`, `__` or dashes",
                echo(component)
            )));
        }
    }
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
        return Err(invalid(&format!(
            "the name is longer than {MAX_NAME_LEN} characters"
        )));
    }
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag.to_owned()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_owned()),
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Docker's rule: the first component names a registry when it has `.` or `:`, is `localhost`,
/// or has an uppercase letter (repository components never do).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase())
                || first.starts_with('[') =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// Why the registry part of a reference is not `host[:port]`; the input echoed is clipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RegistryAddressError {
    /// `[` without `]`.
    #[error("an IPv6 OCI registry address needs its closing `]`")]
    UnclosedBracket,
    /// Between the brackets is not an IPv6 address.
    #[error("{address:?} is not an IPv6 address")]
    NotIpv6 {
        /// What was between the brackets.
        address: String,
    },
    /// Something other than `:PORT` after `]`.
    #[error("after `]` only `:PORT` may follow")]
    AfterBracket,
    /// The host is not a DNS name or IPv4 address.
    #[error("{host:?} is not a valid OCI registry host name")]
    Host {
        /// The host.
        host: String,
    },
    /// The port is not a number in 0..=65535.
    #[error("{port:?} is not a valid port in the OCI registry address")]
    Port {
        /// The port.
        port: String,
    },
}

/// `host[:port]` where host is a DNS name, an IPv4 address, or `[IPv6]`.
fn check_registry(registry: &str) -> Result<(), RegistryAddressError> {
    let (host, port) = if let Some(bracketed) = registry.strip_prefix('[') {
        let Some((v6, after)) = bracketed.split_once(']') else {
            return Err(RegistryAddressError::UnclosedBracket);
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(RegistryAddressError::NotIpv6 { address: echo(v6) });
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(RegistryAddressError::AfterBracket),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|component| {
                let bytes = component.as_bytes();
                !bytes.is_empty()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                    && bytes[0] != b'-'
                    && bytes[bytes.len() - 1] != b'-'
            });
        if !ok {
            return Err(RegistryAddressError::Host { host: echo(host) });
        }
    }
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return Err(RegistryAddressError::Port { port: echo(port) });
        }
    }
    Ok(())
}

/// `[a-z0-9]+` runs separated by `.`, `_`, `__` or one or more `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut need_alnum = true;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            need_alnum = false;
            i += 1;
            continue;
        }
        if need_alnum {
            return false;
        }
        let separator_len = match bytes[i] {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|b| **b == b'-').count(),
            _ => return false,
        };
        i += separator_len;
        need_alnum = true;
    }
    !need_alnum
}

/// The tag grammar is the layout reader's: one definition for `oci:PATH:TAG` and registry references.
use crate::image::layout::is_valid_tag;

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(s: &str) -> Reference {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = ok(s);
        (
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned),
            r.digest().map(ToString::to_string),
        )
    }

    #[test]
    fn registry_address_errors_name_the_part_at_fault() {
        let cases = [
            ("[::1", "an IPv6 OCI registry address needs its closing `]`"),
            ("[zz]:1", "\"zz\" is not an IPv6 address"),
            ("[::1]x", "after `]` only `:PORT` may follow"),
            (
                "-bad.io",
                "\"-bad.io\" is not a valid OCI registry host name",
            ),
            (
                "r.io:99999",
                "\"99999\" is not a valid port in the OCI registry address",
            ),
        ];
        for (registry, text) in cases {
            assert_eq!(check_registry(registry).unwrap_err().to_string(), text);
        }
        assert!(check_registry("[::1]:5000").is_ok());
    }

    fn err(s: &str) -> String {
        s.parse::<Reference>()
            .expect_err(&format!("{s:?} should be refused"))
            .to_string()
    }

    fn p(
        reg: &str,
        repo: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> (String, String, Option<String>, Option<String>) {
        (
            reg.into(),
            repo.into(),
            tag.map(Into::into),
            digest.map(Into::into),
        )
    }

    #[test]
    fn docker_hub_shorthand() {
        assert_eq!(
            parts("alpine"),
            p("docker.io", "library/alpine", Some("latest"), None)
        );
        assert_eq!(
            parts("alpine:3.20"),
            p("docker.io", "library/alpine", Some("3.20"), None)
        );
        assert_eq!(
            parts("user/img"),
            p("docker.io", "user/img", Some("latest"), None)
        );
        assert_eq!(
            parts("docker.io/alpine"),
            p("docker.io", "library/alpine", Some("latest"), None)
        );
        assert_eq!(
            parts("index.docker.io/user/img:1"),
            p("docker.io", "user/img", Some("1"), None)
        );
        assert_eq!(ok("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(ok("alpine").cache_name(), "docker.io/library/alpine:latest");
    }

    #[test]
    fn registries_ports_and_nested_paths() {
        assert_eq!(
            parts("ghcr.io/org/img:tag"),
            p("ghcr.io", "org/img", Some("tag"), None)
        );
        assert_eq!(
            parts("ghcr.io/org/team/img"),
            p("ghcr.io", "org/team/img", Some("latest"), None)
        );
        assert_eq!(
            parts("localhost:5000/x"),
            p("localhost:5000", "x", Some("latest"), None)
        );
        assert_eq!(
            parts("localhost/x"),
            p("localhost", "x", Some("latest"), None)
        );
        assert_eq!(
            parts("127.0.0.1:5000/x:1"),
            p("127.0.0.1:5000", "x", Some("1"), None)
        );
        assert_eq!(
            parts("[::1]:5000/a/b:c"),
            p("[::1]:5000", "a/b", Some("c"), None)
        );
        assert_eq!(ok("[::1]:5000/a").registry_host(), "::1");
        assert_eq!(ok("127.0.0.1:5000/a").registry_host(), "127.0.0.1");
        assert_eq!(ok("ghcr.io/a").registry_host(), "ghcr.io");
        // Separators inside path components.
        assert_eq!(parts("quay.io/a.b/c_d/e__f/g--h:v").1, "a.b/c_d/e__f/g--h");
    }

    #[test]
    fn digests_and_tag_with_digest() {
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            parts(&format!("img@{digest}")),
            p("docker.io", "library/img", None, Some(&digest))
        );
        let both = ok(&format!("ghcr.io/o/i:v1@{digest}"));
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.digest().map(ToString::to_string), Some(digest.clone()));
        assert_eq!(both.to_string(), format!("ghcr.io/o/i:v1@{digest}"));
        // The cache names a pinned reference by its digest only.
        assert_eq!(both.cache_name(), format!("ghcr.io/o/i@{digest}"));
        assert_eq!(
            ok("localhost:5000/x:1").pinned(&digest.parse().unwrap()),
            format!("localhost:5000/x@{digest}")
        );
    }

    #[test]
    fn malformed_references_are_refused_with_a_reason() {
        assert!(err("").contains("it is empty"));
        assert!(err("docker://alpine").contains("without the `docker://` prefix"));
        assert!(err(HEX).contains("look like an image ID"));
        assert!(
            err("Alpine").contains("must be lowercase"),
            "{}",
            err("Alpine")
        );
        assert!(err("ghcr.io/Org/img").contains("must be lowercase"));
        assert!(err("img:").contains("the tag must be"));
        assert!(err("img:-x").contains("the tag must be"));
        assert!(err(&format!("img:{}", "a".repeat(129))).contains("the tag must be"));
        assert!(err("img@sha256:abc").contains("bad digest"));
        let unsupported = "img@sha512:".to_owned() + &"a".repeat(128);
        assert!(matches!(
            unsupported.parse::<Reference>(),
            Err(ReferenceError::Digest {
                source: DigestError::UnsupportedAlgorithm { .. },
                ..
            })
        ));
        assert!(err("ghcr.io/").contains("repository name is missing"));
        assert!(err("a//b").contains("not a valid repository path component"));
        assert!(err("a/-b").contains("not a valid repository path component"));
        assert!(err("a/b.").contains("not a valid repository path component"));
        assert!(err("a/b___c").contains("not a valid repository path component"));
        assert!(err("localhost:99999/x").contains("not a valid port"));
        assert!(err("localhost:/x").contains("not a valid port"));
        assert!(err("-bad.io/x").contains("not a valid OCI registry host"));
        assert!(err("[::1/x").contains("closing `]`"));
        assert!(err("[zz]:1/x").contains("not an IPv6 address"));
        assert!(err("has space").contains("white space"));
        assert!(err(":tag").contains("image name is missing"));
        let long = format!("ghcr.io/{}", "a".repeat(250));
        assert!(err(&long).contains("longer than 255"));
    }

    #[test]
    fn tag_grammar() {
        assert!(is_valid_tag("latest"));
        assert!(is_valid_tag("_x.Y-1"));
        assert!(is_valid_tag(&"a".repeat(128)));
        assert!(!is_valid_tag(""));
        assert!(!is_valid_tag(".x"));
        assert!(!is_valid_tag("a/b"));
        assert!(!is_valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("a.io"), ("a.io", None));
        assert_eq!(split_host_port("a.io:5000"), ("a.io", Some("5000")));
        assert_eq!(split_host_port("[::1]:5000"), ("::1", Some("5000")));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
    }
}
