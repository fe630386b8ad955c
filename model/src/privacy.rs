//! Contact pseudonymisation: the keyed hash that replaces an e-mail address
//! before anything leaves the collector (and that erasure requests recompute).

use hmac::{Hmac, Mac};
use sha2::Sha256;

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
            crate::event::normalise_email(email).unwrap_or_else(|| email.trim().to_lowercase());
        let mut mac = self.mac.clone();
        mac.update(normalised.as_bytes());
        hex::encode(mac.finalize().into_bytes())
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
    fn short_secret_is_refused() {
        assert!(ContactHasher::new(b"short").is_err());
    }
}
