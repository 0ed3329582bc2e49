//! Account passwords: kept only as Argon2id hashes, in the PHC string form
//! (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), which names its own parameters,
//! so a later change of them still verifies the hashes made before.
//!
//! The parameters are OWASP's smallest recommended Argon2id setting: it
//! costs [`ARGON2_MEMORY_KIB`] of memory and a few tens of milliseconds of
//! one core per hash, which a 2-core machine running a whole deployment
//! can afford for every sign-up and login, while a stolen hash still costs
//! an attacker that memory per guess. Hashing is CPU work: callers run it
//! off their async threads (`spawn_blocking`), outside any lock.
//!
//! A password is never logged: [`Password`]'s `Debug` is `[redacted]`.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory of one hash, in KiB (19 MiB).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Passes over that memory.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Lanes (threads) of one hash: one, so that two sign-ups use two cores
/// rather than one sign-up both.
pub const ARGON2_LANES: u32 = 1;
/// Bytes of random salt per hash.
pub const SALT_BYTES: usize = 16;
/// Longest password accepted, in bytes.
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// Longest stored hash accepted, in bytes (a PHC string of these
/// parameters is about 100).
pub const PASSWORD_HASH_MAX_BYTES: usize = 256;

/// A password as typed. Its `Debug` hides it.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("a password cannot be empty")]
    Empty,
    #[error("a password is at most {PASSWORD_MAX_BYTES} bytes")]
    TooLong,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

impl Password {
    /// `raw`, if it is an acceptable password.
    pub fn new(raw: String) -> Result<Password, PasswordError> {
        if raw.is_empty() {
            return Err(PasswordError::Empty);
        }
        if raw.len() > PASSWORD_MAX_BYTES {
            return Err(PasswordError::TooLong);
        }
        Ok(Password(raw))
    }

    /// The password itself, to send it to the coordinator or a server.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The Argon2id hash of the password with a fresh random salt, as a PHC
    /// string.
    pub fn hash(&self) -> Result<String, PasswordError> {
        let mut salt = [0u8; SALT_BYTES];
        getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let hash = hasher()?
            .hash_password(self.0.as_bytes(), &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        Ok(hash.to_string())
    }

    /// Whether the password is the one `stored` (a PHC string) was made
    /// from. A stored value that is not a valid hash matches nothing.
    pub fn verify(&self, stored: &str) -> bool {
        if stored.len() > PASSWORD_HASH_MAX_BYTES {
            return false;
        }
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        Argon2::default()
            .verify_password(self.0.as_bytes(), &parsed)
            .is_ok()
    }
}

/// Whether `stored` is a hash this module could have made: an Argon2id PHC
/// string no longer than [`PASSWORD_HASH_MAX_BYTES`]. Checked wherever a
/// hash enters from the network or a file.
pub fn is_valid_hash(stored: &str) -> bool {
    stored.len() <= PASSWORD_HASH_MAX_BYTES
        && PasswordHash::new(stored).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let p = Password::new("correct horse".into()).unwrap();
        let stored = p.hash().unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(is_valid_hash(&stored));
        assert!(!stored.contains("correct"));
        assert!(p.verify(&stored));
        assert!(!Password::new("correct horsE".into())
            .unwrap()
            .verify(&stored));
        // Two hashes of one password differ (the salt), and both verify.
        let again = p.hash().unwrap();
        assert_ne!(stored, again);
        assert!(p.verify(&again));
    }

    #[test]
    fn bad_passwords_and_hashes_are_refused() {
        assert_eq!(
            Password::new(String::new()).unwrap_err(),
            PasswordError::Empty
        );
        assert_eq!(
            Password::new("x".repeat(PASSWORD_MAX_BYTES + 1)).unwrap_err(),
            PasswordError::TooLong
        );
        assert!(Password::new("x".repeat(PASSWORD_MAX_BYTES)).is_ok());
        let p = Password::new("pw".into()).unwrap();
        assert!(!p.verify(""));
        assert!(!p.verify("not a hash"));
        assert!(!is_valid_hash(
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
        ));
        assert!(!is_valid_hash(&"$".repeat(PASSWORD_HASH_MAX_BYTES + 1)));
        assert_eq!(format!("{p:?}"), "[redacted]");
    }
}
