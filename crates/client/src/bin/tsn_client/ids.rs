//! Client ids typed by the user, checked before anything is sent.

use tsn_datastore::limits::USER_ID_MAX;

/// Parses a client or target id: a positive decimal integer that fits the
/// classic protocol's `int32`. `what` names the id in the error
/// ("client id", "user id").
pub fn parse_id(text: &str, what: &str) -> Result<u32, String> {
    tsn_cluster::parse_user_id(text).ok_or_else(|| {
        format!("bad {what} {text:?}: expected a positive integer up to {USER_ID_MAX}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_positive_int32() {
        assert_eq!(parse_id("1", "client id"), Ok(1));
        assert_eq!(parse_id(" 42 ", "client id"), Ok(42));
        assert_eq!(parse_id("2147483647", "client id"), Ok(2_147_483_647));
    }

    #[test]
    fn refuses_everything_else_with_a_clear_message() {
        for bad in ["", "0", "-3", "abc", "1e3", "2147483648", "+1", "4 5"] {
            let err = parse_id(bad, "client id").unwrap_err();
            assert!(err.starts_with("bad client id"), "{err}");
            assert!(!err.contains('\n'));
        }
    }
}
