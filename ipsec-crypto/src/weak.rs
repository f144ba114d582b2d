//! Weakness reporting: which negotiated algorithms a careful operator should be told about.
//!
//! The gateway calls [`weaknesses`] with the algorithms of an SA it has just negotiated (or
//! of a configured proposal) and logs each entry at warn. Nothing here refuses anything;
//! policy is the caller's.

use core::fmt;

use crate::alg::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm};

/// Any algorithm this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A cipher (IKE or ESP).
    Encryption(EncryptionAlgorithm),
    /// A hash, and the HMAC PRF built on it (IKE).
    Hash(HashAlgorithm),
    /// An ESP integrity algorithm.
    Integrity(IntegrityAlgorithm),
    /// A Diffie-Hellman group (phase 1 or PFS).
    Group(DhGroup),
}

impl Algorithm {
    /// Why this algorithm is weak, or `None`.
    pub const fn weakness(self) -> Option<&'static str> {
        match self {
            Self::Encryption(a) => a.weakness(),
            Self::Hash(a) => a.weakness(),
            Self::Integrity(a) => a.weakness(),
            Self::Group(g) => g.weakness(),
        }
    }
}

impl From<EncryptionAlgorithm> for Algorithm {
    fn from(a: EncryptionAlgorithm) -> Self {
        Self::Encryption(a)
    }
}

impl From<HashAlgorithm> for Algorithm {
    fn from(a: HashAlgorithm) -> Self {
        Self::Hash(a)
    }
}

impl From<IntegrityAlgorithm> for Algorithm {
    fn from(a: IntegrityAlgorithm) -> Self {
        Self::Integrity(a)
    }
}

impl From<DhGroup> for Algorithm {
    fn from(g: DhGroup) -> Self {
        Self::Group(g)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Encryption(a) => write!(f, "encryption {a:?}"),
            Self::Hash(a) => write!(f, "hash {a:?}"),
            Self::Integrity(a) => write!(f, "integrity {a:?}"),
            Self::Group(g) => write!(f, "DH group {}", g.id()),
        }
    }
}

/// One weak choice and the reason, ready to log (`Display` gives one line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weakness {
    /// The weak algorithm.
    pub algorithm: Algorithm,
    /// Why it is weak.
    pub reason: &'static str,
}

impl fmt::Display for Weakness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is weak: {}", self.algorithm, self.reason)
    }
}

/// The weak entries among `choices`, in order, each once.
///
/// ```
/// use ipsec_crypto::{weaknesses, DhGroup, EncryptionAlgorithm, HashAlgorithm};
///
/// let found = weaknesses([
///     EncryptionAlgorithm::TripleDesCbc.into(),
///     HashAlgorithm::Sha1.into(),
///     DhGroup::Modp1024.into(),
/// ]);
/// assert_eq!(found.len(), 2);
/// assert!(found[1].to_string().starts_with("DH group 2 is weak: "));
/// ```
pub fn weaknesses(choices: impl IntoIterator<Item = Algorithm>) -> Vec<Weakness> {
    let mut out: Vec<Weakness> = Vec::new();
    for algorithm in choices {
        if let Some(reason) = algorithm.weakness() {
            if !out.iter().any(|w| w.algorithm == algorithm) {
                out.push(Weakness { algorithm, reason });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_suite_has_no_weaknesses() {
        let found = weaknesses([
            EncryptionAlgorithm::AesCbc128.into(),
            HashAlgorithm::Sha1.into(),
            IntegrityAlgorithm::HmacSha1_96.into(),
            DhGroup::Modp2048.into(),
        ]);
        assert!(found.is_empty());
    }

    #[test]
    fn weak_suite_lists_each_weak_choice_once_in_order() {
        let found = weaknesses([
            EncryptionAlgorithm::DesCbc.into(),
            HashAlgorithm::Md5.into(),
            IntegrityAlgorithm::HmacMd5_96.into(),
            DhGroup::Modp768.into(),
            EncryptionAlgorithm::DesCbc.into(),
            DhGroup::Modp2048.into(),
        ]);
        let algs: Vec<Algorithm> = found.iter().map(|w| w.algorithm).collect();
        assert_eq!(
            algs,
            [
                Algorithm::Encryption(EncryptionAlgorithm::DesCbc),
                Algorithm::Hash(HashAlgorithm::Md5),
                Algorithm::Integrity(IntegrityAlgorithm::HmacMd5_96),
                Algorithm::Group(DhGroup::Modp768),
            ]
        );
        assert!(found[0]
            .to_string()
            .starts_with("encryption DesCbc is weak: single DES"));
    }
}
