//! `list`: every user tsn knows and the user's followers (classic `List`).

use serde_json::{json, Value};
use tsn_client::{CallError, RetryPolicy, Router};
use tsn_proto::csce438::{ListReply, Request};

use crate::output::Output;

pub async fn run(router: &Router, user: u32, policy: &RetryPolicy) -> Result<ListReply, CallError> {
    let request = Request {
        username: user.to_string(),
        arguments: Vec::new(),
    };
    router
        .call(user, policy, |route| {
            let request = request.clone();
            async move {
                let mut sns = route.sns();
                Ok(sns.list(request).await?.into_inner())
            }
        })
        .await
}

/// `All users: 1, 2, 3` and `Followers: 2`, ids as the server sent them;
/// or `{"all_users":[1,2,3],"followers":[2]}`.
pub fn print(out: &Output, list: &ListReply) -> std::io::Result<()> {
    if out.json() {
        out.json_line(&json!({
            "all_users": ids_json(&list.all_users),
            "followers": ids_json(&list.followers),
        }))
    } else {
        out.line(&format!("All users: {}", list.all_users.join(", ")))?;
        out.line(&format!("Followers: {}", list.followers.join(", ")))
    }
}

/// Ids as JSON numbers; an id that is not a number (no tsn server sends
/// one) stays a string rather than being lost.
fn ids_json(ids: &[String]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| match id.trim().parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => json!(id),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_numbers() {
        let ids = vec!["1".to_string(), "22".to_string(), "x".to_string()];
        assert_eq!(ids_json(&ids), json!([1, 22, "x"]));
        assert_eq!(ids_json(&[]), json!([]));
    }
}
