//! `follow <id>` and `unfollow <id>`: the classic `Follow` and `UnFollow`
//! calls, answered with a classic reply code.

use tsn_client::reply;
use tsn_client::{CallError, RetryPolicy, Router};
use tsn_proto::csce438::{Reply, Request};

use crate::output::Output;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Follow,
    Unfollow,
}

impl Relation {
    pub fn name(self) -> &'static str {
        match self {
            Relation::Follow => "follow",
            Relation::Unfollow => "unfollow",
        }
    }
}

/// Asks the server to make the user follow (or unfollow) `target`.
/// Repeating either is harmless, so it is retried like any call.
pub async fn run(
    router: &Router,
    user: u32,
    relation: Relation,
    target: u32,
    policy: &RetryPolicy,
) -> Result<Reply, CallError> {
    assert!(target >= 1);
    let request = Request {
        username: user.to_string(),
        arguments: vec![target.to_string()],
    };
    router
        .call(user, policy, |route| {
            let request = request.clone();
            async move {
                let mut sns = route.sns();
                let reply = match relation {
                    Relation::Follow => sns.follow(request).await?,
                    Relation::Unfollow => sns.un_follow(request).await?,
                };
                Ok(reply.into_inner())
            }
        })
        .await
}

/// Prints the answer: the classic sentence, or
/// `{"command":"follow","target":2,"result":"SUCCESS"}`.
pub fn print(out: &Output, relation: Relation, target: u32, answer: &Reply) -> std::io::Result<()> {
    if out.json() {
        let mut value = serde_json::json!({
            "command": relation.name(),
            "target": target,
            "result": answer.msg,
        });
        if !answer.detail.is_empty() {
            value["detail"] = serde_json::json!(answer.detail);
        }
        out.json_line(&value)
    } else {
        out.line(&reply::describe(answer))
    }
}
