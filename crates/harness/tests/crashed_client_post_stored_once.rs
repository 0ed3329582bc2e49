//! A client killed while its post waits for an unreachable cluster keeps it
//! in its state file; its next run re-sends it, and the post is stored
//! once, however often it is sent.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::path::Path;

use tsn_datastore::Op;
use tsn_harness::results::duplicate_ids;
use tsn_harness::{wait_for, Deployment, InteractiveClient, Member};

use common::{ms, start, wait_all_in_sync, CONVERGE_DEADLINE_MS};

/// How long the crashed client would have kept retrying.
const PENDING_CLIENT_RETRY_FOR_MS: u64 = 60_000;

/// The pending posts of a client state file: (post id, text) in order.
fn parse_pending(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:?}"))?;
    let list = value
        .get("pending")
        .and_then(|p| p.as_array())
        .ok_or_else(|| format!("no \"pending\" array: {text:?}"))?;
    list.iter()
        .map(|p| {
            let field = |name: &str| {
                p.get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| format!("a pending post without {name}: {p}"))
            };
            Ok((field("post_id")?, field("text")?))
        })
        .collect()
}

/// The pending posts in the state file `path` (none if it is missing).
fn pending_in(path: &Path) -> Result<Vec<(String, String)>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_pending(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Checks that post `post_id` is stored exactly once: in `user`'s timeline
/// as the primary of `cluster` serves it, and in that primary's journal.
async fn stored_once(d: &Deployment, cluster: u32, user: u32, post_id: &str) {
    let timeline = d.timeline(user).await;
    let n = timeline.iter().filter(|p| p.post_id == post_id).count();
    assert_eq!(
        n, 1,
        "post {post_id} is {n} times in user {user}'s timeline: {timeline:?}"
    );
    assert!(duplicate_ids(&timeline).is_empty(), "{timeline:?}");
    let (primary, _) = d.primary_of(cluster).await;
    let journal = d.journal(cluster, primary);
    let n = journal
        .iter()
        .filter(|e| matches!(&e.op, Op::Post(p) if p.id == post_id))
        .count();
    assert_eq!(n, 1, "post {post_id} is {n} times in the primary's journal");
}

/// Runs `tsn_client list` for user 1 and checks that it re-sent exactly one
/// pending post.
async fn list_resends_one(d: &Deployment) {
    let (code, stdout, stderr) = d.client(&["-i", "1", "list"]).await;
    assert_eq!(
        code, 0,
        "tsn_client list failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("resent 1 pending post(s)"),
        "tsn_client list did not say it re-sent the pending post:\nstderr:\n{stderr}"
    );
}

/// A client killed while its post waits for an unreachable cluster keeps
/// it in its state file; its next run re-sends it, and the post is stored
/// once — also when the same pending file is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_crash_pending_post_is_stored_once() {
    let mut d = start(1, 1).await;
    d.login_all(&[1]).await;
    wait_all_in_sync(&d).await;
    let (primary, _) = d.primary_of(1).await;
    let servers = d.server_ids(1);
    for &id in &servers {
        d.kill9(Member::Server {
            cluster: 1,
            server_id: id,
        });
    }

    let state_dir = d.client_state_dir();
    let state_file = state_dir.join("1.json");
    let coord = d.coord_addr();
    let retry_for = PENDING_CLIENT_RETRY_FOR_MS.to_string();
    let dir_arg = state_dir.to_string_lossy().into_owned();
    let mut client = InteractiveClient::spawn(&[
        "-c",
        &coord,
        "--state-dir",
        &dir_arg,
        "-i",
        "1",
        "--retry-for-ms",
        &retry_for,
        "post",
        "hello-pending",
    ]);
    let pending = wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "the client's state file to list the pending post",
        || {
            let file = state_file.clone();
            async move {
                let posts = pending_in(&file)?;
                if posts.is_empty() {
                    Err("no pending post yet".to_string())
                } else {
                    Ok(posts)
                }
            }
        },
    )
    .await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let (post_id, text) = pending[0].clone();
    assert_eq!(text, "hello-pending");
    let saved = match std::fs::read(&state_file) {
        Ok(b) => b,
        Err(e) => panic!("reading {}: {e}", state_file.display()),
    };
    client.kill().await;
    assert_eq!(
        client.wait_exit(ms(CONVERGE_DEADLINE_MS)).await,
        Some(-1),
        "the client must have died of the kill; stdout:\n{}\nstderr:\n{}",
        client.stdout(),
        client.stderr()
    );

    // The primary first, so that it is the one asking for the role.
    let mut order = servers.clone();
    order.sort_by_key(|&id| id != primary);
    for id in order {
        d.restart(Member::Server {
            cluster: 1,
            server_id: id,
        })
        .await;
    }
    d.wait_healthy().await;

    list_resends_one(&d).await;
    stored_once(&d, 1, 1, &post_id).await;
    assert_eq!(pending_in(&state_file), Ok(Vec::new()), "still pending");

    // The same pending file once more: the server stores the id once.
    if let Err(e) = std::fs::write(&state_file, &saved) {
        panic!("restoring {}: {e}", state_file.display());
    }
    list_resends_one(&d).await;
    stored_once(&d, 1, 1, &post_id).await;
    assert_eq!(pending_in(&state_file), Ok(Vec::new()), "still pending");
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn pending_files_are_parsed() {
        let text = r#"{"pending":[{"post_id":"1-ab","text":"hi"}]}"#;
        assert_eq!(
            parse_pending(text),
            Ok(vec![("1-ab".to_string(), "hi".to_string())])
        );
        assert_eq!(parse_pending(r#"{"pending":[]}"#), Ok(Vec::new()));
        assert!(parse_pending("{").is_err());
        assert!(parse_pending(r#"{"pending":[{"post_id":"1-ab"}]}"#).is_err());
        assert!(parse_pending(r#"{"other":1}"#).is_err());
    }
}
