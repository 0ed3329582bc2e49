//! How a timeline post looks, whether it came from `Posts.Read` or from the
//! timeline stream: `<author> (<time>) >> <text>` like the classic client,
//! or a JSON object.

use serde_json::{json, Value};
use tsn_proto::csce438::Message;
use tsn_proto::tsn::TimelinePost;

/// One timeline post, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShownPost {
    /// The author's id as the server sent it.
    pub author: String,
    pub text: String,
    pub ts_ms: i64,
    pub post_id: String,
    pub seq: u64,
}

impl ShownPost {
    pub fn from_read(post: &TimelinePost) -> ShownPost {
        ShownPost {
            author: post.author.to_string(),
            text: post.text.clone(),
            ts_ms: post.ts_ms,
            post_id: post.post_id.clone(),
            seq: post.seq,
        }
    }

    /// A post from the timeline stream; the classic server ends its
    /// messages with a newline, which the printed line already has.
    pub fn from_message(message: &Message) -> ShownPost {
        let ts_ms = message
            .timestamp
            .as_ref()
            .map(|t| {
                t.seconds
                    .saturating_mul(1_000)
                    .saturating_add(i64::from(t.nanos) / 1_000_000)
            })
            .unwrap_or(0);
        ShownPost {
            author: message.username.clone(),
            text: message.msg.trim_end_matches(['\n', '\r']).to_string(),
            ts_ms,
            post_id: message.post_id.clone(),
            seq: message.seq,
        }
    }

    /// `<author> (<YYYY-MM-DD HH:MM:SS>) >> <text>`, time in UTC.
    pub fn line(&self) -> String {
        format!(
            "{} ({}) >> {}",
            self.author,
            time_text(self.ts_ms),
            self.text
        )
    }

    /// `{"author":1,"text":..,"ts_ms":..,"post_id":..,"seq":..}`; the author
    /// is a number whenever the server sent one.
    pub fn json(&self) -> Value {
        let author = match self.author.parse::<u64>() {
            Ok(id) => json!(id),
            Err(_) => json!(self.author),
        };
        json!({
            "author": author,
            "text": self.text,
            "ts_ms": self.ts_ms,
            "post_id": self.post_id,
            "seq": self.seq,
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC; a time out of range prints as such.
pub fn time_text(ts_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ts_ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => "time out of range".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_proto::Timestamp;

    #[test]
    fn classic_line_in_utc() {
        let post = ShownPost {
            author: "3".to_string(),
            text: "hello there".to_string(),
            ts_ms: 1_700_000_000_123,
            post_id: "3-ab".to_string(),
            seq: 9,
        };
        assert_eq!(post.line(), "3 (2023-11-14 22:13:20) >> hello there");
        assert_eq!(
            post.json(),
            json!({"author":3,"text":"hello there","ts_ms":1_700_000_000_123_i64,"post_id":"3-ab","seq":9})
        );
        assert_eq!(time_text(i64::MAX), "time out of range");
    }

    #[test]
    fn stream_messages_lose_their_trailing_newline() {
        let message = Message {
            username: "5".to_string(),
            msg: "hi\n".to_string(),
            timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 456_000_000,
            }),
            post_id: "5-cd".to_string(),
            seq: 4,
            resume_after_seq: 0,
        };
        let post = ShownPost::from_message(&message);
        assert_eq!(post.text, "hi");
        assert_eq!(post.ts_ms, 1_700_000_000_456);
        assert_eq!(post.line(), "5 (2023-11-14 22:13:20) >> hi");
    }
}
