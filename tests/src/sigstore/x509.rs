//! Keys and X.509 certificates of the test instance: a CA (root and intermediate) issuing Fulcio-like leaf
//! certificates with the GitHub Actions OIDC extensions and an embedded SCT, and a timestamp authority's chain.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use der::asn1::{BitString, Ia5String, ObjectIdentifier, OctetString, UtcTime, Utf8StringRef};
use der::{Decode, Encode};
use sha2::Digest as _;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

/// ecdsa-with-SHA256
pub(crate) const ECDSA_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
/// RFC 6962 embedded SCT list.
const CT_PRECERT_SCTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");

/// An ECDSA P-256 key.
pub struct Key {
    pair: EcdsaKeyPair,
    spki: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("key_id", &hex::encode(self.key_id()))
            .finish()
    }
}

impl Key {
    /// A fresh key.
    pub fn generate() -> Key {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("generate key");
        let spki = pair
            .public_key()
            .as_der()
            .expect("public key DER")
            .as_ref()
            .to_vec();
        Key { pair, spki }
    }

    /// An ASN.1 (DER) ECDSA signature over SHA-256(`message`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .expect("sign")
            .as_ref()
            .to_vec()
    }

    /// The SubjectPublicKeyInfo, DER.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// SHA-256 of the SubjectPublicKeyInfo: the log ID of a log with this key (RFC 6962 and Rekor).
    pub fn key_id(&self) -> [u8; 32] {
        sha2::Sha256::digest(&self.spki).into()
    }

    fn ski(&self) -> Vec<u8> {
        // RFC 5280 method 1 takes SHA-1 of the key bits; any stable 20 bytes serve.
        self.key_id()[..20].to_vec()
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn utc(secs: u64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).expect("UTCTime"))
}

fn ext(oid: ObjectIdentifier, critical: bool, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).expect("extension value"),
    }
}

fn ext_of(oid: ObjectIdentifier, critical: bool, value: &impl Encode) -> Extension {
    ext(oid, critical, value.to_der().expect("encode extension"))
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::new(&bytes).expect("serial")
}

fn sig_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_SHA256,
        parameters: None,
    }
}

pub(crate) fn name(s: &str) -> Name {
    s.parse().expect("distinguished name")
}

/// What a certificate is.
struct Spec<'a> {
    subject: Name,
    issuer: &'a Name,
    key: &'a Key,
    not_before: u64,
    not_after: u64,
    extensions: Vec<Extension>,
}

fn tbs(spec: Spec<'_>) -> TbsCertificate {
    TbsCertificate {
        version: Version::V3,
        serial_number: serial(),
        signature: sig_alg(),
        issuer: spec.issuer.clone(),
        validity: Validity {
            not_before: utc(spec.not_before),
            not_after: utc(spec.not_after),
        },
        subject: spec.subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spec.key.spki())
            .expect("SPKI"),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(spec.extensions),
    }
}

fn sign_tbs(tbs: TbsCertificate, issuer_key: &Key) -> Vec<u8> {
    let tbs_der = tbs.to_der().expect("encode TBS");
    let signature = issuer_key.sign(&tbs_der);
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: sig_alg(),
        signature: BitString::from_bytes(&signature).expect("signature bits"),
    }
    .to_der()
    .expect("encode certificate")
}

/// A certificate authority: a key and its certificate.
#[derive(Debug)]
pub struct Authority {
    /// The key.
    pub key: Key,
    /// The certificate, DER.
    pub cert: Vec<u8>,
    /// Its subject.
    pub subject: Name,
}

/// A self-signed root.
pub fn root_ca(subject: &str, not_before: u64) -> Authority {
    let key = Key::generate();
    let subject = name(subject);
    let spec = Spec {
        subject: subject.clone(),
        issuer: &subject,
        key: &key,
        not_before,
        not_after: not_before + 10 * 365 * 86400,
        extensions: vec![
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.15"),
                true,
                &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            ),
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.19"),
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(1),
                },
            ),
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.14"),
                false,
                &SubjectKeyIdentifier(OctetString::new(key.ski()).unwrap()),
            ),
        ],
    };
    let cert = sign_tbs(tbs(spec), &key);
    Authority { key, cert, subject }
}

fn aki(issuer: &Authority) -> Extension {
    ext_of(
        ObjectIdentifier::new_unwrap("2.5.29.35"),
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(issuer.key.ski()).unwrap()),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )
}

fn ski(key: &Key) -> Extension {
    ext_of(
        ObjectIdentifier::new_unwrap("2.5.29.14"),
        false,
        &SubjectKeyIdentifier(OctetString::new(key.ski()).unwrap()),
    )
}

