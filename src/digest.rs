//! Content digests (`sha256:<hex>`): parsing, and hashing bytes as they stream past.
//!
//! Every byte georep moves is checked against the digest that names it
//! (DESIGN invariant 2). [`Verifier`] hashes and counts a stream one chunk at a
//! time, so a blob is verified without ever being held whole in memory.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A validated content digest such as `sha256:9f86d0…`.
///
/// Only the algorithms the OCI image spec registers are accepted (sha256 and
/// sha512), with lowercase hex of the right length, so a digest from a
/// listing or a manifest can be put into a URL path without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest {value:?}: {reason}")]
pub struct DigestError {
    pub value: String,
    pub reason: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The sha256 digest of bytes that come in chunks.
    pub fn sha256_of_chunks<C: AsRef<[u8]>>(chunks: impl IntoIterator<Item = C>) -> Digest {
        let mut h = Sha256::new();
        for c in chunks {
            h.update(c.as_ref());
        }
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part, after `algorithm:`.
    pub fn hex(&self) -> &str {
        // The constructor guarantees a ':' is present.
        self.0.split_once(':').map(|(_, h)| h).unwrap_or("")
    }

    /// A short form for logs and tables: `sha256:9f86d081884c`.
    pub fn short(&self) -> &str {
        let end = (self.0.find(':').unwrap_or(0) + 13).min(self.0.len());
        &self.0[..end]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DigestError {
            value: s.chars().take(200).collect(),
            reason,
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| err("expected <algorithm>:<hex>"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(err("unsupported algorithm (sha256 or sha512 expected)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(err("wrong length for its algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err("not lowercase hex"));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts a stream of chunks, to compare with the expected digest
/// and size at the end.
pub struct Verifier {
    hasher: Hasher,
    expected: Digest,
    expected_size: Option<u64>,
    seen: u64,
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// How a stream differed from what its descriptor promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    #[error("size mismatch: expected {expected} bytes, got more")]
    TooLong { expected: u64 },
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    Digest { expected: Digest, actual: Digest },
}

impl Verifier {
    pub fn new(expected: &Digest, expected_size: Option<u64>) -> Self {
        let hasher = match expected.algorithm() {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        };
        Verifier {
            hasher,
            expected: expected.clone(),
            expected_size,
            seen: 0,
        }
    }

    /// Feeds one chunk. Fails as soon as the stream is longer than promised,
    /// so an oversized body is cut off without reading it to the end.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        self.seen += chunk.len() as u64;
        if let Some(expected) = self.expected_size
            && self.seen > expected
        {
            return Err(Mismatch::TooLong { expected });
        }
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(chunk),
            Hasher::Sha512(h) => h.update(chunk),
        }
        Ok(())
    }

    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// Checks the complete stream.
    pub fn finish(self) -> Result<(), Mismatch> {
        if let Some(expected) = self.expected_size
            && self.seen != expected
        {
            return Err(Mismatch::Size {
                expected,
                actual: self.seen,
            });
        }
        let actual = match self.hasher {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        };
        if actual != self.expected.0 {
            return Err(Mismatch::Digest {
                expected: self.expected,
                actual: Digest(actual),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_rejects() {
        assert!(EMPTY.parse::<Digest>().is_ok());
        for bad in [
            "",
            "sha256",
            "md5:abc",
            "sha256:ABC",
            "sha256:e3b0",
            "sha256:../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn verifier_checks_digest_and_size() {
        let d: Digest = EMPTY.parse().unwrap();
        assert!(Verifier::new(&d, Some(0)).finish().is_ok());

        let mut v = Verifier::new(&d, Some(0));
        assert_eq!(v.update(b"x"), Err(Mismatch::TooLong { expected: 0 }));

        let mut v = Verifier::new(&d, None);
        v.update(b"x").unwrap();
        assert!(matches!(v.finish(), Err(Mismatch::Digest { .. })));

        let good = Digest::sha256_of(b"hello world");
        let mut v = Verifier::new(&good, Some(11));
        v.update(b"hello ").unwrap();
        v.update(b"world").unwrap();
        assert!(v.finish().is_ok());

        let mut v = Verifier::new(&good, Some(12));
        v.update(b"hello world").unwrap();
        assert_eq!(
            v.finish(),
            Err(Mismatch::Size {
                expected: 12,
                actual: 11
            })
        );
    }

    #[test]
    fn short_form() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
        assert_eq!(d.hex().len(), 64);
    }
}

/// Property tests (fuzzing): a digest that parses is `algorithm:hex` of
/// the right length, nothing else (it goes into URLs and store keys).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn parsed_digests_are_plain(s in "(sha256|sha512|md5|[a-z]{0,6}):[0-9a-fA-F./]{0,130}|.{0,80}") {
            if let Ok(d) = s.parse::<Digest>() {
                let (algo, hex) = d.as_str().split_once(':').unwrap();
                prop_assert!(algo == "sha256" && hex.len() == 64 || algo == "sha512" && hex.len() == 128);
                prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
    }
}
