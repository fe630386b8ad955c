//! Contact pseudonymisation: the keyed hash that replaces an e-mail address
//! before anything leaves the collector (and that erasure requests recompute).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Constant-time equality of two secrets (tokens, signatures): the time
/// taken does not tell how many leading bytes were right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Minimum length of the HMAC secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the contact secret must be at least {MIN_SECRET_LEN} bytes (got {0})")]
    TooShort(usize),
}

/// HMAC-SHA256 of normalised e-mail addresses under a server secret.
#[derive(Clone)]
pub struct ContactHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for ContactHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContactHasher(<secret>)")
    }
}

impl ContactHasher {
    pub fn new(secret: &[u8]) -> Result<Self, SecretError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(secret.len()));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| SecretError::TooShort(secret.len()))?;
        Ok(Self { mac })
    }

    /// Hex HMAC of an e-mail, normalised first (see [`crate::event::normalise_email`]),
    /// so that `A@B.fr ` and `a@b.fr` give the same hash.
    pub fn contact_hash(&self, email: &str) -> String {
        let normalised =
            crate::event::normalise_email(email).unwrap_or_else(|| crate::event::fold_email(email));
        self.hash(&normalised)
    }

    fn hash(&self, normalised: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(normalised.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Every hash `email` may be stored under: today's, and those of
    /// collectors that only trimmed and lower-cased (before NFC and case
    /// folding), for the composed and the decomposed spelling. Erasure
    /// looks for all of them.
    pub fn contact_hashes(&self, email: &str) -> Vec<String> {
        use unicode_normalization::UnicodeNormalization;
        let legacy = email.trim().to_lowercase();
        let mut out = vec![self.contact_hash(email)];
        for form in [legacy.nfc().collect::<String>(), legacy.nfd().collect()] {
            let h = self.hash(&form);
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hash_is_keyed_normalised_and_hides_the_address() {
        let a = ContactHasher::new(b"0123456789abcdef-secret").unwrap();
        let b = ContactHasher::new(b"another-secret-0123456789").unwrap();
        let h = a.contact_hash(" Jeanne.Dupont@Example.fr");
        assert_eq!(h, a.contact_hash("jeanne.dupont@example.fr"));
        assert_ne!(h, b.contact_hash("jeanne.dupont@example.fr"));
        assert_eq!(h.len(), 64);
        assert!(!h.contains("jeanne"));
        // RFC 4231-style check against a known HMAC-SHA256 value.
        let k = ContactHasher::new(b"key-key-key-key-").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key-key-key-key-").unwrap();
        mac.update(b"a@b.fr");
        assert_eq!(
            k.contact_hash("a@b.fr"),
            hex::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn one_person_is_one_contact_whatever_the_unicode_spelling() {
        let a = ContactHasher::new(b"0123456789abcdef-secret").unwrap();
        let composed = "zo\u{e9}.martin@exemple.fr";
        let decomposed = "zoe\u{301}.martin@exemple.fr";
        let h = a.contact_hash(composed);
        assert_eq!(h, a.contact_hash(decomposed));
        assert_eq!(h, a.contact_hash("ZO\u{c9}.Martin@EXEMPLE.fr"));
        assert_eq!(h, a.contact_hash("ZOE\u{301}.MARTIN@exemple.fr"));
        // Case folding, not only lower-casing: ß and ss, final sigma.
        assert_eq!(
            a.contact_hash("strasse@exemple.de"),
            a.contact_hash("STRASSE@exemple.de")
        );
        assert_eq!(
            a.contact_hash("stra\u{df}e@exemple.de"),
            a.contact_hash("STRASSE@exemple.de")
        );
        assert_ne!(h, a.contact_hash("zoe.martin@exemple.fr"), "é is not e");
        // Erasure also finds what older collectors stored (lower-cased only).
        let all = a.contact_hashes(decomposed);
        assert_eq!(all[0], h);
        let old = |s: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef-secret").unwrap();
            mac.update(s.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        assert!(all.contains(&old(composed)) && all.contains(&old(decomposed)));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(ContactHasher::new(b"short").is_err());
    }
}
