//! Checks of client input. Pure; every refusal says what was wrong.

use tsn_datastore::limits::POST_TEXT_MAX_BYTES;

/// Longest client-chosen part of a post id.
pub const POST_TOKEN_MAX_BYTES: usize = 64;

/// A post's text: not empty, not over the limit.
pub fn post_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("an empty post is not stored".into());
    }
    if text.len() > POST_TEXT_MAX_BYTES {
        return Err(format!(
            "the post is {} bytes long; the limit is {POST_TEXT_MAX_BYTES} bytes",
            text.len()
        ));
    }
    Ok(())
}

/// A post id chosen by a client: `<author>-<token>`, the token 1 to 64 of
/// `[A-Za-z0-9_-]`. Empty means the server chooses one.
pub fn post_id(author: u32, id: &str) -> Result<String, String> {
    if id.is_empty() {
        return Ok(format!("{author}-{:016x}", rand::random::<u64>()));
    }
    let prefix = format!("{author}-");
    let token = id
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("post id {id:?} must start with \"{prefix}\""))?;
    let valid = !token.is_empty()
        && token.len() <= POST_TOKEN_MAX_BYTES
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(id.to_string())
    } else {
        Err(format!(
            "post id {id:?}: after \"{prefix}\" come 1 to {POST_TOKEN_MAX_BYTES} letters, digits, '-' or '_'"
        ))
    }
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
