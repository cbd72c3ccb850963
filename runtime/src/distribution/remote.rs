//! Talking to one registry: authentication, manifests (bounded), blobs (streamed, counted, hashed, committed
//! atomically).
//!
//! oci-client does the authentication (`auth()` first, so that a refused password surfaces as such; it runs the
//! bearer-token challenge flow and caches tokens per repository) and the blob downloads. Manifests and indexes
//! are fetched here with the same token, because oci-client reads a manifest response whole, however large: here
//! the body is read at most [`crate::layout::MAX_MANIFEST_SIZE`] bytes far.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use sha2::{Digest as _, Sha256};

use super::auth::{self, Credential};
use super::document::{LayerBlob, ACCEPTED_MANIFESTS};
use super::store::Store;
use super::stream::Feed;
use super::{PullError, PullObserver, PullOptions};
use crate::digest::{Digest, DigestError};
use crate::reference::{split_host_port, Reference};

const USER_AGENT: &str = concat!("thv-sandbox/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A registry that sends nothing for this long is given up on.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `host` (`host[:port]`) may be spoken to over plain HTTP: loopback always, others when listed in
/// `insecure` (an entry without port allows every port of that host).
pub(crate) fn plain_http_allowed(host: &str, insecure: &[String]) -> bool {
    let (name, port) = split_host_port(host);
    let loopback = name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure.iter().any(|entry| {
            let (entry_name, entry_port) = split_host_port(entry);
            entry_name.eq_ignore_ascii_case(name) && (entry_port.is_none() || entry_port == port)
        })
}

/// Whether a token server may be sent a secret (a refresh token): over HTTPS, or plain HTTP to a host that may be
/// spoken to that way (loopback, `--insecure-registry`).
pub(crate) fn token_realm_is_safe(realm: &reqwest::Url, insecure: &[String]) -> bool {
    let host = match (realm.host_str(), realm.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return false,
    };
    realm.scheme() == "https" || (realm.scheme() == "http" && plain_http_allowed(&host, insecure))
}

/// Largest CA certificate file read.
const MAX_CA_FILE_SIZE: u64 = 1 << 20;

/// The PEM `CERTIFICATE` blocks of each file, each checked by parsing it; a file without any is an error.
pub(crate) fn read_ca_certs(paths: &[std::path::PathBuf]) -> Result<Vec<Vec<u8>>, PullError> {
    use std::io::Read;
    let mut blocks = Vec::new();
    for path in paths {
        let bad = |reason: String| PullError::CaCert {
            path: path.clone(),
            reason,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CA_FILE_SIZE + 1).read_to_end(&mut bytes))
            .map_err(|e| bad(e.to_string()))?;
        if bytes.len() as u64 > MAX_CA_FILE_SIZE {
            return Err(bad(format!("larger than {MAX_CA_FILE_SIZE} bytes")));
        }
        let text = String::from_utf8_lossy(&bytes);
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let mut found = 0;
        let mut rest = text.as_ref();
        while let Some(start) = rest.find(BEGIN) {
            let Some(len) = rest[start..].find(END) else {
                return Err(bad("a certificate has no END line".to_owned()));
            };
            let block = format!("{}\n", &rest[start..start + len + END.len()]);
            // reqwest parses certificates only when the client is built: check the block is base64 of DER
            // (an ASN.1 SEQUENCE) here, so a bad file is reported as that.
            let body: String = rest[start + BEGIN.len()..start + len]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            use base64::Engine as _;
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|e| bad(format!("certificate {} is not base64: {e}", found + 1)))?;
            if der.first() != Some(&0x30) || der.len() < 64 {
                return Err(bad(format!(
                    "certificate {} is not a DER certificate",
                    found + 1
                )));
            }
            blocks.push(block.into_bytes());
            found += 1;
            rest = &rest[start + len + END.len()..];
        }
        if found == 0 {
            return Err(bad(
                "no PEM certificate in it (`-----BEGIN CERTIFICATE-----`)".to_owned(),
            ));
        }
    }
    Ok(blocks)
}

