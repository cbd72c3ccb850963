//! Registry credentials: given explicitly, from `THV_SANDBOX_REGISTRY_USER` / `THV_SANDBOX_REGISTRY_PASSWORD`,
//! or from Docker's `config.json`.
//!
//! In Docker's config, for a registry: a `credHelpers` entry for it wins; else a plain `auths` entry with a user
//! and password; else the `credsStore` helper. A helper `NAME` is the program `docker-credential-NAME` on `PATH`,
//! run as `docker-credential-NAME get` with the server URL on stdin (`https://index.docker.io/v1/` for Docker
//! Hub, else the registry host); it answers `{"Username": …, "Secret": …}`. Its output is read up to
//! [`MAX_HELPER_OUTPUT`] bytes and it gets [`HELPER_TIMEOUT`] to answer. "credentials not found" means none
//! (the pull goes on anonymously); a missing helper or any other failure is an error.
//!
//! Identity tokens (OAuth2 refresh tokens: an `identitytoken` in an `auths` entry, or a helper answering user
//! name `<token>`) become a [`Credential`] whose user name is [`IDENTITY_TOKEN_USER`]; the registry connection
//! exchanges them at the token server for an access token (see `remote.rs`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::PullError;
use crate::image::reference::DOCKER_HUB;

/// Environment variable with the registry user name.
pub const ENV_USER: &str = "THV_SANDBOX_REGISTRY_USER";
/// Environment variable with the registry password (or token).
pub const ENV_PASSWORD: &str = "THV_SANDBOX_REGISTRY_PASSWORD";
/// Largest Docker config file read.
const MAX_DOCKER_CONFIG_SIZE: u64 = 1 << 20;
/// Largest answer read from a credential helper.
pub const MAX_HELPER_OUTPUT: u64 = 64 << 10;
/// How long a credential helper may take.
pub const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The user name that marks a credential as an identity token (Docker's convention, also used by helpers).
pub const IDENTITY_TOKEN_USER: &str = "<token>";
/// What Docker sends credential helpers for Docker Hub.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

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
    /// An identity token (an OAuth2 refresh token), exchanged for an access token at the registry's token server.
    pub fn identity_token(token: impl Into<String>) -> Credential {
        Credential {
            username: IDENTITY_TOKEN_USER.to_owned(),
            password: token.into(),
        }
    }

    /// Whether this is an identity token rather than a user name and password.
    pub fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USER
    }

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
    identitytoken: Option<String>,
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
    let helper_for_registry = config
        .cred_helpers
        .iter()
        .find(|(key, _)| normalize_registry(key) == wanted)
        .map(|(_, helper)| helper.clone());
    if let Some(helper) = helper_for_registry {
        return from_helper(&helper, registry, path);
    }
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| normalize_registry(key) == wanted);
    if let Some((key, entry)) = entry {
        // `docker login` against a registry with OAuth2 stores the refresh token here (and a user name in `auth`).
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::identity_token(token)));
        }
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
    match config.creds_store.filter(|s| !s.is_empty()) {
        Some(store) => from_helper(&store, registry, path),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The credential helper `docker-credential-<name>`'s answer for `registry`.
fn from_helper(name: &str, registry: &str, config: &Path) -> Result<Option<Credential>, PullError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(PullError::DockerConfig {
            path: config.to_owned(),
            reason: format!(
                "`{}` is not a credential helper name",
                name.chars().take(100).collect::<String>()
            ),
        });
    }
    let program = format!("docker-credential-{name}");
    let server = if normalize_registry(registry) == DOCKER_HUB {
        DOCKER_HUB_SERVER.to_owned()
    } else {
        registry.to_owned()
    };
    run_helper(Path::new(&program), &server, HELPER_TIMEOUT, registry)
}

/// Run `program get` with `server` on stdin, within `timeout`, reading at most [`MAX_HELPER_OUTPUT`] bytes.
pub(crate) fn run_helper(
    program: &Path,
    server: &str,
    timeout: std::time::Duration,
    registry: &str,
) -> Result<Option<Credential>, PullError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let fail = |reason: String| PullError::CredentialHelper {
        helper: program.display().to_string(),
        registry: registry.to_owned(),
        reason,
    };
    let spawn = || {
        Command::new(program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // ETXTBSY: a helper just written (an installer, or a test) may still be open for writing in a process that
    // forked meanwhile; that passes in a moment.
    let mut spawned = spawn();
    for _ in 0..20 {
        match &spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(25));
                spawned = spawn();
            }
            _ => break,
        }
    }
    let mut child = spawned.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            fail("it is not installed (not found on PATH)".to_owned())
        } else {
            fail(format!("cannot start it: {e}"))
        }
    })?;
    // The server URL is a line; a helper that does not read it just gets EPIPE, which says nothing.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let read_bounded = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = pipe {
                let mut limited = pipe.take(MAX_HELPER_OUTPUT + 1);
                let _ = limited.read_to_end(&mut out);
                // Drain the rest so the helper is not blocked writing.
                let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
            }
            out
        })
    };
    let stdout = read_bounded(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read_bounded(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "it did not answer within {} s",
                    timeout.as_secs()
                )));
            }
            Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let answer = read_answer(status.success(), &status.to_string(), &out, &err).map_err(fail)?;
    if answer.is_none() {
        tracing::debug!("{}: no credentials for {server}", program.display());
    }
    Ok(answer)
}

