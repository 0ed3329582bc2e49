//! The acknowledgement of a one-shot `post`, as the user reads it.

use tsn_proto::tsn::PostReply;

use crate::output::Output;

/// Prints the acknowledgement of a one-shot `post`.
pub fn print(out: &Output, post_id: &str, reply: &PostReply) -> std::io::Result<()> {
    if out.json() {
        out.json_line(&serde_json::json!({
            "post_id": post_id,
            "seq": reply.seq,
            "duplicate": reply.duplicate,
        }))
    } else if reply.duplicate {
        out.line(&format!(
            "Posted {post_id} (seq {}, already stored)",
            reply.seq
        ))
    } else {
        out.line(&format!("Posted {post_id} (seq {})", reply.seq))
    }
}