/// Whether an error (or one of its causes) is about the server's certificate.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("unknownissuer") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The host to contact for `registry`: its mirror if one is configured.
pub(crate) fn mirror_for<'a>(registry: &'a str, mirrors: &'a [(String, String)]) -> &'a str {
    mirrors
        .iter()
        .find(|(from, _)| from == registry)
        .map_or(registry, |(_, to)| to.as_str())
}

/// A connection to one repository of one registry, authenticated.
pub(crate) struct Remote {
    client: oci_client::Client,
    http: reqwest::Client,
    /// registry (or mirror) + repository, for oci-client's calls.
    base: oci_client::Reference,
    /// The `Authorization` header for requests made here.
    authorization: Option<String>,
    credential: Option<Credential>,
    /// What the user asked for, for messages.
    registry: String,
    /// The `scheme://host` contacted.
    origin: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("registry", &self.registry)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn boxed(
    e: impl std::error::Error + Send + Sync + 'static,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

impl Remote {
    /// Set up clients for `reference`'s registry (or its mirror) and authenticate for pulling.
    pub(crate) async fn connect(
        reference: &Reference,
        opts: &PullOptions<'_>,
    ) -> Result<Remote, PullError> {
        let contacted = mirror_for(reference.registry(), &opts.mirrors).to_owned();
        if contacted != reference.registry() {
            tracing::info!("pulling {reference} from the mirror {contacted}");
        }
        let base = oci_client::Reference::with_tag(
            contacted.clone(),
            reference.repository().to_owned(),
            "latest".to_owned(),
        );
        let host = base.resolve_registry().to_owned();
        let plain = plain_http_allowed(&host, &opts.insecure);
        let scheme = if plain { "http" } else { "https" };
        let origin = format!("{scheme}://{host}");

        let credential = match &opts.credential {
            Some(c) => Some(c.clone()),
            None => match &opts.docker_config {
                Some(path) => auth::from_docker_config(path, &contacted)?,
                None => None,
            },
        };

        let ca_blocks = read_ca_certs(&opts.ca_certs)?;
        let config = ClientConfig {
            extra_root_certificates: ca_blocks
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            protocol: if plain {
                ClientProtocol::HttpsExcept(vec![host.clone()])
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            https_proxy: opts.proxy.https.clone(),
            http_proxy: opts.proxy.http.clone(),
            no_proxy: opts.proxy.no_proxy.clone(),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| PullError::Client {
            registry: contacted.clone(),
            source: boxed(e),
        })?;
        let mut http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT);
        for pem in &ca_blocks {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| PullError::Client {
                registry: contacted.clone(),
                source: boxed(e),
            })?;
            http = http.add_root_certificate(cert);
        }
        let no_proxy = opts
            .proxy
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        for (url, https) in [(&opts.proxy.https, true), (&opts.proxy.http, false)] {
            let Some(url) = url else { continue };
            let proxy = if https {
                reqwest::Proxy::https(url.as_str())
            } else {
                reqwest::Proxy::http(url.as_str())
            };
            let proxy = proxy.map_err(|e| PullError::Client {
                registry: contacted.clone(),
                source: boxed(e),
            })?;
            http = http.proxy(proxy.no_proxy(no_proxy.clone()));
        }
        let http = http.build().map_err(|e| PullError::Client {
            registry: contacted.clone(),
            source: boxed(e),
        })?;

        let registry_auth = match &credential {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let mut remote = Remote {
            client,
            http,
            base,
            authorization: None,
            credential,
            registry: contacted,
            origin,
        };
        // An identity token is exchanged here (oci-client only sends user names and passwords to token
        // servers); the access token is then handed to oci-client as a bearer token for the blob requests.
        let registry_auth = match &remote.credential {
            Some(c) if c.is_identity_token() => {
                RegistryAuth::Bearer(remote.exchange_identity_token(&c.password, opts).await?)
            }
            _ => registry_auth,
        };
        // Authenticate first: a refused password must be reported as that, not later as "not authorized".
        let token = remote
            .client
            .auth(&remote.base, &registry_auth, RegistryOperation::Pull)
            .await
            .map_err(|e| remote.auth_error(e))?;
        remote.authorization = match (token, &remote.credential) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Some(c)) => {
                use base64::Engine as _;
                let pair = format!("{}:{}", c.username, c.password);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, None) => None,
        };
        Ok(remote)
    }

