//! Session tokens: what a client shows instead of its password once it has
//! logged in.
//!
//! A token is [`TOKEN_BYTES`] random bytes, in hex. Only its SHA-256 is
//! stored (in the user's cluster journal), so a copy of the journal does
//! not let anyone act as the user; a plain hash is enough because the
//! token, unlike a password, cannot be guessed. A client sends it in the
//! gRPC metadata `authorization: Bearer <token>`. Pure but for the random
//! bytes; the expiry is decided with the clock passed in.

use sha2::{Digest, Sha256};

/// Random bytes of a token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// How long a session lasts after its login, in ms (30 days).
pub const SESSION_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;
/// The metadata key that carries the token.
pub const AUTHORIZATION_METADATA_KEY: &str = "authorization";
/// What comes before the token in its value.
pub const BEARER_PREFIX: &str = "Bearer ";

/// A new token, as hex.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// The SHA-256 of `token`, as lower-case hex: what is stored.
pub fn token_sha256(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The token a call carries, if its metadata holds one well-formed
/// `authorization: Bearer <token>`.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get(AUTHORIZATION_METADATA_KEY)?.to_str().ok()?;
    let token = value.strip_prefix(BEARER_PREFIX)?.trim();
    (!token.is_empty()).then_some(token)
}

/// `Bearer <token>`, the metadata value, if `token` can be one (visible
/// ASCII).
pub fn bearer_value(token: &str) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    format!("{BEARER_PREFIX}{token}").parse().ok()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert_ne!(a, b);
        let h = token_sha256(&a);
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(h, a);
        assert_eq!(h, token_sha256(&a));
        assert_ne!(h, token_sha256(&b));
        // The known digest of "abc".
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_bearer_token_is_read_from_the_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&md), None);
        md.insert(AUTHORIZATION_METADATA_KEY, bearer_value("t0k").unwrap());
        assert_eq!(bearer(&md), Some("t0k"));
        md.insert(AUTHORIZATION_METADATA_KEY, "Basic t0k".parse().unwrap());
        assert_eq!(bearer(&md), None);
        md.insert(AUTHORIZATION_METADATA_KEY, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&md), None);
        assert!(bearer_value("bad\ntoken").is_none());
    }
}
