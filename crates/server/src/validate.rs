//! Checks of client input. Pure; every refusal says what was wrong. The
//! rules are [`tsn_datastore::validate`]'s, the one validation of every op.

#[cfg(test)]
use tsn_datastore::limits::POST_TEXT_MAX_BYTES;

/// A post's text: not empty, not over the limit (the rule of
/// [`tsn_datastore::validate`], which every replica applies too).
pub fn post_text(text: &str) -> Result<(), String> {
    tsn_datastore::validate::post_text(text)
}

/// A post id chosen by a client: `<author>-<token>`, the token 1 to 64 of
/// `[A-Za-z0-9_-]`. Empty means the server chooses one.
pub fn post_id(author: u32, id: &str) -> Result<String, String> {
    if id.is_empty() {
        return Ok(format!("{author}-{:016x}", rand::random::<u64>()));
    }
    tsn_datastore::validate::post_id(author, id)?;
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_texts() {
        assert!(post_text("hello").is_ok());
        assert!(post_text("").is_err());
        assert!(post_text("  \n ").is_err());
        assert!(post_text(&"x".repeat(POST_TEXT_MAX_BYTES)).is_ok());
        let e = post_text(&"x".repeat(POST_TEXT_MAX_BYTES + 1)).unwrap_err();
        assert!(e.contains("1025 bytes"), "{e}");
    }

    #[test]
    fn post_ids() {
        assert_eq!(post_id(7, "7-abc_D-9").unwrap(), "7-abc_D-9");
        assert!(post_id(7, "").unwrap().starts_with("7-"));
        assert!(post_id(7, "8-abc").is_err());
        assert!(post_id(7, "7-").is_err());
        assert!(post_id(7, "7-a b").is_err());
        assert!(post_id(7, &format!("7-{}", "a".repeat(65))).is_err());
    }
}