/// An intermediate CA under `root`, as Fulcio's: code signing only, no further CAs.
pub fn intermediate_ca(root: &Authority, subject: &str, not_before: u64) -> Authority {
    let key = Key::generate();
    let subject = name(subject);
    let spec = Spec {
        subject: subject.clone(),
        issuer: &root.subject,
        key: &key,
        not_before,
        not_after: not_before + 5 * 365 * 86400,
        extensions: vec![
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.15"),
                true,
                &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            ),
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.37"),
                false,
                &ExtendedKeyUsage(vec![CODE_SIGNING]),
            ),
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.19"),
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
            ),
            ski(&key),
            aki(root),
        ],
    };
    let cert = sign_tbs(tbs(spec), &root.key);
    Authority { key, cert, subject }
}

/// A timestamp authority's signing certificate under `root` (critical EKU timeStamping, RFC 3161 §2.3).
pub fn tsa_leaf(root: &Authority, subject: &str, not_before: u64) -> Authority {
    let key = Key::generate();
    let subject = name(subject);
    let spec = Spec {
        subject: subject.clone(),
        issuer: &root.subject,
        key: &key,
        not_before,
        not_after: not_before + 5 * 365 * 86400,
        extensions: vec![
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.15"),
                true,
                &KeyUsage(KeyUsages::DigitalSignature.into()),
            ),
            ext_of(
                ObjectIdentifier::new_unwrap("2.5.29.37"),
                true,
                &ExtendedKeyUsage(vec![TIME_STAMPING]),
            ),
            ski(&key),
            aki(root),
        ],
    };
    let cert = sign_tbs(tbs(spec), &root.key);
    Authority { key, cert, subject }
}

/// The claims Fulcio writes into a certificate issued for a GitHub Actions OIDC token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's issuer (`https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// `owner/repo` the workflow ran in.
    pub repository: String,
    /// The workflow file that signed, in `workflow_repository` (e.g. `.github/workflows/release.yml`).
    pub workflow_path: String,
    /// The repository holding the workflow file (a reusable workflow lives elsewhere); `None`: `repository`.
    pub workflow_repository: Option<String>,
    /// The ref of the workflow file (`@…` of the SAN); `None`: `git_ref`.
    pub workflow_ref: Option<String>,
    /// The git ref built (`refs/tags/v1`).
    pub git_ref: String,
    /// The commit built.
    pub sha: String,
    /// The event (`push`, `release`).
    pub trigger: String,
    /// The workflow's display name.
    pub workflow_name: String,
    /// `github-hosted` or `self-hosted`.
    pub runner_environment: String,
}

impl Identity {
    /// A release workflow of `owner/repo` at `refs/tags/v1.0.0`, on a GitHub-hosted runner.
    pub fn github(repository: &str) -> Identity {
        Identity {
            issuer: "https://token.actions.githubusercontent.com".into(),
            repository: repository.into(),
            workflow_path: ".github/workflows/release.yml".into(),
            workflow_repository: None,
            workflow_ref: None,
            git_ref: "refs/tags/v1.0.0".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            trigger: "push".into(),
            workflow_name: "Release".into(),
            runner_environment: "github-hosted".into(),
        }
    }

    /// The SAN: the URL of the workflow file at its ref.
    pub fn san(&self) -> String {
        format!(
            "https://github.com/{}/{}@{}",
            self.workflow_repository
                .as_deref()
                .unwrap_or(&self.repository),
            self.workflow_path,
            self.workflow_ref.as_deref().unwrap_or(&self.git_ref)
        )
    }

    /// `https://github.com/owner/repo`.
    pub fn repository_uri(&self) -> String {
        format!("https://github.com/{}", self.repository)
    }

    /// The caller's workflow file (`.1.18`): the repository's own workflow at the built ref.
    fn build_config_uri(&self) -> String {
        if self.workflow_repository.is_some() {
            format!(
                "https://github.com/{}/.github/workflows/caller.yml@{}",
                self.repository, self.git_ref
            )
        } else {
            self.san()
        }
    }

    /// Fulcio's extensions for this identity, in its order: the deprecated raw strings (.1.1–.1.6), then the
    /// DER UTF8String claims (.1.8–.1.22).
    fn extensions(&self) -> Vec<Extension> {
        let oid = |n: u32| {
            ObjectIdentifier::new(&format!("1.3.6.1.4.1.57264.1.{n}")).expect("Fulcio OID")
        };
        let raw = |n: u32, v: &str| ext(oid(n), false, v.as_bytes().to_vec());
        let utf8 = |n: u32, v: &str| {
            ext(
                oid(n),
                false,
                Utf8StringRef::new(v).unwrap().to_der().unwrap(),
            )
        };
        let owner = self.repository.split('/').next().unwrap_or("").to_string();
        let run = format!(
            "https://github.com/{}/actions/runs/4242/attempts/1",
            self.repository
        );
        vec![
            raw(1, &self.issuer),
            raw(2, &self.trigger),
            raw(3, &self.sha),
            raw(4, &self.workflow_name),
            raw(5, &self.repository),
            raw(6, &self.git_ref),
            utf8(8, &self.issuer),
            utf8(9, &self.san()),
            utf8(10, &self.sha),
            utf8(11, &self.runner_environment),
            utf8(12, &self.repository_uri()),
            utf8(13, &self.sha),
            utf8(14, &self.git_ref),
            utf8(15, "123456789"),
            utf8(16, &format!("https://github.com/{owner}")),
            utf8(17, "987654"),
            utf8(18, &self.build_config_uri()),
            utf8(19, &self.sha),
            utf8(20, &self.trigger),
            utf8(21, &run),
            utf8(22, "public"),
        ]
    }
}