    /// The distribution spec's OAuth2 token flow: the bearer challenge of `/v2/` names the token server (realm)
    /// and service; POST `grant_type=refresh_token` there, with the refresh token, service, pull scope and client
    /// id; its `access_token` is the bearer token. The refresh token is a secret: it is sent only over HTTPS, or
    /// plain HTTP to a host that may be spoken to that way (loopback, `--insecure-registry`).
    async fn exchange_identity_token(
        &self,
        refresh_token: &str,
        opts: &PullOptions<'_>,
    ) -> Result<String, PullError> {
        let refused = |detail: String| PullError::IdentityTokenRefused {
            registry: self.registry.clone(),
            detail,
        };
        let url = format!("{}/v2/", self.origin);
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer_challenge);
        let _ = read_bounded(&mut response, 4096).await;
        let Some(challenge) = challenge else {
            return Err(refused(
                "the registry does not ask for bearer tokens (no `WWW-Authenticate: Bearer` challenge at /v2/), \
                 so there is nowhere to exchange it"
                    .to_owned(),
            ));
        };
        let realm = reqwest::Url::parse(&challenge.realm).map_err(|e| {
            refused(format!(
                "its token server `{}` is not a URL: {e}",
                challenge.realm
            ))
        })?;
        if !token_realm_is_safe(&realm, &opts.insecure) {
            return Err(refused(format!(
                "its token server `{realm}` is not HTTPS; the token is not sent there"
            )));
        }
        let scope = format!("repository:{}:pull", self.base.repository());
        let mut fields = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("scope", scope.as_str()),
        ];
        if let Some(service) = &challenge.service {
            fields.push(("service", service.as_str()));
        }
        let mut response = self
            .http
            .post(realm.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_encode(&fields))
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let body = read_bounded(&mut response, MAX_TOKEN_RESPONSE)
            .await
            .unwrap_or_default();
        if status != 200 {
            return Err(refused(format!(
                "its token server answered HTTP {status}: {}",
                clip(&String::from_utf8_lossy(&body))
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            refused(format!(
                "its token server's answer is not the JSON expected: {e}"
            ))
        })?;
        answer
            .access_token
            .or(answer.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused("its token server's answer has no `access_token`".to_owned()))
    }

    fn auth_error(&self, e: OciDistributionError) -> PullError {
        match e {
            OciDistributionError::AuthenticationFailure(detail) => match &self.credential {
                Some(c) => PullError::WrongCredentials {
                    registry: self.registry.clone(),
                    username: c.username.clone(),
                    detail: clip(&detail),
                },
                None => PullError::AuthenticationRequired {
                    registry: self.registry.clone(),
                    repository: self.base.repository().to_owned(),
                },
            },
            OciDistributionError::RequestError(e) => self.transport(e),
            other => PullError::Client {
                registry: self.registry.clone(),
                source: boxed(other),
            },
        }
    }

    fn status_error(&self, status: u16, what: String, body: &[u8]) -> PullError {
        match status {
            401 => match &self.credential {
                Some(c) => PullError::WrongCredentials {
                    registry: self.registry.clone(),
                    username: c.username.clone(),
                    detail: clip(&String::from_utf8_lossy(body)),
                },
                None => PullError::AuthenticationRequired {
                    registry: self.registry.clone(),
                    repository: self.base.repository().to_owned(),
                },
            },
            403 => PullError::Denied {
                registry: self.registry.clone(),
                repository: self.base.repository().to_owned(),
            },
            404 => PullError::NotFound { what },
            status => PullError::RegistryStatus {
                registry: self.registry.clone(),
                status,
                what,
                message: clip(&String::from_utf8_lossy(body)),
            },
        }
    }

    /// GET a manifest or index by tag or digest, reading at most `limit` bytes. Returns the body, the
    /// `Content-Type` and the `Docker-Content-Digest` header.
    pub(crate) async fn fetch_manifest(
        &self,
        tag_or_digest: &str,
        limit: u64,
    ) -> Result<Fetched, PullError> {
        let url = format!(
            "{}/v2/{}/manifests/{tag_or_digest}",
            self.origin,
            self.base.repository()
        );
        let what = format!(
            "{}/{}{}{tag_or_digest}",
            self.registry,
            self.base.repository(),
            if tag_or_digest.contains(':') {
                "@"
            } else {
                ":"
            }
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, ACCEPTED_MANIFESTS.join(", "));
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = read_bounded(&mut response, 4096).await.unwrap_or_default();
            return Err(self.status_error(status, what, &body));
        }
        self.read_document(response, "image manifest or index", what, limit)
            .await
    }

    /// The body of a 200 response (at most `limit` bytes, checked against `Content-Length` first and while
    /// reading) with its `Content-Type` and `Docker-Content-Digest`.
    async fn read_document(
        &self,
        mut response: reqwest::Response,
        kind: &'static str,
        what: String,
        limit: u64,
    ) -> Result<Fetched, PullError> {
        let too_large = |name: String| PullError::TooLarge {
            what: kind,
            name,
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large(what));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type");
        let digest_header = header("docker-content-digest");
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large(what));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            body,
            content_type,
            digest_header,
        })
    }

    /// GET `/v2/<repository>/<path>` with this connection's authorization, reading at most `limit` bytes.
    /// `Ok(None)` for 404 (and for the statuses registries without the referrers API answer with: 400, 405, 406).
    pub(crate) async fn get_v2(
        &self,
        path: &str,
        accept: &str,
        limit: u64,
    ) -> Result<Option<Fetched>, PullError> {
        let url = format!("{}/v2/{}/{path}", self.origin, self.base.repository());
        let what = format!("{}/{}/{path}", self.registry, self.base.repository());
        self.get_url(&url, accept, self.authorization.as_deref(), limit, what)
            .await
    }

    /// GET `url` (any host: the authorization given is sent only to it) through this connection's HTTP client and
    /// proxies, reading at most `limit` bytes. `Ok(None)` for 404, 400, 405 and 406.
    pub(crate) async fn get_url(
        &self,
        url: &str,
        accept: &str,
        authorization: Option<&str>,
        limit: u64,
        what: String,
    ) -> Result<Option<Fetched>, PullError> {
        let mut request = self.http.get(url).header(reqwest::header::ACCEPT, accept);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if matches!(status, 400 | 404 | 405 | 406) {
            return Ok(None);
        }
        if status != 200 {
            let body = read_bounded(&mut response, 4096).await.unwrap_or_default();
            return Err(self.status_error(status, what, &body));
        }
        self.read_document(response, "evidence document", what, limit)
            .await
            .map(Some)
    }

    /// A small blob, in memory, checked against its digest. `Ok(None)` when the registry does not have it.
    pub(crate) async fn fetch_small_blob(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, PullError> {
        let Some(fetched) = self
            .get_v2(&format!("blobs/{digest}"), "*/*", limit)
            .await?
        else {
            return Ok(None);
        };
        let actual = Digest::of_bytes(&fetched.body);
        if &actual != digest {
            return Err(PullError::Digest {
                what: "evidence blob",
                source: DigestError::Mismatch {
                    expected: digest.clone(),
                    actual,
                },
            });
        }
        Ok(Some(fetched.body))
    }

    fn transport(&self, e: reqwest::Error) -> PullError {
        if is_certificate_error(&e) {
            PullError::UntrustedCertificate {
                registry: self.registry.clone(),
                origin: self.origin.clone(),
                source: boxed(e),
            }
        } else if e.is_connect() {
            PullError::Unreachable {
                registry: self.registry.clone(),
                origin: self.origin.clone(),
                source: boxed(e),
            }
        } else {
            PullError::Transfer {
                registry: self.registry.clone(),
                source: boxed(e),
            }
        }
    }

    /// Make the blob present in `store`: nothing to do if it is already there; else wait for any other pull of
    /// it, then stream it into a temporary file while counting and hashing, and rename it into place only when
    /// exactly `size` bytes with the right digest arrived. Returns whether it was downloaded.
    pub(crate) async fn fetch_blob(
        &self,
        store: &Store,
        blob: &LayerBlob,
        role: &'static str,
        observer: Option<&dyn PullObserver>,
    ) -> Result<bool, PullError> {
        self.fetch_blob_feeding(store, blob, role, observer, None)
            .await
    }

    /// [`Remote::fetch_blob`], telling `feed` (with this blob's layer index) where the blob is as it arrives, so
    /// that the unpacker can follow it; see [`super::stream`]. Gives up with [`PullError::Abandoned`] when the
    /// feed says to stop.
    pub(crate) async fn fetch_blob_feeding(
        &self,
        store: &Store,
        blob: &LayerBlob,
        role: &'static str,
        observer: Option<&dyn PullObserver>,
        feed: Option<(&Feed, usize)>,
    ) -> Result<bool, PullError> {
        // Whatever way this ends before the blob is committed (an error, or this future dropped), the layer's
        // reader must learn that it failed.
        let mut guard = FeedGuard { feed, done: false };
        let stop = || feed.is_some_and(|(f, i)| f.should_stop(i));
        if stop() {
            return Err(PullError::Abandoned);
        }
        if store.has_blob(&blob.digest, blob.size)? {
            guard.finish(|f, i| f.present(i));
            return Ok(false);
        }
        let lock_store = store.clone();
        let lock_digest = blob.digest.clone();
        let _lock = tokio::task::spawn_blocking(move || lock_store.lock_blob(&lock_digest))
            .await
            .map_err(|_| PullError::Internal("the blob lock task failed"))??;
        if store.has_blob(&blob.digest, blob.size)? {
            guard.finish(|f, i| f.present(i));
            return Ok(false);
        }
        if stop() {
            return Err(PullError::Abandoned);
        }
        let mut temp = store.temp_blob()?;
        let digest_text = blob.digest.to_string();
        // A digest string, not the descriptor: its `urls` (foreign layers) are never followed.
        let mut stream = self
            .client
            .pull_blob_stream(&self.base, digest_text.as_str())
            .await
            .map_err(|e| self.blob_error(e, &blob.digest, role))?;
        if let Some((f, i)) = feed {
            let reader = temp.as_file().try_clone().map_err(|source| PullError::Io {
                path: temp.path().to_owned(),
                source,
            })?;
            f.streaming(i, reader);
        }
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        if let Some(o) = observer {
            o.blob_started(&blob.digest, blob.size);
        }
        let digest_error = |source| PullError::Digest { what: role, source };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    // oci-client fails the last read when the digest is wrong; say so in our words.
                    if received == blob.size {
                        let actual = digest_of(hasher.clone());
                        if actual != blob.digest {
                            return Err(digest_error(DigestError::Mismatch {
                                expected: blob.digest.clone(),
                                actual,
                            }));
                        }
                    }
                    return Err(PullError::Transfer {
                        registry: self.registry.clone(),
                        source: boxed(e),
                    });
                }
            };
            received += chunk.len() as u64;
            if received > blob.size {
                return Err(digest_error(DigestError::TooLong {
                    digest: blob.digest.clone(),
                    expected: blob.size,
                }));
            }
            hasher.update(&chunk);
            temp.write_all(&chunk).map_err(|source| PullError::Io {
                path: temp.path().to_owned(),
                source,
            })?;
            if let Some((f, i)) = feed {
                if f.should_stop(i) {
                    return Err(PullError::Abandoned);
                }
                f.written(i, received);
            }
            if let Some(o) = observer {
                o.blob_progress(&blob.digest, received);
            }
        }
        if received != blob.size {
            return Err(digest_error(DigestError::SizeMismatch {
                digest: blob.digest.clone(),
                expected: blob.size,
                actual: received,
            }));
        }
        let actual = digest_of(hasher);
        if actual != blob.digest {
            return Err(digest_error(DigestError::Mismatch {
                expected: blob.digest.clone(),
                actual,
            }));
        }
        store.commit_blob(temp, &blob.digest)?;
        guard.finish(|f, i| f.verified(i));
        if let Some(o) = observer {
            o.blob_finished(&blob.digest);
        }
        Ok(true)
    }

    fn blob_error(
        &self,
        e: OciDistributionError,
        digest: &Digest,
        role: &'static str,
    ) -> PullError {
        let what = format!("{role} {digest}");
        match e {
            OciDistributionError::UnauthorizedError { .. } => self.status_error(401, what, b""),
            OciDistributionError::ServerError { code, message, .. } => {
                self.status_error(code, what, message.as_bytes())
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}", e.code))
                    .collect();
                let message = codes.join(", ");
                let status = if codes.iter().any(|c| c.contains("Unknown")) {
                    404
                } else if codes.iter().any(|c| c.contains("Denied")) {
                    403
                } else {
                    400
                };
                self.status_error(status, what, message.as_bytes())
            }
            OciDistributionError::RequestError(e) => self.transport(e),
            other => PullError::Client {
                registry: self.registry.clone(),
                source: boxed(other),
            },
        }
    }
}

