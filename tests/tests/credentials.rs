//! End-to-end: credentials from Docker credential helpers (`credsStore`, `credHelpers` in `config.json`), through
//! real helper programs (shell scripts the test writes onto `PATH`) against a real registry with basic auth; and
//! identity tokens (OAuth2 refresh tokens) exchanged at a real token-auth registry's token server.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use common::{code, Run};
use thv_sandbox_e2e::registry::{
    htpasswd_available, openssl_available, registry_available, TestRegistry, TokenServer,
};
use thv_sandbox_e2e::{require, thv_sandbox_bin, ImageBuilder, Layer};

const USER: &str = "helper-user";
const PASSWORD: &str = "helper-pass";

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `thv-sandbox pull IMAGE` with `DOCKER_CONFIG` holding `config_json` and `bin` first on PATH.
async fn pull(run: &Run, bin: &Path, config_json: &str, image: &str) -> Out {
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(docker.path().join("config.json"), config_json).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(thv_sandbox_bin())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", run.xdg.path())
        .env("XDG_RUNTIME_DIR", run.xdg.path())
        .env("DOCKER_CONFIG", docker.path())
        .args(["pull", "--cache-dir"])
        .arg(cache.path())
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Out {
        code: code(out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_helpers_give_the_password_and_their_failures_are_explained() {
    if !require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) || !require(
        htpasswd_available(),
        "htpasswd (apt-get install apache2-utils)",
    ) {
        return;
    }
    let registry = TestRegistry::start_with_basic_auth(USER, PASSWORD).expect("registry");
    let layout = tempfile::tempdir().unwrap();
    let built = ImageBuilder::new()
        .layer(Layer::new().file("/marker", "private\n", 0o644))
        .entrypoint(["/bin/app"])
        .write(layout.path(), "v1")
        .unwrap();
    registry
        .push_image(layout.path(), &built, "private/app", "v1")
        .expect("push");
    let host = registry.host();
    let image = format!("{host}/private/app:v1");
    let pinned = format!("{host}/private/app@{}", built.manifest.digest);

    let run = Run::new();
    let bin = tempfile::tempdir().unwrap();
    let asked = bin.path().join("asked");
    // A helper that records what it was asked and answers with the registry's credentials.
    script(
        bin.path(),
        "docker-credential-thvgood",
        &format!(
            "[ \"$1\" = get ] || exit 3\nread -r server\nprintf '%s' \"$server\" > {}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"",
            asked.display()
        ),
    );
    script(
        bin.path(),
        "docker-credential-thvwrong",
        &format!("printf '{{\"Username\":\"{USER}\",\"Secret\":\"nope\"}}'"),
    );
    script(
        bin.path(),
        "docker-credential-thvlocked",
        "echo 'the keyring is locked' >&2; exit 1",
    );
    script(
        bin.path(),
        "docker-credential-thvempty",
        "echo 'credentials not found in native keychain'; exit 1",
    );

    // credsStore: used for every registry without its own entry.
    let out = pull(&run, bin.path(), r#"{"credsStore": "thvgood"}"#, &image).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), pinned);
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), host);

    // credHelpers for this registry wins over a store that would fail.
    let config =
        format!(r#"{{"credsStore": "thvlocked", "credHelpers": {{"{host}": "thvgood"}}}}"#);
    let out = pull(&run, bin.path(), &config, &image).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A helper with the wrong password: reported as a wrong password.
    let config = format!(r#"{{"credHelpers": {{"{host}": "thvwrong"}}}}"#);
    let out = pull(&run, bin.path(), &config, &image).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "refused the credentials of user `{USER}` (wrong user name or password?)"
        )),
        "{}",
        out.stderr
    );

    // A failing helper: its own words, and what to do.
    let out = pull(&run, bin.path(), r#"{"credsStore": "thvlocked"}"#, &image).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "error: the credential helper docker-credential-thvlocked failed for {host}: it failed"
        )) && out.stderr.contains("the keyring is locked"),
        "{}",
        out.stderr
    );
    assert!(out
        .stderr
        .contains("hint: install docker-credential-thvlocked"));

    // A helper that is not installed.
    let out = pull(&run, bin.path(), r#"{"credsStore": "thvmissing"}"#, &image).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("docker-credential-thvmissing") && out.stderr.contains("not installed"),
        "{}",
        out.stderr
    );

    // Nothing stored for this registry: anonymous, which this registry refuses.
    let out = pull(&run, bin.path(), r#"{"credsStore": "thvempty"}"#, &image).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("wants credentials for private/app"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_tokens_from_the_config_file_and_from_helpers_are_exchanged_for_access_tokens() {
    if !require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) || !require(openssl_available(), "the openssl command")
    {
        return;
    }
    const REFRESH: &str = "r3fresh-t0ken/with+odd=chars";
    let tokens =
        TokenServer::start_with_refresh_token("bob", "bob-pw", REFRESH).expect("token server");
    let registry = TestRegistry::start_with_token_auth(&tokens).expect("registry");
    let layout = tempfile::tempdir().unwrap();
    let built = ImageBuilder::new()
        .layer(Layer::new().file("/marker", "private\n", 0o644))
        .entrypoint(["/bin/app"])
        .write(layout.path(), "v1")
        .unwrap();
    // Not under public/: anonymous tokens grant nothing here.
    registry
        .push_image(layout.path(), &built, "team/app", "v1")
        .expect("push");
    let host = registry.host();
    let image = format!("{host}/team/app:v1");
    let pinned = format!("{host}/team/app@{}", built.manifest.digest);
    let run = Run::new();
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "docker-credential-thvtoken",
        &format!("printf '{{\"Username\":\"<token>\",\"Secret\":\"{REFRESH}\"}}'"),
    );
    script(
        bin.path(),
        "docker-credential-thvstale",
        "printf '{\"Username\":\"<token>\",\"Secret\":\"revoked\"}'",
    );

    // `docker login` with OAuth2: a user name in `auth` ("bob:"), the refresh token in `identitytoken`.
    let config = format!(
        r#"{{"auths": {{"{host}": {{"auth": "Ym9iOg==", "identitytoken": "{REFRESH}"}}}}}}"#
    );
    let out = pull(&run, bin.path(), &config, &image).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), pinned);
    assert_eq!(tokens.refresh_grants(), 1);

    // A credential helper answering user name `<token>`.
    let config = format!(r#"{{"credHelpers": {{"{host}": "thvtoken"}}}}"#);
    let out = pull(&run, bin.path(), &config, &image).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), pinned);
    assert_eq!(tokens.refresh_grants(), 2);

    // A refresh token the token server does not know, from either source: an authentication failure, with the
    // token server's words and what to do; never a missing image.
    let stale_file =
        format!(r#"{{"auths": {{"{host}": {{"auth": "Ym9iOg==", "identitytoken": "revoked"}}}}}}"#);
    let stale_helper = format!(r#"{{"credHelpers": {{"{host}": "thvstale"}}}}"#);
    for config in [stale_file, stale_helper] {
        let out = pull(&run, bin.path(), &config, &image).await;
        assert_eq!(out.code, 125, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "error: the OCI registry {host} did not accept the identity token"
            )) && out.stderr.contains("invalid_grant"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("hint: the token may have expired"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("not found"), "{}", out.stderr);
    }
    assert_eq!(tokens.refresh_grants(), 2);
}