/// A CT log: signs precertificates (RFC 6962 §3.2).
#[derive(Debug)]
pub struct CtLog {
    /// Its key; the log ID is SHA-256 of its SPKI.
    pub key: Key,
}

impl CtLog {
    /// The SCT for `tbs_without_sct` issued by `issuer_spki`, serialised as one `SerializedSCT` (RFC 6962 §3.3).
    fn sct(&self, tbs_without_sct: &[u8], issuer_spki: &[u8], timestamp_ms: u64) -> Vec<u8> {
        let issuer_key_hash: [u8; 32] = sha2::Sha256::digest(issuer_spki).into();
        // digitally-signed struct: version, signature_type, timestamp, entry_type, PreCert, extensions.
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&timestamp_ms.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
        signed.extend_from_slice(&issuer_key_hash);
        let len = u32::try_from(tbs_without_sct.len()).expect("TBS size");
        signed.extend_from_slice(&len.to_be_bytes()[1..]); // uint24 length
        signed.extend_from_slice(tbs_without_sct);
        signed.extend_from_slice(&0u16.to_be_bytes()); // no extensions
        let signature = self.key.sign(&signed);

        let mut sct = vec![0u8]; // v1
        sct.extend_from_slice(&self.key.key_id());
        sct.extend_from_slice(&timestamp_ms.to_be_bytes());
        sct.extend_from_slice(&0u16.to_be_bytes());
        sct.extend_from_slice(&[4, 3]); // sha256, ecdsa
        sct.extend_from_slice(&u16::try_from(signature.len()).unwrap().to_be_bytes());
        sct.extend_from_slice(&signature);
        sct
    }
}

/// A Fulcio-like leaf: a fresh key and the certificate for it.
#[derive(Debug)]
pub struct Leaf {
    /// The ephemeral signing key.
    pub key: Key,
    /// The certificate, DER.
    pub cert: Vec<u8>,
    /// Validity, seconds since the epoch.
    pub not_before: u64,
    /// Validity end.
    pub not_after: u64,
}

/// Issues a leaf for `identity` valid for ten minutes from `not_before`, signed by `issuer`; with an SCT from
/// `ct` embedded when given (the SCT covers the TBS without the SCT extension and `issuer`'s key hash).
pub fn issue_leaf(
    issuer: &Authority,
    identity: &Identity,
    ct: Option<&CtLog>,
    not_before: u64,
) -> Leaf {
    let key = Key::generate();
    let not_after = not_before + 600;
    let san = SubjectAltName(vec![GeneralName::UniformResourceIdentifier(
        Ia5String::new(&identity.san()).expect("SAN is ASCII"),
    )]);
    let mut extensions = vec![
        ext_of(
            ObjectIdentifier::new_unwrap("2.5.29.15"),
            true,
            &KeyUsage(KeyUsages::DigitalSignature.into()),
        ),
        ext_of(
            ObjectIdentifier::new_unwrap("2.5.29.37"),
            false,
            &ExtendedKeyUsage(vec![CODE_SIGNING]),
        ),
        ski(&key),
        aki(issuer),
        // Fulcio's subject is empty, so the SAN is critical (RFC 5280 §4.2.1.6).
        ext_of(ObjectIdentifier::new_unwrap("2.5.29.17"), true, &san),
    ];
    extensions.extend(identity.extensions());
    let mut tbs = tbs(Spec {
        subject: Name::default(),
        issuer: &issuer.subject,
        key: &key,
        not_before,
        not_after,
        extensions,
    });
    if let Some(ct) = ct {
        let precert = tbs.to_der().expect("encode TBS");
        let sct = ct.sct(&precert, issuer.key.spki(), not_before * 1000);
        // SignedCertificateTimestampList: a u16-length list of u16-length SCTs, as an OCTET STRING.
        let mut list = Vec::new();
        list.extend_from_slice(&u16::try_from(sct.len() + 2).unwrap().to_be_bytes());
        list.extend_from_slice(&u16::try_from(sct.len()).unwrap().to_be_bytes());
        list.extend_from_slice(&sct);
        let value = OctetString::new(list).unwrap().to_der().unwrap();
        tbs.extensions
            .as_mut()
            .expect("extensions")
            .push(ext(CT_PRECERT_SCTS, false, value));
    }
    let cert = sign_tbs(tbs, &issuer.key);
    Leaf {
        key,
        cert,
        not_before,
        not_after,
    }
}

/// PEM of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Parses a DER certificate (for tests of the instance itself).
pub fn parse(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("certificate")
}
