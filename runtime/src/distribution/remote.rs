//! Talking to one registry: authentication, manifests (bounded), blobs (streamed, counted, hashed, committed
//! atomically).
//!
//! Every request is made here with one reqwest client (oci-client is used only to name the registry host): the
//! `/v2/` probe, the token exchange, manifests, blobs and evidence. Every body is read with a bound (documents by
//! their caps, token answers [`MAX_TOKEN_RESPONSE`], error answers [`MAX_ERROR_BODY`]); documents (the probe,
//! token answers, manifests, configs, evidence) must arrive whole within [`TransferLimits::document_deadline`],
//! and blobs at [`TransferLimits::min_blob_rate`] or faster, averaged over [`TransferLimits::rate_window`].
//!
//! Credentials (a password, or an identity token) are sent only to the registry contacted and to the token server
//! its bearer challenge names, and to that one only under [`token_realm_is_safe`]: over HTTPS, or over plain HTTP
//! when both the registry and the token server may be spoken to that way (loopback, `--insecure-registry`).
//! Redirects are followed (at most [`MAX_REDIRECTS`]) only to HTTPS, or to plain HTTP on such hosts; reqwest
//! drops the `Authorization` header on a redirect to another host or port.

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::auth::{self, Credential};
use super::document::{LayerBlob, ACCEPTED_MANIFESTS};
use super::store::Store;
use super::stream::Feed;
use super::{PullError, PullOptions, SlowReason};
use crate::image::digest::{Digest, DigestError};
use crate::image::reference::{split_host_port, Reference};
use crate::report::{Event, Reporter};

const USER_AGENT: &str = concat!("thv-sandbox/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A registry that sends nothing for this long is given up on.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Times a request is sent again after a 429, 500, 502, 503 or 504 answer ([`Remote::send`]).
const RETRIES: u32 = 3;
/// The first pause before sending again when the registry did not say how long; doubled each time.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest `Retry-After` waited for; a registry asking for more gets its error reported at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A `Retry-After` header in seconds (the HTTP-date form is read as "now": registries send seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if v.is_empty() {
        return None;
    }
    match v.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) if v.bytes().all(|b| b.is_ascii_digit()) => Some(Duration::MAX),
        Err(_) => Some(Duration::ZERO),
    }
}

/// Redirects followed for one request.
pub(crate) const MAX_REDIRECTS: usize = 10;
/// Largest error answer read (for the message).
pub(crate) const MAX_ERROR_BODY: usize = 4096;

/// Time limits of registry transfers. The defaults are what thv-sandbox uses; tests lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// A document (the `/v2/` probe, a token-server answer, a manifest or index, a config, an evidence document)
    /// must arrive whole within this, from the request on.
    pub document_deadline: Duration,
    /// A blob download fails when fewer than this many bytes per second arrived over a [`Self::rate_window`].
    pub min_blob_rate: u64,
    /// The window the blob rate is averaged over.
    pub rate_window: Duration,
    /// Evidence discovery, all sources and digests together, stops after this.
    pub discovery_deadline: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            document_deadline: Duration::from_secs(60),
            min_blob_rate: 1024,
            rate_window: Duration::from_secs(30),
            discovery_deadline: Duration::from_secs(120),
        }
    }
}

/// A duration for messages: `60 s`, `1.5 s`.
pub(crate) fn show(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// Whether `host` (`host[:port]`) may be spoken to over plain HTTP: loopback always, others when listed in
/// `insecure` (an entry without port allows every port of that host). Loopback is decided by the name as
/// written (`localhost`, an IP literal), never by resolving it.
pub(crate) fn plain_http_allowed(host: &str, insecure: &[String]) -> bool {
    let (name, port) = split_host_port(host);
    let loopback = name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure.iter().any(|entry| {
            let (entry_name, entry_port) = split_host_port(entry);
            entry_name.eq_ignore_ascii_case(name) && (entry_port.is_none() || entry_port == port)
        })
}

/// `host[:port]` of a URL, as [`plain_http_allowed`] takes it.
fn url_host(url: &reqwest::Url) -> Option<String> {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => Some(format!("{host}:{port}")),
        (Some(host), None) => Some(host.to_owned()),
        (None, _) => None,
    }
}

