//! Registry credentials: given explicitly, from `THV_SANDBOX_REGISTRY_USER` / `THV_SANDBOX_REGISTRY_PASSWORD`,
//! or from the `auths` of Docker's `config.json`.
//!
//! Credential helpers (`credsStore`, `credHelpers`) and identity tokens are not supported yet: when the config
//! names a helper for a registry and has no plain entry for it, the pull goes on anonymously and says so.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::PullError;
use crate::reference::DOCKER_HUB;

/// Environment variable with the registry user name.
pub const ENV_USER: &str = "THV_SANDBOX_REGISTRY_USER";
/// Environment variable with the registry password (or token).
pub const ENV_PASSWORD: &str = "THV_SANDBOX_REGISTRY_PASSWORD";
/// Largest Docker config file read.
const MAX_DOCKER_CONFIG_SIZE: u64 = 1 << 20;

/// A user name and password for HTTP basic auth (or for the token server of a bearer-token registry).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// From `THV_SANDBOX_REGISTRY_USER` and `THV_SANDBOX_REGISTRY_PASSWORD`, when both are set and non-empty.
    pub fn from_env() -> Option<Credential> {
        Credential::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Credential::from_env`] over any variable lookup.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Option<Credential> {
        let username = get(ENV_USER).filter(|v| !v.is_empty())?;
        let password = get(ENV_PASSWORD).filter(|v| !v.is_empty())?;
        Some(Credential { username, password })
    }
}

/// Docker's config file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The registry a Docker config key names: `https://index.docker.io/v1/` → `docker.io`, `ghcr.io` → `ghcr.io`.
fn normalize_registry(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// The credential for `registry` (`host[:port]` as references spell it) in the Docker config at `path`.
/// A missing file means none.
pub fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Credential>, PullError> {
    let invalid = |reason: String| PullError::DockerConfig {
        path: path.to_owned(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PullError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_DOCKER_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PullError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_DOCKER_CONFIG_SIZE {
        return Err(invalid(format!(
            "larger than {MAX_DOCKER_CONFIG_SIZE} bytes"
        )));
    }
    let config: DockerConfig =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let wanted = normalize_registry(registry);
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| normalize_registry(key) == wanted);
    if let Some((key, entry)) = entry {
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| invalid(format!("`auths.{key}.auth` is not base64: {e}")))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| invalid(format!("`auths.{key}.auth` is not UTF-8")))?;
            let (username, password) = text.split_once(':').ok_or_else(|| {
                invalid(format!(
                    "`auths.{key}.auth` is not base64 of `user:password`"
                ))
            })?;
            return Ok(Some(Credential {
                username: username.to_owned(),
                password: password.to_owned(),
            }));
        }
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(Credential {
                username: username.clone(),
                password: password.clone(),
            }));
        }
    }
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| normalize_registry(key) == wanted)
        .map(|(_, helper)| helper.clone())
        .or(config.creds_store);
    if let Some(helper) = helper {
        tracing::warn!(
            "{} names the credential helper `docker-credential-{helper}` for {registry}; credential helpers \
             are not supported yet, pulling without credentials",
            path.display()
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn reads_auths_by_registry_with_docker_hub_aliases() {
        let tmp = tempfile::tempdir().unwrap();
        // base64("u1:p:w") and base64("hub:secret")
        let path = write(
            tmp.path(),
            r#"{"auths": {
                "ghcr.io": {"auth": "dTE6cDp3"},
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "127.0.0.1:5000": {"username": "plain", "password": "pw"}
            }}"#,
        );
        let ghcr = from_docker_config(&path, "ghcr.io").unwrap().unwrap();
        assert_eq!(
            (ghcr.username.as_str(), ghcr.password.as_str()),
            ("u1", "p:w")
        );
        let hub = from_docker_config(&path, "docker.io").unwrap().unwrap();
        assert_eq!(hub.username, "hub");
        let local = from_docker_config(&path, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(local.password, "pw");
        assert!(from_docker_config(&path, "quay.io").unwrap().is_none());
        assert!(from_docker_config(&path, "127.0.0.1:5001")
            .unwrap()
            .is_none());
    }

    #[test]
    fn missing_file_means_none_and_malformed_says_where() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(from_docker_config(&tmp.path().join("nope.json"), "a.io")
            .unwrap()
            .is_none());
        let path = write(tmp.path(), r#"{"auths": {"a.io": {"auth": "%%%"}}}"#);
        let err = from_docker_config(&path, "a.io").unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("not base64"),
            "{err}"
        );
        let path = write(
            tmp.path(),
            r#"{"auths": {"a.io": {"auth": "bm9jb2xvbg=="}}}"#,
        );
        let err = from_docker_config(&path, "a.io").unwrap_err().to_string();
        assert!(err.contains("user:password"), "{err}");
        let path = write(tmp.path(), "not json");
        assert!(from_docker_config(&path, "a.io").is_err());
    }

    #[test]
    fn helpers_alone_give_no_credential() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(
            tmp.path(),
            r#"{"credsStore": "desktop", "credHelpers": {"gcr.io": "gcloud"}}"#,
        );
        assert!(from_docker_config(&path, "gcr.io").unwrap().is_none());
    }

    #[test]
    fn env_needs_both_variables() {
        let vars = |user: Option<&str>, password: Option<&str>| {
            let (user, password) = (user.map(str::to_owned), password.map(str::to_owned));
            Credential::from_vars(move |name| match name {
                ENV_USER => user.clone(),
                ENV_PASSWORD => password.clone(),
                _ => None,
            })
        };
        assert_eq!(
            vars(Some("u"), Some("p")),
            Some(Credential {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(vars(Some("u"), None), None);
        assert_eq!(vars(Some(""), Some("p")), None);
        assert!(!format!("{:?}", vars(Some("u"), Some("hunter2"))).contains("hunter2"));
    }
}
