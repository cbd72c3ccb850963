//! End-to-end: a registry with a certificate from a private CA (a real `docker-registry` with `http.tls`, the CA
//! made by the test with `openssl`) is refused with a clear hint until the CA is trusted, with `--ca-cert` or
//! `ca_certs` in the configuration file.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{code, Run};
use thv_sandbox_e2e::registry::{
    loopback_hostname, openssl_available, registry_available, TestCa, TestRegistry,
};
use thv_sandbox_e2e::{require, thv_sandbox_bin, ImageBuilder, Layer};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn thv(run: &Run, config_home: &Path, args: &[&str]) -> Out {
    let cache = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(thv_sandbox_bin())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", run.xdg.path())
        .env("XDG_RUNTIME_DIR", run.xdg.path())
        .env("XDG_CONFIG_HOME", config_home)
        .arg(args[0])
        .arg("--cache-dir")
        .arg(cache.path())
        .args(&args[1..])
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
async fn a_private_ca_is_refused_with_a_hint_until_it_is_trusted() {
    if !require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) || !require(openssl_available(), "the openssl command")
    {
        return;
    }
    // Loopback registries named `localhost` or by IP get plain HTTP; HTTPS needs another name for 127.0.0.1.
    let Some(host) = loopback_hostname() else {
        require(
            false,
            "a host name other than localhost resolving to 127.0.0.1 (the machine's name in /etc/hosts)",
        );
        return;
    };
    let ca = TestCa::new(&host).expect("CA");
    let plain = TestRegistry::start().expect("registry");
    let layout = tempfile::tempdir().unwrap();
    let built = ImageBuilder::new()
        .layer(Layer::new().file("/marker", "over TLS\n", 0o644))
        .entrypoint(["/bin/app"])
        .write(layout.path(), "v1")
        .unwrap();
    plain
        .push_image(layout.path(), &built, "secure/app", "v1")
        .expect("push");
    let tls = plain
        .start_tls_view(&ca.server_cert, &ca.server_key)
        .expect("TLS registry");
    let image = format!("{host}:{}/secure/app:v1", tls.addr().port());
    let pinned = format!(
        "{host}:{}/secure/app@{}",
        tls.addr().port(),
        built.manifest.digest
    );
    let run = Run::new();
    let config_home = tempfile::tempdir().unwrap();

    // Not trusted: refused, saying why and what to do.
    let out = thv(&run, config_home.path(), &["pull", &image]).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.starts_with(&format!(
            "error: the TLS certificate of the OCI registry {host}:{} (https://",
            tls.addr().port()
        )) && out.stderr.contains("is not trusted"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: if the OCI registry's certificate comes from a private CA, trust that CA with `--ca-cert FILE`"), "{}", out.stderr);
    assert_eq!(
        tls.blob_gets(&built.layers[0].digest),
        0,
        "nothing fetched without TLS"
    );

    // --ca-cert: pulled.
    let ca_path = ca.ca_cert.to_str().unwrap();
    let out = thv(
        &run,
        config_home.path(),
        &["pull", "--ca-cert", ca_path, &image],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), pinned);
    assert_eq!(tls.blob_gets(&built.layers[0].digest), 1, "{}", tls.log());

    // `ca_certs` in the configuration file: pulled too.
    let dir = config_home.path().join("thv-sandbox");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("ca_certs = [\"{ca_path}\"]\n"),
    )
    .unwrap();
    let out = thv(&run, config_home.path(), &["pull", &image]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(tls.blob_gets(&built.layers[0].digest), 2);

    // A file that is no certificate: said before anything is contacted.
    let out = thv(
        &run,
        config_home.path(),
        &["pull", "--ca-cert", "/etc/hostname", &image],
    )
    .await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "error: cannot use the CA certificate file /etc/hostname: no PEM certificate in it"
        ),
        "{}",
        out.stderr
    );
}