/// The one rule for where credentials (a password, an identity token) may go besides the registry: to the token
/// server its challenge names over HTTPS; over plain HTTP only when the registry itself is spoken to over plain
/// HTTP (`registry_plain`: loopback, `--insecure-registry`) and the token server's host may be too. An HTTPS
/// registry never sends credentials to a plain-HTTP token server, whatever its name or address.
pub(crate) fn token_realm_is_safe(
    realm: &reqwest::Url,
    registry_plain: bool,
    insecure: &[String],
) -> bool {
    let Some(host) = url_host(realm) else {
        return false;
    };
    realm.scheme() == "https"
        || (realm.scheme() == "http" && registry_plain && plain_http_allowed(&host, insecure))
}

/// The redirect rule: at most [`MAX_REDIRECTS`], to HTTPS, or to plain HTTP on a host that may be spoken to that
/// way; never another scheme.
fn redirect_policy(insecure: Vec<String>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("too many redirects (more than {MAX_REDIRECTS})"));
        }
        let url = attempt.url();
        let allowed = match url.scheme() {
            "https" => true,
            "http" => url_host(url).is_some_and(|h| plain_http_allowed(&h, &insecure)),
            _ => false,
        };
        if allowed {
            attempt.follow()
        } else {
            let refused = format!(
                "redirect to {} refused: only to HTTPS, or to plain HTTP on loopback or --insecure-registry hosts",
                clip(url.as_str())
            );
            attempt.error(refused)
        }
    })
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
    http: reqwest::Client,
    /// registry (or mirror) + repository; `resolve_registry` names the API host (Docker Hub's).
    base: oci_client::Reference,
    /// The `Authorization` header for requests made here.
    authorization: Option<String>,
    credential: Option<Credential>,
    /// What the user asked for, for messages.
    registry: String,
    /// The `scheme://host` contacted.
    origin: String,
    /// Whether `origin` is plain HTTP.
    plain: bool,
    /// Hosts that may be spoken to over plain HTTP.
    insecure: Vec<String>,
    limits: TransferLimits,
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
        let mut http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(redirect_policy(opts.insecure.clone()));
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

        let mut remote = Remote {
            http,
            base,
            authorization: None,
            credential,
            registry: contacted,
            origin,
            plain,
            insecure: opts.insecure.clone(),
            limits: opts.limits,
        };
        // Authenticate first: a refused password must be reported as that, not later as "not authorized".
        remote.authorization = remote.authenticate().await?;
        Ok(remote)
    }

    /// The time limits of this connection.
    pub(crate) fn limits(&self) -> &TransferLimits {
        &self.limits
    }

    /// `fut` (a request and the read of its answer), given up on after the document deadline.
    async fn within<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl std::future::Future<Output = Result<T, PullError>>,
    ) -> Result<T, PullError> {
        match tokio::time::timeout(self.limits.document_deadline, fut).await {
            Ok(result) => result,
            Err(_) => Err(PullError::TooSlow {
                registry: self.registry.clone(),
                what: what(),
                reason: SlowReason::Deadline {
                    limit: self.limits.document_deadline,
                },
            }),
        }
    }

    /// The `Authorization` header for this registry: the `/v2/` probe tells how it authenticates. No challenge,
    /// or a basic one: the password itself (to the registry only). A bearer challenge: a token from its token
    /// server (the realm), asked for with the password, exchanged for an identity token, or anonymously.
    async fn authenticate(&self) -> Result<Option<String>, PullError> {
        let url = format!("{}/v2/", self.origin);
        let header = self
            .within(|| format!("the API root {url}"), async {
                let mut response = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| self.transport(e))?;
                let header: Vec<String> = response
                    .headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect();
                let _ = read_prefix(&mut response, MAX_ERROR_BODY).await;
                Ok(header)
            })
            .await?;
        let challenge = header.iter().find_map(|h| parse_bearer_challenge(h));
        let Some(challenge) = challenge else {
            return match &self.credential {
                Some(c) if c.is_identity_token() => Err(PullError::IdentityTokenRefused {
                    registry: self.registry.clone(),
                    detail: "the registry does not ask for bearer tokens (no `WWW-Authenticate: Bearer` \
                             challenge at /v2/), so there is nowhere to exchange it"
                        .to_owned(),
                }),
                Some(c) => Ok(Some(basic_authorization(c))),
                None => Ok(None),
            };
        };
        let realm = reqwest::Url::parse(&challenge.realm).map_err(|e| PullError::TokenServer {
            registry: self.registry.clone(),
            realm: clip(&challenge.realm),
            detail: format!("it is not a URL: {e}"),
        })?;
        if !matches!(realm.scheme(), "http" | "https") || realm.host_str().is_none() {
            return Err(PullError::TokenServer {
                registry: self.registry.clone(),
                realm: clip(realm.as_str()),
                detail: "only http and https token servers are used".to_owned(),
            });
        }
        if self.credential.is_some() && !token_realm_is_safe(&realm, self.plain, &self.insecure) {
            return Err(PullError::InsecureTokenServer {
                registry: self.registry.clone(),
                realm: clip(realm.as_str()),
            });
        }
        if realm.host_str()
            != reqwest::Url::parse(&self.origin)
                .ok()
                .as_ref()
                .and_then(|u| u.host_str())
        {
            tracing::debug!(
                "{}: the token server is {realm}, another host than the registry",
                self.registry
            );
        }
        let scope = format!("repository:{}:pull", self.base.repository());
        let request = match &self.credential {
            Some(c) if c.is_identity_token() => {
                // The distribution spec's OAuth2 flow: POST the refresh token for an access token.
                let mut fields = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", c.password.as_str()),
                    ("client_id", CLIENT_ID),
                    ("scope", scope.as_str()),
                ];
                if let Some(service) = &challenge.service {
                    fields.push(("service", service.as_str()));
                }
                self.http
                    .post(realm.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form_encode(&fields))
            }
            credential => {
                // The Docker token protocol: GET with the scope and service, with the password if there is one.
                let mut query = vec![("scope", scope.as_str())];
                if let Some(service) = &challenge.service {
                    query.push(("service", service.as_str()));
                }
                let mut request = self.http.get(realm.clone()).query(&query);
                if let Some(c) = credential {
                    request =
                        request.header(reqwest::header::AUTHORIZATION, basic_authorization(c));
                }
                request
            }
        };
        let token_server = |detail: String| PullError::TokenServer {
            registry: self.registry.clone(),
            realm: clip(realm.as_str()),
            detail,
        };
        let (status, body) = self
            .within(
                || format!("the answer of the token server {}", clip(realm.as_str())),
                async {
                    let mut response = request.send().await.map_err(|e| self.transport(e))?;
                    let status = response.status().as_u16();
                    let body = if status == 200 {
                        read_limited(&mut response, MAX_TOKEN_RESPONSE)
                            .await
                            .map_err(|e| self.transport(e))?
                    } else {
                        Some(read_prefix(&mut response, MAX_ERROR_BODY).await)
                    };
                    Ok((status, body))
                },
            )
            .await?;
        let text = || {
            clip(&String::from_utf8_lossy(
                body.as_deref().unwrap_or_default(),
            ))
        };
        if status != 200 {
            return Err(match &self.credential {
                Some(c) if c.is_identity_token() => PullError::IdentityTokenRefused {
                    registry: self.registry.clone(),
                    detail: format!("its token server answered HTTP {status}: {}", text()),
                },
                Some(c) if matches!(status, 401 | 403) => PullError::WrongCredentials {
                    registry: self.registry.clone(),
                    username: c.username.clone(),
                    detail: text(),
                },
                None if matches!(status, 401 | 403) => PullError::AuthenticationRequired {
                    registry: self.registry.clone(),
                    repository: self.base.repository().to_owned(),
                },
                _ => token_server(format!("it answered HTTP {status}: {}", text())),
            });
        }
        let Some(body) = body else {
            return Err(token_server(format!(
                "its answer is larger than {MAX_TOKEN_RESPONSE} bytes"
            )));
        };
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| token_server(format!("its answer is not the JSON expected: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                token_server("its answer has no `token` or `access_token`".to_owned())
            })?;
        if token.bytes().any(|b| b.is_ascii_control()) {
            return Err(token_server("its token has control characters".to_owned()));
        }
        Ok(Some(format!("Bearer {token}")))
    }

    /// Sends a GET, and sends it again when the registry says it is busy or failed for a moment: 429 and 503
    /// after the pause its `Retry-After` asks for (at most [`MAX_RETRY_AFTER`]; a longer one is not waited for),
    /// 500, 502 and 504 (and a 429/503 without `Retry-After`) after a short, growing pause. At most [`RETRIES`]
    /// times; then the last answer is the caller's to report. The caller's deadline covers the pauses too.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, PullError> {
        let mut request = request;
        let mut attempt = 0;
        loop {
            let again = request.try_clone();
            let response = request.send().await.map_err(|e| self.transport(e))?;
            let status = response.status().as_u16();
            let (Some(again), true) = (again, attempt < RETRIES) else {
                return Ok(response);
            };
            let pause = match status {
                429 | 503 => match retry_after(response.headers()) {
                    Some(asked) if asked > MAX_RETRY_AFTER => return Ok(response),
                    Some(asked) => asked,
                    None => RETRY_PAUSE * (1 << attempt),
                },
                500 | 502 | 504 => RETRY_PAUSE * (1 << attempt),
                _ => return Ok(response),
            };
            tracing::info!(
                "{} answered HTTP {status} for {}; trying again in {}",
                self.registry,
                response.url().path(),
                show(pause)
            );
            drop(response);
            tokio::time::sleep(pause).await;
            request = again;
            attempt += 1;
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
    ) -> Result<FetchedDocument, PullError> {
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
        let label = format!("image manifest or index {what}");
        self.within(|| label, async {
            let mut response = self.send(request).await?;
            let status = response.status().as_u16();
            if status != 200 {
                let body = error_body(&mut response).await;
                return Err(self.status_error(status, what, &body));
            }
            self.read_document(response, "image manifest or index", what, limit)
                .await
        })
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
    ) -> Result<FetchedDocument, PullError> {
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
        Ok(FetchedDocument {
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
    ) -> Result<Option<FetchedDocument>, PullError> {
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
    ) -> Result<Option<FetchedDocument>, PullError> {
        let mut request = self.http.get(url).header(reqwest::header::ACCEPT, accept);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let label = format!("evidence document {what}");
        self.within(|| label, async {
            let mut response = self.send(request).await?;
            let status = response.status().as_u16();
            if matches!(status, 400 | 404 | 405 | 406) {
                return Ok(None);
            }
            if status != 200 {
                let body = error_body(&mut response).await;
                return Err(self.status_error(status, what, &body));
            }
            self.read_document(response, "evidence document", what, limit)
                .await
                .map(Some)
        })
        .await
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
        reporter: Option<&dyn Reporter>,
    ) -> Result<bool, PullError> {
        self.fetch_blob_feeding(store, blob, role, reporter, None)
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
        reporter: Option<&dyn Reporter>,
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
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.origin,
            self.base.repository(),
            blob.digest
        );
        let what = format!("{role} {}", blob.digest);
        let mut request = self.http.get(&url);
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        // The answer's head, and an error answer whole (its first 4 KiB), within the document deadline.
        let mut response = self
            .within(|| what.clone(), async {
                let mut response = self.send(request).await?;
                let status = response.status().as_u16();
                if status != 200 {
                    let body = error_body(&mut response).await;
                    return Err(self.status_error(status, what.clone(), &body));
                }
                Ok(response)
            })
            .await?;
        let digest_error = |source| PullError::Digest { what: role, source };
        if response.content_length().is_some_and(|n| n > blob.size) {
            return Err(digest_error(DigestError::TooLong {
                digest: blob.digest.clone(),
                expected: blob.size,
            }));
        }
        let mut temp = store.temp_blob()?;
        if let Some((f, i)) = feed {
            let reader = temp.as_file().try_clone().map_err(|source| PullError::Io {
                path: temp.path().to_owned(),
                source,
            })?;
            f.streaming(i, reader);
        }
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        if let Some(o) = reporter {
            o.report(Event::BlobStarted {
                digest: &blob.digest,
                size: blob.size,
            });
        }
        // Layers: the minimum rate; the config (a document): also the document deadline.
        let deadline = (role != "layer").then(|| Instant::now() + self.limits.document_deadline);
        let mut pace = Pace::new(self.limits, deadline);
        let too_slow = |reason: SlowReason| PullError::TooSlow {
            registry: self.registry.clone(),
            what: what.clone(),
            reason,
        };
        loop {
            let next = tokio::time::timeout_at(pace.wake_at().into(), response.chunk()).await;
            let chunk = match next {
                Err(_) => {
                    pace.check(0, Instant::now()).map_err(too_slow)?;
                    continue;
                }
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(PullError::TransferCut {
                        registry: self.registry.clone(),
                        what: what.clone(),
                        received,
                        size: blob.size,
                        source: boxed(e),
                    })
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
            if let Some(o) = reporter {
                o.report(Event::BlobProgress {
                    digest: &blob.digest,
                    received,
                });
            }
            pace.check(chunk.len() as u64, Instant::now())
                .map_err(too_slow)?;
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
        if let Some(o) = reporter {
            o.report(Event::BlobFinished {
                digest: &blob.digest,
            });
        }
        Ok(true)
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

/// The minimum-rate rule of a blob download (and its deadline, for a config): in every window of
/// [`TransferLimits::rate_window`], at least [`TransferLimits::min_blob_rate`] bytes per second on average.
struct Pace {
    limits: TransferLimits,
    deadline: Option<Instant>,
    window_start: Instant,
    window_bytes: u64,
}

impl Pace {
    fn new(limits: TransferLimits, deadline: Option<Instant>) -> Pace {
        Pace {
            limits,
            deadline,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// When to look again if nothing arrives.
    fn wake_at(&self) -> Instant {
        let window_end = self.window_start + self.limits.rate_window;
        self.deadline.map_or(window_end, |d| d.min(window_end))
    }

    /// `n` more bytes arrived (or none, when woken): `Err(why)` when the download is too slow.
    fn check(&mut self, n: u64, now: Instant) -> Result<(), SlowReason> {
        self.window_bytes += n;
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(SlowReason::Deadline {
                limit: self.limits.document_deadline,
            });
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        // Timers fire at or just after their instant; a millisecond early still counts as the window's end.
        if elapsed + Duration::from_millis(2) < self.limits.rate_window {
            return Ok(());
        }
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = self.window_bytes as f64 / secs;
        if rate < self.limits.min_blob_rate as f64 {
            return Err(SlowReason::BelowRate {
                rate,
                over: elapsed,
                min: self.limits.min_blob_rate,
            });
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }
}

/// A fetched manifest or index.
#[derive(Debug)]
pub(crate) struct FetchedDocument {
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: Option<String>,
    pub(crate) digest_header: Option<String>,
}

fn digest_of(hasher: Sha256) -> Digest {
    format!("sha256:{}", hex::encode(hasher.finalize()))
        .parse()
        .expect("sha256 output is a valid digest")
}

/// The body, read to at most `limit` bytes: `None` when it is longer (said by `Content-Length` or found while
/// reading; the rest is never read).
async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// What to say about an error answer: for a redirect that was not followed, where it went; else the first
/// [`MAX_ERROR_BODY`] bytes of the body.
async fn error_body(response: &mut reqwest::Response) -> Vec<u8> {
    if response.status().is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return format!(
            "a redirect to `{}`, not followed: only to HTTPS, or to plain HTTP on loopback or \
             --insecure-registry hosts",
            clip(&location)
        )
        .into_bytes();
    }
    read_prefix(response, MAX_ERROR_BODY).await
}

/// The first `limit` bytes of the body, at most (an error answer, for the message); the rest is never read.
async fn read_prefix(response: &mut reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    body
}

fn basic_authorization(c: &Credential) -> String {
    use base64::Engine as _;
    let pair = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn clip(s: &str) -> String {
    let s = s.trim();
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_https_or_loopback_or_listed_token_servers() {
        // A plain-HTTP (loopback or listed) registry.
        let safe = |url: &str, insecure: &[&str]| {
            let insecure: Vec<String> = insecure.iter().map(|s| (*s).to_owned()).collect();
            token_realm_is_safe(&reqwest::Url::parse(url).unwrap(), true, &insecure)
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
        // An HTTPS registry: HTTPS token servers only, loopback or listed or not.
        let from_https = |url: &str, insecure: &[&str]| {
            let insecure: Vec<String> = insecure.iter().map(|s| (*s).to_owned()).collect();
            token_realm_is_safe(&reqwest::Url::parse(url).unwrap(), false, &insecure)
        };
        assert!(from_https("https://auth.docker.io/token", &[]));
        assert!(!from_https("http://127.0.0.1:5001/token", &[]));
        assert!(!from_https("http://localhost/token", &[]));
        assert!(!from_https("http://reg.lan:5001/token", &["reg.lan"]));
    }

    #[test]
    fn blobs_slower_than_the_minimum_rate_over_a_window_fail() {
        let limits = TransferLimits {
            min_blob_rate: 100,
            rate_window: Duration::from_secs(10),
            ..TransferLimits::default()
        };
        let t0 = Instant::now();
        let mut pace = Pace::new(limits, None);
        pace.window_start = t0;
        // 500 bytes in the first 5 s: the window is not over.
        assert!(pace.check(500, t0 + Duration::from_secs(5)).is_ok());
        // 1,000 bytes in 10 s: exactly the minimum; a new window starts.
        assert!(pace.check(500, t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(pace.wake_at(), t0 + Duration::from_secs(20));
        // 999 bytes in the next 10 s: too slow.
        let err = pace.check(999, t0 + Duration::from_secs(20)).unwrap_err();
        assert!(matches!(err, SlowReason::BelowRate { min: 100, .. }));
        // 900 bytes in a window of 10 s: too slow, and the message says by how much.
        let mut pace = Pace::new(limits, None);
        pace.window_start = t0;
        let err = pace.check(900, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "arrived at 90 bytes/s over 10 s, below the minimum of 100 bytes/s"
        );
        // Nothing at all: the wake-up at the window's end fails it.
        let mut pace = Pace::new(limits, None);
        let woken = pace.wake_at();
        assert!(pace.check(0, woken).is_err());
        // A deadline (a config) ends it whatever the rate.
        let mut pace = Pace::new(limits, Some(t0 + Duration::from_secs(3)));
        assert_eq!(pace.wake_at(), t0 + Duration::from_secs(3));
        let err = pace
            .check(1 << 20, t0 + Duration::from_secs(3))
            .unwrap_err();
        assert_eq!(err.to_string(), "did not arrive whole within 60 s");
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
