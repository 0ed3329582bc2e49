//! Account handles: the names people sign up with.
//!
//! A handle is 1 to [`HANDLE_MAX_CHARS`] characters of `[a-z0-9_]`,
//! compared case-insensitively: it is kept in lower case, so `Alice` and
//! `alice` are one handle. A handle of digits only is refused, because a
//! handle works wherever a client id does (`follow alice`, `follow 4`) and
//! `4` must keep meaning the id. Pure, no I/O.

use std::fmt;

/// Longest handle, in characters (all ASCII, so also in bytes).
pub const HANDLE_MAX_CHARS: usize = 30;
/// Longest pattern of handles, in characters.
pub const PATTERN_MAX_CHARS: usize = 64;

/// A glob over handles: the handle characters, `*` (any run, also empty)
/// and `?` (any one character); in lower case, so matching is
/// case-insensitive like handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn parse(raw: &str) -> Result<Pattern, String> {
        if raw.is_empty() || raw.len() > PATTERN_MAX_CHARS {
            return Err(format!("a pattern is 1 to {PATTERN_MAX_CHARS} characters"));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '?')))
        {
            return Err(format!(
                "a pattern holds letters a-z, digits, '_', '*' and '?', not {bad:?}"
            ));
        }
        Ok(Pattern(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What every match starts with: the pattern up to its first wildcard.
    pub fn literal_prefix(&self) -> &str {
        let end = self.0.find(['*', '?']).unwrap_or(self.0.len());
        &self.0[..end]
    }

    /// Whether `handle` (in lower case) matches. Linear in both lengths
    /// times the stars: the classic backtracking to the last `*`.
    pub fn matches(&self, handle: &str) -> bool {
        let (p, h) = (self.0.as_bytes(), handle.as_bytes());
        let (mut i, mut j) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while j < h.len() {
            if i < p.len() && (p[i] == b'?' || p[i] == h[j]) {
                i += 1;
                j += 1;
            } else if i < p.len() && p[i] == b'*' {
                star = Some((i, j));
                i += 1;
            } else if let Some((si, sj)) = star {
                i = si + 1;
                j = sj + 1;
                star = Some((si, sj + 1));
            } else {
                return false;
            }
        }
        p[i..].iter().all(|&c| c == b'*')
    }
}

/// A valid handle, in lower case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(String);

/// Why a string is not a handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("a handle cannot be empty")]
    Empty,
    #[error("a handle is at most {HANDLE_MAX_CHARS} characters")]
    TooLong,
    #[error("a handle holds only letters a-z, digits and '_', not {0:?}")]
    BadChar(char),
    #[error("a handle needs a letter or '_': digits alone are a client id")]
    OnlyDigits,
}

impl Handle {
    /// `raw` as a handle: checked, then in lower case.
    pub fn parse(raw: &str) -> Result<Handle, HandleError> {
        if raw.is_empty() {
            return Err(HandleError::Empty);
        }
        // Counted in chars so that a long non-ASCII string is "too long"
        // only if it would be; its first bad char is reported otherwise.
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(HandleError::BadChar(bad));
        }
        if raw.len() > HANDLE_MAX_CHARS {
            return Err(HandleError::TooLong);
        }
        if raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HandleError::OnlyDigits);
        }
        Ok(Handle(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_kept_in_lower_case() {
        assert_eq!(Handle::parse("Alice_2").unwrap().as_str(), "alice_2");
        assert_eq!(Handle::parse("ALICE"), Handle::parse("alice"));
        assert_eq!(Handle::parse("_").unwrap().as_str(), "_");
        assert_eq!(Handle::parse("a").unwrap().as_str(), "a");
        assert_eq!(Handle::parse("4a").unwrap().as_str(), "4a");
    }

    #[test]
    fn patterns_glob_over_handles() {
        let m = |p: &str, h: &str| Pattern::parse(p).unwrap().matches(h);
        assert!(m("alice", "alice"));
        assert!(m("ALICE", "alice"));
        assert!(!m("alice", "alice2"));
        assert!(m("al*", "al"));
        assert!(m("al*", "alice"));
        assert!(!m("al*", "bob"));
        assert!(m("*", "x"));
        assert!(m("*ce", "alice"));
        assert!(m("a*i*e", "alice"));
        assert!(!m("a*i*e", "alic"));
        assert!(m("?ob", "bob"));
        assert!(!m("?ob", "ob"));
        assert!(m("b?b*", "bob_2"));
        assert!(m("**a**", "a"));
        assert_eq!(Pattern::parse("Al*ce?").unwrap().literal_prefix(), "al");
        assert_eq!(Pattern::parse("*").unwrap().literal_prefix(), "");
        assert_eq!(Pattern::parse("bob").unwrap().literal_prefix(), "bob");
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a-b").is_err());
        assert!(Pattern::parse("a[b]").is_err());
        assert!(Pattern::parse(&"*".repeat(PATTERN_MAX_CHARS + 1)).is_err());
    }

    #[test]
    fn bad_handles_are_refused() {
        assert_eq!(Handle::parse(""), Err(HandleError::Empty));
        let longest = "a".repeat(HANDLE_MAX_CHARS);
        assert!(Handle::parse(&longest).is_ok());
        assert_eq!(
            Handle::parse(&format!("{longest}b")),
            Err(HandleError::TooLong)
        );
        assert_eq!(Handle::parse("al ice"), Err(HandleError::BadChar(' ')));
        assert_eq!(Handle::parse("al-ice"), Err(HandleError::BadChar('-')));
        assert_eq!(Handle::parse("álice"), Err(HandleError::BadChar('á')));
        assert_eq!(Handle::parse("a\u{0}"), Err(HandleError::BadChar('\u{0}')));
        assert_eq!(Handle::parse("*"), Err(HandleError::BadChar('*')));
        assert_eq!(Handle::parse("42"), Err(HandleError::OnlyDigits));
        assert_eq!(Handle::parse("007"), Err(HandleError::OnlyDigits));
    }
}
