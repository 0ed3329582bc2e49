//! The cluster secret and the set of secrets a process accepts (pure: the
//! clock is passed in).
//!
//! A rotation does not reach every process at the same moment: each one
//! re-reads the file on its own schedule. So after a change a process keeps
//! the previous secret for a grace period: it still accepts it from callers
//! that have not re-read yet, and presents it next to the new one to peers
//! that have not re-read yet either.

use std::fmt;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Bytes of randomness in a secret (256 bits).
pub const SECRET_BYTES: usize = 32;
/// Characters of a secret written in hex.
pub const SECRET_HEX_CHARS: usize = 2 * SECRET_BYTES;

/// A deployment secret. It never shows in logs: its `Debug` says
/// `[redacted]`, it has no `Display`, and it is compared in constant time.
#[derive(Clone)]
pub struct Secret([u8; SECRET_BYTES]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Why a text is not a secret. The text itself is never repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFormatError {
    WrongLength { chars: usize },
    NotHex,
}

impl fmt::Display for SecretFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFormatError::WrongLength { chars } => write!(
                f,
                "a cluster secret is {SECRET_HEX_CHARS} hex characters, this one has {chars}"
            ),
            SecretFormatError::NotHex => {
                write!(f, "a cluster secret is hex digits only (0-9, a-f)")
            }
        }
    }
}

impl std::error::Error for SecretFormatError {}

impl Secret {
    /// 256 random bits from the operating system.
    pub fn generate() -> std::io::Result<Secret> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Secret(bytes))
    }

    /// Parses the hex form, as held by the file (surrounding whitespace,
    /// such as the final newline, is ignored) or sent in a call's metadata.
    pub fn parse(text: &str) -> Result<Secret, SecretFormatError> {
        let t = text.trim();
        if t.len() != SECRET_HEX_CHARS {
            return Err(SecretFormatError::WrongLength {
                chars: t.chars().count(),
            });
        }
        let mut bytes = [0u8; SECRET_BYTES];
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(SecretFormatError::NotHex)?;
            let lo = hex_digit(pair[1]).ok_or(SecretFormatError::NotHex)?;
            bytes[i] = hi << 4 | lo;
        }
        Ok(Secret(bytes))
    }

    /// The lowercase hex form: the file's content and the metadata value.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(SECRET_HEX_CHARS);
        for b in self.0 {
            out.push(DIGITS[(b >> 4) as usize] as char);
            out.push(DIGITS[(b & 0xf) as usize] as char);
        }
        out
    }

    /// Equality in constant time, so that the time a refusal takes says
    /// nothing about how much of a guess was right.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The secrets a process accepts: the current one, and the previous one
/// until its grace period ends.
#[derive(Clone, Debug)]
pub struct SecretRing {
    current: Secret,
    previous: Option<(Secret, Instant)>,
}

impl SecretRing {
    pub fn new(current: Secret) -> SecretRing {
        SecretRing {
            current,
            previous: None,
        }
    }

    pub fn current(&self) -> &Secret {
        &self.current
    }

    /// Makes `next` the current secret at `now`; the one it replaces stays
    /// accepted for `grace`. Returns false (and changes nothing) when `next`
    /// is already the current secret.
    pub fn rotate(&mut self, next: Secret, now: Instant, grace: Duration) -> bool {
        if next.ct_eq(&self.current) {
            return false;
        }
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some((old, now + grace));
        true
    }

    /// The previous secret, while its grace period lasts at `now`.
    fn previous_at(&self, now: Instant) -> Option<&Secret> {
        self.previous
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(s, _)| s)
    }

    /// Whether `presented` is accepted at `now`. Every accepted secret is
    /// compared, in constant time, whatever matched first.
    pub fn accepts(&self, presented: &Secret, now: Instant) -> bool {
        let mut ok = presented.ct_eq(&self.current);
        if let Some(previous) = self.previous_at(now) {
            ok |= presented.ct_eq(previous);
        }
        ok
    }

    /// What this process presents to its peers at `now`: the current
    /// secret, then the previous one during its grace period (a peer that
    /// has not re-read the file yet knows only that one).
    pub fn presented(&self, now: Instant) -> Vec<Secret> {
        let mut out = vec![self.current.clone()];
        out.extend(self.previous_at(now).cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(fill: u8) -> Secret {
        Secret([fill; SECRET_BYTES])
    }

    #[test]
    fn hex_round_trips_and_bad_text_is_refused() {
        let s = Secret::generate().unwrap();
        let back = Secret::parse(&format!("{}\n", s.to_hex())).unwrap();
        assert!(back.ct_eq(&s));
        assert!(Secret::parse(&s.to_hex().to_uppercase()).unwrap().ct_eq(&s));
        assert_eq!(
            Secret::parse("abcd").unwrap_err(),
            SecretFormatError::WrongLength { chars: 4 }
        );
        assert_eq!(
            Secret::parse(&"g".repeat(SECRET_HEX_CHARS)).unwrap_err(),
            SecretFormatError::NotHex
        );
        assert!(Secret::parse("").is_err());
        // Multi-byte characters of the right byte length are not hex.
        assert!(Secret::parse(&"é".repeat(SECRET_BYTES)).is_err());
        assert!(!Secret::generate()
            .unwrap()
            .ct_eq(&Secret::generate().unwrap()));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::generate().unwrap();
        let shown = format!("{s:?} {:?}", SecretRing::new(s.clone()));
        assert!(!shown.contains(&s.to_hex()), "{shown}");
        assert!(shown.contains("[redacted]"));
        let err = Secret::parse(&"z".repeat(SECRET_HEX_CHARS)).unwrap_err();
        assert!(!err.to_string().contains('z'));
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period_only() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(60_000);
        let mut ring = SecretRing::new(secret(1));
        assert!(ring.accepts(&secret(1), t0));
        assert!(!ring.accepts(&secret(2), t0));
        assert_eq!(ring.presented(t0).len(), 1);

        let t1 = t0 + Duration::from_secs(5);
        assert!(ring.rotate(secret(2), t1, grace));
        assert!(!ring.rotate(secret(2), t1, grace), "same secret again");
        assert!(ring.accepts(&secret(2), t1));
        assert!(ring.accepts(&secret(1), t1));
        assert!(ring.accepts(&secret(1), t1 + grace - Duration::from_millis(1)));
        let sent = ring.presented(t1);
        assert_eq!(sent.len(), 2);
        assert!(sent[0].ct_eq(&secret(2)) && sent[1].ct_eq(&secret(1)));

        let after = t1 + grace;
        assert!(!ring.accepts(&secret(1), after));
        assert!(ring.accepts(&secret(2), after));
        assert_eq!(ring.presented(after).len(), 1);
        assert!(!ring.accepts(&secret(3), t1));

        // A second rotation forgets the first secret at once.
        let t2 = t1 + Duration::from_secs(1);
        assert!(ring.rotate(secret(3), t2, grace));
        assert!(!ring.accepts(&secret(1), t2));
        assert!(ring.accepts(&secret(2), t2));
        assert!(ring.accepts(&secret(3), t2));
    }
}