/// The `client_id` sent to token servers with a refresh token.
const CLIENT_ID: &str = "thv-sandbox";
/// Largest token-server answer read.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;

/// A `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

/// Parses a bearer challenge (`Bearer` then comma-separated `key="value"` or `key=token` parameters); `None` for
/// another scheme or without a realm.
fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service) = (None, None);
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string; `\x` stands for x.
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
        rest = next;
    }
    Some(BearerChallenge {
        realm: realm.filter(|r| !r.is_empty())?,
        service,
    })
}

/// `application/x-www-form-urlencoded` of `fields` (everything but unreserved characters percent-encoded).
fn form_encode(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Marks the layer failed in its feed unless [`FeedGuard::finish`]ed.
struct FeedGuard<'a> {
    feed: Option<(&'a Feed, usize)>,
    done: bool,
}

impl FeedGuard<'_> {
    fn finish(&mut self, report: impl FnOnce(&Feed, usize)) {
        if let Some((f, i)) = self.feed {
            report(f, i);
        }
        self.done = true;
    }
}

impl Drop for FeedGuard<'_> {
    fn drop(&mut self) {
        if let (false, Some((f, i))) = (self.done, self.feed) {
            f.failed(i);
        }
    }
}

/// A fetched manifest or index.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: Option<String>,
    pub(crate) digest_header: Option<String>,
}