/// What a credential helper's answer says: credentials, nothing stored (`None`), or why it is refused. `success`
/// and `status` are its exit status; `out` and `err` what it wrote (at most [`MAX_HELPER_OUTPUT`] + 1 bytes each).
/// Pure, so the fuzz harness reads answers as a real helper's are read.
pub(crate) fn read_answer(
    success: bool,
    status: &str,
    out: &[u8],
    err: &[u8],
) -> Result<Option<Credential>, String> {
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .trim()
            .chars()
            .take(300)
            .collect::<String>()
    };
    if !success {
        let said = if out.is_empty() { text(err) } else { text(out) };
        // The helper protocol's answer for "nothing stored for this server".
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("it failed ({status}): {said}"));
    }
    if out.len() as u64 > MAX_HELPER_OUTPUT {
        return Err(format!(
            "its answer is larger than {MAX_HELPER_OUTPUT} bytes"
        ));
    }
    let answer: HelperAnswer = serde_json::from_slice(out)
        .map_err(|e| format!("its answer is not the JSON expected: {e}"))?;
    if answer.username == IDENTITY_TOKEN_USER && answer.secret.is_empty() {
        return Err("it gave an identity token that is empty".to_owned());
    }
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential {
        username: answer.username,
        password: answer.secret,
    }))
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
        let path = write(
            tmp.path(),
            r#"{"auths": {"reg.lan": {"auth": "dTE6", "identitytoken": "r3fresh"}}}"#,
        );
        let token = from_docker_config(&path, "reg.lan").unwrap().unwrap();
        assert!(token.is_identity_token());
        assert_eq!(token.password, "r3fresh");
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

    /// An executable shell script.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn helper_answers_are_read_and_failures_explained() {
        let tmp = tempfile::tempdir().unwrap();
        let t = std::time::Duration::from_secs(20);
        // Echoes what it was asked for, so the server URL is checked too.
        let ok = script(
            tmp.path(),
            "ok",
            r#"[ "$1" = get ] || exit 3; read -r server; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s3cret"}' "$server" "$server""#,
        );
        let c = run_helper(&ok, "reg.lan:5000", t, "reg.lan:5000")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("u-reg.lan:5000", "s3cret")
        );
        let none = script(
            tmp.path(),
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert!(run_helper(&none, "a", t, "a").unwrap().is_none());
        let token = script(
            tmp.path(),
            "token",
            r#"echo '{"Username":"<token>","Secret":"refresh"}'"#,
        );
        let c = run_helper(&token, "a", t, "a").unwrap().unwrap();
        assert!(c.is_identity_token());
        assert_eq!(c.password, "refresh");
        let broken = script(tmp.path(), "broken", "echo 'keyring locked' >&2; exit 2");
        let err = run_helper(&broken, "a", t, "a").unwrap_err().to_string();
        assert!(
            err.contains("keyring locked") && err.contains("broken"),
            "{err}"
        );
        let garbage = script(tmp.path(), "garbage", "echo not json");
        let err = run_helper(&garbage, "a", t, "a").unwrap_err().to_string();
        assert!(err.contains("not the JSON expected"), "{err}");
        let huge = script(tmp.path(), "huge", "head -c 1000000 /dev/zero | tr '\\0' x");
        let err = run_helper(&huge, "a", t, "a").unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        // Stuck: the timeout ends it (it is killed, and we return).
        let stuck = script(tmp.path(), "stuck", "exec sleep 600");
        let err = run_helper(&stuck, "a", std::time::Duration::from_millis(200), "a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not answer"), "{err}");
        let err = run_helper(&tmp.path().join("absent"), "a", t, "a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not installed"), "{err}");
    }

    #[test]
    fn a_registry_helper_wins_over_auths_which_win_over_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(
            tmp.path(),
            r#"{"credsStore": "thv-test-absent-store", "credHelpers": {"gcr.io": "thv-test-absent-helper"},
                "auths": {"gcr.io": {"auth": "dTE6cDp3"}, "quay.io": {"auth": "dTE6cDp3"}}}"#,
        );
        let err = from_docker_config(&path, "gcr.io").unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-thv-test-absent-helper"),
            "{err}"
        );
        assert_eq!(
            from_docker_config(&path, "quay.io")
                .unwrap()
                .unwrap()
                .username,
            "u1"
        );
        let err = from_docker_config(&path, "ghcr.io")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker-credential-thv-test-absent-store"),
            "{err}"
        );
        let path = write(tmp.path(), r#"{"credsStore": "../../bin/sh"}"#);
        let err = from_docker_config(&path, "ghcr.io")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a credential helper name"), "{err}");
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
