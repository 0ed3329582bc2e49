//! What a post may say: checked before anything is stored or sent, so a
//! post the server would refuse never enters the pending file.

use tsn_datastore::limits::POST_TEXT_MAX_BYTES;

/// Accepts a post text that is not blank and at most
/// `POST_TEXT_MAX_BYTES` bytes of UTF-8.
pub fn validate(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("post is empty".to_string());
    }
    if text.len() > POST_TEXT_MAX_BYTES {
        return Err(format!("post is longer than {POST_TEXT_MAX_BYTES} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_posts_are_refused() {
        for blank in ["", " ", "\t \n"] {
            assert_eq!(validate(blank), Err("post is empty".to_string()));
        }
    }

    #[test]
    fn the_limit_counts_bytes() {
        assert!(validate(&"a".repeat(POST_TEXT_MAX_BYTES)).is_ok());
        assert_eq!(
            validate(&"a".repeat(POST_TEXT_MAX_BYTES + 1)),
            Err("post is longer than 1024 bytes".to_string())
        );
        // 342 three-byte characters are 1026 bytes.
        assert!(validate(&"€".repeat(342)).is_err());
        assert!(validate(&"€".repeat(341)).is_ok());
    }
}
