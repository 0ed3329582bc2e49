//! The classic reply codes of `csce438.Reply.msg` and the sentences the
//! classic client shows for them, so a user of either client reads the same.

use tsn_proto::csce438::Reply;

pub const SUCCESS: &str = "SUCCESS";

/// The classic sentence for a reply code.
pub fn message(code: &str) -> &'static str {
    match code {
        SUCCESS => "Command completed successfully",
        "FAILURE_ALREADY_EXISTS" => "Input username already exists, command failed",
        "FAILURE_NOT_EXISTS" | "FAILURE_INVALID_USERNAME" => "Invalid username, command failed",
        "FAILURE_NOT_A_FOLLOWER" => "You are not a follower, command failed",
        "FAILURE_INVALID" => "Invalid command, command failed",
        _ => "Command failed with unknown reason",
    }
}

pub fn is_success(reply: &Reply) -> bool {
    reply.msg == SUCCESS
}

/// The sentence for `reply`, with the server's detail in parentheses when
/// it gave one.
pub fn describe(reply: &Reply) -> String {
    let sentence = message(&reply.msg);
    let detail = reply.detail.trim();
    if detail.is_empty() {
        sentence.to_string()
    } else {
        format!("{sentence} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(msg: &str, detail: &str) -> Reply {
        Reply {
            msg: msg.to_string(),
            detail: detail.to_string(),
        }
    }

    #[test]
    fn classic_sentences() {
        let cases = [
            ("SUCCESS", "Command completed successfully"),
            (
                "FAILURE_ALREADY_EXISTS",
                "Input username already exists, command failed",
            ),
            ("FAILURE_NOT_EXISTS", "Invalid username, command failed"),
            (
                "FAILURE_INVALID_USERNAME",
                "Invalid username, command failed",
            ),
            (
                "FAILURE_NOT_A_FOLLOWER",
                "You are not a follower, command failed",
            ),
            ("FAILURE_INVALID", "Invalid command, command failed"),
            ("FAILURE_UNKNOWN", "Command failed with unknown reason"),
            ("", "Command failed with unknown reason"),
            ("success", "Command failed with unknown reason"),
        ];
        for (code, want) in cases {
            assert_eq!(message(code), want, "{code}");
        }
    }

    #[test]
    fn detail_goes_in_parentheses() {
        assert_eq!(
            describe(&reply("FAILURE_NOT_EXISTS", "user 9 does not exist")),
            "Invalid username, command failed (user 9 does not exist)"
        );
        assert_eq!(
            describe(&reply("SUCCESS", "  ")),
            "Command completed successfully"
        );
    }

    #[test]
    fn only_success_succeeds() {
        assert!(is_success(&reply("SUCCESS", "")));
        assert!(!is_success(&reply("FAILURE_INVALID", "")));
        assert!(!is_success(&reply("", "")));
    }
}
