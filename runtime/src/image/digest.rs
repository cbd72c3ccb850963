//! Content digests (`sha256:<64 lowercase hex>`) and a reader that checks one while streaming.
//!
//! A [`Digest`] can only come into being by parsing a string that is exactly `sha256:` followed
//! by 64 lowercase hex digits, or by hashing bytes. That is what makes it safe to turn into a file
//! name: `blobs/sha256/<hex>` built from a `Digest` can never contain `/` or `..`
//! (containers/image CVE-2024-3727 turned unvalidated digest strings into paths).
//!
//! [`VerifyingReader`] hashes what passes through it and fails the read that reaches end of file
//! when the digest or the byte count is wrong, and fails as soon as more bytes arrive than the
//! expected size — content is never trusted before that final read has succeeded.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// How many characters of a rejected input an error message repeats.
const MAX_ECHOED_INPUT: usize = 100;

/// A digest algorithm. Only SHA-256 is accepted for now: it is what every registry and image
/// builder uses, and accepting more would only widen what untrusted input can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256: 64 lowercase hex digits.
    Sha256,
}

impl Algorithm {
    /// The name used in digest strings and in `blobs/<algorithm>/` directories.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest such as `sha256:e3b0c442…`.
///
/// Invariant: `hex` is exactly `algorithm.hex_len()` characters of `[0-9a-f]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Everything that can be wrong with a digest: a malformed string, or content that does not
/// match. [`VerifyingReader`] puts the mismatch variants inside the `io::Error` it returns, so a
/// caller can get them back with `io::Error::get_ref()` and `downcast_ref::<DigestError>()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string is not `algorithm:hex`, or the hex part is malformed.
    #[error("invalid digest {input:?}: {reason}")]
    Invalid {
        /// The rejected input (at most 100 characters of it).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A well-formed digest with an algorithm other than sha256.
    #[error("unsupported digest algorithm {algorithm:?} in {input:?}: only sha256 is supported")]
    UnsupportedAlgorithm {
        /// The rejected input (at most 100 characters of it).
        input: String,
        /// The algorithm part.
        algorithm: String,
    },
    /// The content hashed to something else.
    #[error("content does not match its digest: expected {expected}, actual {actual}")]
    Mismatch {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// The digest of the bytes actually read.
        actual: Digest,
    },
    /// The content ended before, or after, the expected size.
    #[error("content of {digest} has the wrong size: expected {expected} bytes, read {actual}")]
    SizeMismatch {
        /// The expected digest.
        digest: Digest,
        /// The expected size in bytes.
        expected: u64,
        /// How many bytes were read.
        actual: u64,
    },
    /// More bytes arrived than the expected size; reading stopped there.
    #[error("content of {digest} is longer than the expected {expected} bytes")]
    TooLong {
        /// The expected digest.
        digest: Digest,
        /// The expected size in bytes.
        expected: u64,
    },
}

fn echo(input: &str) -> String {
    input.chars().take(MAX_ECHOED_INPUT).collect()
}

impl Digest {
    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part: lowercase, exactly as long as the algorithm requires. Safe as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    fn from_sha256(hash: [u8; 32]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(hash),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let invalid = |reason| DigestError::Invalid {
            input: echo(s),
            reason,
        };
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("expected `sha256:` followed by 64 hex digits"))?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            other => {
                // The OCI grammar for algorithms; anything else is not a digest at all.
                let well_formed = !other.is_empty()
                    && other.bytes().all(
                        |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'+' | b'.' | b'_' | b'-'),
                    );
                return Err(if well_formed {
                    DigestError::UnsupportedAlgorithm {
                        input: echo(s),
                        algorithm: echo(other),
                    }
                } else {
                    invalid("malformed algorithm name")
                });
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("a sha256 digest has exactly 64 hex digits"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("hex digits must be 0-9 or lowercase a-f"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;

    /// oci-spec accepts any algorithm (sha512, `multihash+base58`, …); this accepts only sha256.
    fn try_from(digest: &oci_spec::image::Digest) -> Result<Digest, DigestError> {
        digest.as_ref().parse()
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

enum State {
    Reading,
    Verified,
    Failed(DigestError),
}

/// Wraps a reader: hashes every byte that passes through, and makes the read that reaches end of
/// file fail (`io::ErrorKind::InvalidData`, carrying a [`DigestError`]) when the digest or the
/// byte count differs from what was expected. With an expected size, a read fails as soon as
/// more bytes than that arrive, and at most one byte beyond the size is ever requested from the
/// inner reader.
///
/// Only a read that returned `Ok(0)` proves the content good. Consumers that may stop early
/// (a tar reader stops at the end-of-archive blocks) must call [`VerifyingReader::finish`].
/// After a failure every further read fails again with the same error.
pub struct VerifyingReader<R> {
    inner: R,
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Sha256,
    read: u64,
    state: State,
}

impl<R> VerifyingReader<R> {
    /// Expect exactly `size` bytes hashing to `expected` (a blob named by a descriptor).
    pub fn new(inner: R, expected: Digest, size: u64) -> VerifyingReader<R> {
        VerifyingReader::build(inner, expected, Some(size))
    }

    /// Expect content hashing to `expected`, of whatever length (an uncompressed layer checked
    /// against its diff_id: nothing records its size). Bound the length some other way.
    pub fn new_unsized(inner: R, expected: Digest) -> VerifyingReader<R> {
        VerifyingReader::build(inner, expected, None)
    }

    fn build(inner: R, expected: Digest, expected_size: Option<u64>) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            expected,
            expected_size,
            hasher: Sha256::new(),
            read: 0,
            state: State::Reading,
        }
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Bytes read (and hashed) so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// True once end of file was reached with the right digest and size.
    pub fn is_verified(&self) -> bool {
        matches!(self.state, State::Verified)
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn fail(&mut self, error: DigestError) -> io::Error {
        self.state = State::Failed(error.clone());
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    /// Called when the inner reader reported end of file.
    fn check_end(&mut self) -> io::Result<()> {
        if let Some(expected) = self.expected_size {
            if self.read != expected {
                return Err(self.fail(DigestError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected,
                    actual: self.read,
                }));
            }
        }
        let actual = Digest::from_sha256(self.hasher.finalize_reset().into());
        if actual != self.expected {
            return Err(self.fail(DigestError::Mismatch {
                expected: self.expected.clone(),
                actual,
            }));
        }
        self.state = State::Verified;
        Ok(())
    }
}

impl<R: Read> VerifyingReader<R> {
    /// Read whatever is left, verify, and hand back the inner reader. Use this when the consumer
    /// may stop before end of file; it is the only way to know the content was right.
    pub fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.inner)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Reading => {}
            State::Verified => return Ok(0),
            State::Failed(error) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, error.clone()))
            }
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // Ask for at most one byte past the expected size: enough to notice content that is too
        // long without reading (or hashing) the excess.
        let limit = match self.expected_size {
            Some(size) => {
                let allowed = size.saturating_sub(self.read).saturating_add(1);
                usize::try_from(allowed).map_or(buf.len(), |allowed| allowed.min(buf.len()))
            }
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..limit])?;
        if n == 0 {
            self.check_end()?;
            return Ok(0);
        }
        self.read += n as u64;
        if let Some(expected) = self.expected_size {
            if self.read > expected {
                return Err(self.fail(DigestError::TooLong {
                    digest: self.expected.clone(),
                    expected,
                }));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: fmt::Debug> fmt::Debug for VerifyingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Reading => "reading",
            State::Verified => "verified",
            State::Failed(_) => "failed",
        };
        f.debug_struct("VerifyingReader")
            .field("inner", &self.inner)
            .field("expected", &self.expected)
            .field("expected_size", &self.expected_size)
            .field("read", &self.read)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn digest_error(err: &io::Error) -> &DigestError {
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        err.get_ref()
            .and_then(|e| e.downcast_ref::<DigestError>())
            .expect("io::Error carries a DigestError")
    }

    #[test]
    fn parses_and_displays_sha256() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex(), &EMPTY_SHA256[7..]);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::of_bytes(b""), d);
    }

    #[test]
    fn rejects_path_traversal_and_malformed_digests() {
        let long = format!("sha256:{}", "a".repeat(65));
        let upper = format!("sha256:{}", "A".repeat(64));
        let cases: &[&str] = &[
            "sha256:../../etc",
            "sha256:../../../../../../../../../../../../../../../../../../../../../etc/passwd",
            "sha256:",
            "sha256",
            "",
            &long,
            &upper,
            &EMPTY_SHA256[..70],
            ":abc",
            "SHA256:abc",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
        ];
        for case in cases {
            let err = case.parse::<Digest>().unwrap_err();
            assert!(matches!(err, DigestError::Invalid { .. }), "{case}: {err}");
        }
        let err = "sha256:../../etc".parse::<Digest>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid digest \"sha256:../../etc\": a sha256 digest has exactly 64 hex digits"
        );
    }

    #[test]
    fn rejects_other_algorithms_by_name() {
        let input = format!("sha512:{}", "0".repeat(128));
        let err = input.parse::<Digest>().unwrap_err();
        assert!(
            matches!(err, DigestError::UnsupportedAlgorithm { ref algorithm, .. } if algorithm == "sha512")
        );
        assert!(
            err.to_string().contains("only sha256 is supported"),
            "{err}"
        );
    }

    #[test]
    fn error_echo_is_bounded() {
        let input = format!("sha256:{}", "x".repeat(10_000));
        let err = input.parse::<Digest>().unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn converts_from_oci_spec_digest() {
        let oci: oci_spec::image::Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(Digest::try_from(&oci).unwrap().to_string(), EMPTY_SHA256);
        let oci: oci_spec::image::Digest = format!("sha512:{}", "0".repeat(128)).parse().unwrap();
        assert!(Digest::try_from(&oci).is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let d = Digest::of_bytes(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:../../etc\"").is_err());
    }

    #[test]
    fn verifying_reader_accepts_matching_content() {
        let data = b"hello world".to_vec();
        let mut r = VerifyingReader::new(Cursor::new(data.clone()), Digest::of_bytes(&data), 11);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(r.is_verified());
        assert_eq!(r.bytes_read(), 11);
        // Reading again after verification stays at end of file.
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn verifying_reader_rejects_wrong_content_at_eof() {
        let expected = Digest::of_bytes(b"hello world");
        let mut r =
            VerifyingReader::new(Cursor::new(b"hello WORLD".to_vec()), expected.clone(), 11);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        let actual = Digest::of_bytes(b"hello WORLD");
        assert_eq!(
            digest_error(&err),
            &DigestError::Mismatch {
                expected: expected.clone(),
                actual: actual.clone()
            }
        );
        assert_eq!(
            err.to_string(),
            format!("content does not match its digest: expected {expected}, actual {actual}")
        );
        // The failure sticks: a retry does not turn into a clean end of file.
        assert!(r.read(&mut [0u8; 4]).is_err());
        assert!(!r.is_verified());
    }

    #[test]
    fn verifying_reader_rejects_short_content() {
        let data = b"hello".to_vec();
        let mut r = VerifyingReader::new(Cursor::new(data.clone()), Digest::of_bytes(&data), 6);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(
            digest_error(&err),
            DigestError::SizeMismatch {
                expected: 6,
                actual: 5,
                ..
            }
        ));
    }

    #[test]
    fn verifying_reader_stops_one_byte_past_the_size() {
        // 1 MiB offered, 4 bytes expected: the error comes after reading at most 5 bytes.
        let data = vec![7u8; 1 << 20];
        let mut r = VerifyingReader::new(Cursor::new(data), Digest::of_bytes(&[7u8; 4]), 4);
        let mut out = Vec::new();
        let mut buf = [0u8; 2];
        let err = loop {
            match r.read(&mut buf) {
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(err) => break err,
            }
        };
        assert!(matches!(
            digest_error(&err),
            DigestError::TooLong { expected: 4, .. }
        ));
        assert_eq!(
            out.len(),
            4,
            "no byte beyond the expected size is handed out"
        );
        assert_eq!(r.get_ref().position(), 5);
    }

    #[test]
    fn verifying_reader_finish_drains_and_verifies() {
        let data = b"0123456789".to_vec();
        let mut r = VerifyingReader::new(Cursor::new(data.clone()), Digest::of_bytes(&data), 10);
        let mut first = [0u8; 3];
        r.read_exact(&mut first).unwrap();
        assert!(!r.is_verified());
        r.finish().unwrap();

        let mut bad = VerifyingReader::new(Cursor::new(data), Digest::of_bytes(b"other"), 10);
        bad.read_exact(&mut first).unwrap();
        assert!(bad.finish().is_err());
    }

    #[test]
    fn unsized_reader_checks_only_the_digest() {
        let data = vec![1u8; 100_000];
        let mut r =
            VerifyingReader::new_unsized(Cursor::new(data.clone()), Digest::of_bytes(&data));
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 100_000);
        assert!(r.is_verified());

        let mut r = VerifyingReader::new_unsized(Cursor::new(data), Digest::of_bytes(b""));
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(matches!(digest_error(&err), DigestError::Mismatch { .. }));
    }

    #[test]
    fn empty_buffer_is_not_end_of_file() {
        let data = b"abc".to_vec();
        let mut r = VerifyingReader::new(Cursor::new(data.clone()), Digest::of_bytes(&data), 3);
        assert_eq!(r.read(&mut []).unwrap(), 0);
        assert!(!r.is_verified());
        r.read_to_end(&mut Vec::new()).unwrap();
        assert!(r.is_verified());
    }
}