fn digest_of(hasher: Sha256) -> Digest {
    format!("sha256:{}", hex::encode(hasher.finalize()))
        .parse()
        .expect("sha256 output is a valid digest")
}

async fn read_bounded(response: &mut reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    Some(body)
}

fn clip(s: &str) -> String {
    let s = s.trim();
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_go_only_to_https_or_loopback_or_listed_token_servers() {
        let safe = |url: &str, insecure: &[&str]| {
            let insecure: Vec<String> = insecure.iter().map(|s| (*s).to_owned()).collect();
            token_realm_is_safe(&reqwest::Url::parse(url).unwrap(), &insecure)
        };
        assert!(safe("https://auth.docker.io/token", &[]));
        assert!(safe("https://10.0.0.1:8443/token", &[]));
        assert!(safe("http://127.0.0.1:5001/token", &[]));
        assert!(safe("http://[::1]:5001/token", &[]));
        assert!(safe("http://localhost/token", &[]));
        assert!(!safe("http://auth.docker.io/token", &[]));
        assert!(!safe("http://10.0.0.1:5001/token", &[]));
        assert!(!safe("http://localhost.evil.example/token", &[]));
        assert!(safe("http://reg.lan:5001/token", &["reg.lan"]));
        assert!(!safe("http://reg.lan:5001/token", &["reg.lan:5000"]));
        assert!(!safe("ftp://127.0.0.1/token", &[]));
        assert!(!safe("file:///etc/passwd", &[]));
    }

    #[test]
    fn plain_http_for_loopback_and_listed_hosts_only() {
        let none: Vec<String> = Vec::new();
        assert!(plain_http_allowed("localhost:5000", &none));
        assert!(plain_http_allowed("localhost", &none));
        assert!(plain_http_allowed("127.0.0.1:5000", &none));
        assert!(plain_http_allowed("127.3.2.1", &none));
        assert!(plain_http_allowed("[::1]:5000", &none));
        assert!(!plain_http_allowed("ghcr.io", &none));
        assert!(!plain_http_allowed("10.0.0.1:5000", &none));
        assert!(!plain_http_allowed("localhost.evil.com:5000", &none));
        let listed = vec!["reg.lan:5000".to_owned(), "other.lan".to_owned()];
        assert!(plain_http_allowed("reg.lan:5000", &listed));
        assert!(!plain_http_allowed("reg.lan:5001", &listed));
        assert!(!plain_http_allowed("reg.lan", &listed));
        assert!(plain_http_allowed("other.lan:1234", &listed));
        assert!(plain_http_allowed("other.lan", &listed));
    }

    #[test]
    fn ca_files_must_hold_pem_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = tmp.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let none = write("none.pem", "just text\n");
        let err = read_ca_certs(&[none]).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let cut = write("cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let err = read_ca_certs(&[cut]).unwrap_err().to_string();
        assert!(err.contains("no END line"), "{err}");
        let garbage = write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        assert!(read_ca_certs(&[garbage]).is_err());
        let err = read_ca_certs(&[tmp.path().join("absent.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.pem"), "{err}");
        assert!(read_ca_certs(&[]).unwrap().is_empty());
    }

    #[test]
    fn bearer_challenges_are_parsed() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#
            ),
            Some(BearerChallenge {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
            })
        );
        assert_eq!(
            parse_bearer_challenge(r#"bearer service=svc, realm="http://127.0.0.1:1/t\"x""#),
            Some(BearerChallenge {
                realm: "http://127.0.0.1:1/t\"x".into(),
                service: Some("svc".into()),
            })
        );
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="x""#), None);
        assert_eq!(
            parse_bearer_challenge(r#"Bearer realm="unterminated"#),
            None
        );
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            form_encode(&[
                ("a", "x y&z=1"),
                ("scope", "repository:t/x:pull"),
                ("k", "é~")
            ]),
            "a=x%20y%26z%3D1&scope=repository%3At%2Fx%3Apull&k=%C3%A9~"
        );
    }

    #[test]
    fn mirrors_replace_the_host_only_for_their_registry() {
        let mirrors = vec![("ghcr.io".to_owned(), "127.0.0.1:5000".to_owned())];
        assert_eq!(mirror_for("ghcr.io", &mirrors), "127.0.0.1:5000");
        assert_eq!(mirror_for("docker.io", &mirrors), "docker.io");
    }
}
