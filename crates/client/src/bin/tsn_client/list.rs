//! `list`: every user tsn knows and the user's followers (classic `List`).

use serde_json::{json, Value};
use tsn_client::{CallError, RetryPolicy, Router};
use tsn_cluster::coord::CoordClient;
use tsn_datastore::handle::Pattern;
use tsn_proto::csce438::{ListReply, Request};
use tsn_proto::tsn::ListAccountsReply;

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

/// The accounts whose handle matches `pattern`, from the coordinator.
pub async fn accounts(coord: &CoordClient, pattern: &Pattern) -> anyhow::Result<ListAccountsReply> {
    coord
        .list_accounts(pattern.as_str())
        .await
        .map_err(|s| anyhow::anyhow!("cannot list accounts: {}", s.message()))
}

/// One line per account, `alice (id 4, cluster 1)`, then a note if more
/// matched; or `{"accounts":[{"handle":..,"id":..,"cluster":..}],"truncated":..}`.
pub fn print_accounts(out: &Output, reply: &ListAccountsReply) -> std::io::Result<()> {
    if out.json() {
        let accounts: Vec<Value> = reply
            .accounts
            .iter()
            .map(|a| json!({"handle": a.handle, "id": a.user, "cluster": a.cluster}))
            .collect();
        return out.json_line(&json!({"accounts": accounts, "truncated": reply.truncated}));
    }
    if reply.accounts.is_empty() {
        out.line("No account matches")?;
    }
    for a in &reply.accounts {
        out.line(&format!(
            "{} (id {}, cluster {})",
            a.handle, a.user, a.cluster
        ))?;
    }
    if reply.truncated {
        out.line("(more accounts match: narrow the pattern)")?;
    }
    Ok(())
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
