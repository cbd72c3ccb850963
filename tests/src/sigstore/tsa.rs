//! An RFC 3161 timestamp authority: `TimeStampResp` with a CMS SignedData token over a `TSTInfo`, signed
//! attributes (content type, message digest, ESS signing-certificate-v2), as sigstore/timestamp-authority issues.

use std::time::Duration;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{GeneralizedTime, ObjectIdentifier, OctetString, SetOfVec, Uint};
use der::{Any, Decode, Encode, Sequence, Tag};
use sha2::Digest as _;
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use super::x509::{Authority, ECDSA_SHA256};

const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_CT_TSTINFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
/// The policy OID sigstore/timestamp-authority answers with.
const TSA_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.2");

#[derive(Sequence)]
struct MessageImprint {
    hash_algorithm: AlgorithmIdentifierOwned,
    hashed_message: OctetString,
}

#[derive(Sequence)]
struct Accuracy {
    seconds: u32,
}

#[derive(Sequence)]
struct TstInfo {
    version: u8,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Uint,
    gen_time: GeneralizedTime,
    accuracy: Accuracy,
}

#[derive(Sequence)]
struct PkiStatusInfo {
    status: u8,
}

#[derive(Sequence)]
struct TimeStampResp {
    status: PkiStatusInfo,
    time_stamp_token: ContentInfo,
}

#[derive(Sequence)]
struct EssCertIdV2 {
    // hashAlgorithm DEFAULT sha256: omitted.
    cert_hash: OctetString,
}

#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

fn sha256_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: SHA256,
        parameters: None,
    }
}

fn attribute(oid: ObjectIdentifier, value: &impl Encode) -> Attribute {
    let any = Any::from_der(&value.to_der().expect("encode attribute")).expect("attribute value");
    Attribute {
        oid,
        values: SetOfVec::try_from(vec![any]).expect("attribute set"),
    }
}

/// A timestamp authority: a root and the signing leaf under it.
#[derive(Debug)]
pub struct Tsa {
    /// The root.
    pub root: Authority,
    /// The signing certificate.
    pub leaf: Authority,
}

impl Tsa {
    /// An RFC 3161 `TimeStampResp` (DER) stamping `signature` (the message imprint is SHA-256 of the signature
    /// bytes, as Sigstore requests it) at `time`.
    pub fn timestamp(&self, signature: &[u8], time: u64) -> Vec<u8> {
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).expect("random");
        serial[0] |= 1;
        let tst = TstInfo {
            version: 1,
            policy: TSA_POLICY,
            message_imprint: MessageImprint {
                hash_algorithm: sha256_alg(),
                hashed_message: OctetString::new(sha2::Sha256::digest(signature).to_vec()).unwrap(),
            },
            serial_number: Uint::new(&serial).unwrap(),
            gen_time: GeneralizedTime::from_unix_duration(Duration::from_secs(time)).unwrap(),
            accuracy: Accuracy { seconds: 1 },
        };
        let tst_der = tst.to_der().expect("encode TSTInfo");
        let leaf = Certificate::from_der(&self.leaf.cert).expect("TSA certificate");

        let attrs: SetOfVec<Attribute> = SetOfVec::try_from(vec![
            attribute(CONTENT_TYPE, &ID_CT_TSTINFO),
            attribute(
                MESSAGE_DIGEST,
                &OctetString::new(sha2::Sha256::digest(&tst_der).to_vec()).unwrap(),
            ),
            attribute(
                SIGNING_CERTIFICATE_V2,
                &SigningCertificateV2 {
                    certs: vec![EssCertIdV2 {
                        cert_hash: OctetString::new(sha2::Sha256::digest(&self.leaf.cert).to_vec())
                            .unwrap(),
                    }],
                },
            ),
        ])
        .expect("signed attributes");
        // The signature covers the DER of the attributes as a SET OF (RFC 5652 §5.4).
        let signature = self
            .leaf
            .key
            .sign(&attrs.to_der().expect("encode attributes"));
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: leaf.tbs_certificate.issuer.clone(),
                serial_number: leaf.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: sha256_alg(),
            signed_attrs: Some(attrs),
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: ECDSA_SHA256,
                parameters: None,
            },
            signature: OctetString::new(signature).unwrap(),
            unsigned_attrs: None,
        };
        let signed = SignedData {
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![sha256_alg()]).unwrap(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_CT_TSTINFO,
                econtent: Some(Any::new(Tag::OctetString, tst_der).unwrap()),
            },
            certificates: Some(CertificateSet(
                SetOfVec::try_from(vec![CertificateChoices::Certificate(leaf)]).unwrap(),
            )),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).unwrap()),
        };
        let token = ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::from_der(&signed.to_der().expect("encode SignedData")).unwrap(),
        };
        TimeStampResp {
            status: PkiStatusInfo { status: 0 },
            time_stamp_token: token,
        }
        .to_der()
        .expect("encode TimeStampResp")
    }
}
