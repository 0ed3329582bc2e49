//! `login` and `logout`: an account's session. The password goes to the
//! primary of the account's cluster, which checks it and answers with a
//! session token; the token is kept in the state directory (mode 0600,
//! `tsn_client::session`) for every later command. `logout` ends the
//! session on the cluster, then forgets it here.

use anyhow::anyhow;
use serde_json::json;
use tsn_client::limits::SERVER_CALL_TIMEOUT_MS;
use tsn_client::session::Session;
use tsn_client::{CallError, RetryPolicy, Router, RouterConfig};
use tsn_cluster::coord::CoordClient;
use tsn_cluster::password::Password;
use tsn_proto::tsn::{AttachRequest, LoginRequest, LogoutRequest};

use crate::output::Output;

/// Exchanges `password` for a session of `user`.
pub async fn log_in(
    coord: &CoordClient,
    user: u32,
    password: &Password,
    policy: &RetryPolicy,
) -> anyhow::Result<Session> {
    // No classic Login before the call: an account's id refuses it
    // without the token this call is to get.
    let router = Router::new(
        coord.clone(),
        RouterConfig::per_user(SERVER_CALL_TIMEOUT_MS),
    );
    let request = LoginRequest {
        user,
        password: password.expose().to_string(),
    };
    let reply = router
        .call(user, policy, |route| {
            let request = request.clone();
            async move { Ok(route.sessions().login(request).await?.into_inner()) }
        })
        .await
        .map_err(|e| match e {
            CallError::Refused(status) if status.code() == tonic::Code::Unauthenticated => {
                anyhow!("{}", status.message())
            }
            other => anyhow!("login failed: {other}"),
        })?;
    Ok(Session {
        user,
        handle: reply.handle,
        token: reply.token,
        expires_ms: reply.expires_ms,
    })
}

/// Ends the session the router carries.
pub async fn log_out(router: &Router, user: u32, policy: &RetryPolicy) -> anyhow::Result<()> {
    router
        .call(user, policy, |route| async move {
            Ok(route
                .sessions()
                .logout(LogoutRequest { user })
                .await?
                .into_inner())
        })
        .await
        .map_err(|e| anyhow!("logout failed: {e}"))?;
    Ok(())
}

/// `logged in as alice (id 4) on cluster 1`, or its JSON.
pub fn print_logged_in(out: &Output, handle: &str, user: u32, cluster: u32) -> std::io::Result<()> {
    if out.json() {
        out.json_line(&json!({"logged_in": user, "handle": handle, "cluster": cluster}))
    } else {
        out.line(&format!(
            "logged in as {handle} (id {user}) on cluster {cluster}"
        ))
    }
}

/// How often an interactive session of an account says it is online, in
/// ms: well within the server's `ONLINE_TIMEOUT_MS` (15 s).
pub const ATTACH_INTERVAL_MS: u64 = 5_000;

/// Attaches this interactive session (`session_id`) of `user`: refused
/// with a clear message when another one is online and `take_over` is not
/// set. Then attaches again every [`ATTACH_INTERVAL_MS`] in the background
/// and ends the process when a login elsewhere took this one over.
pub async fn attach_interactive(
    router: &Router,
    user: u32,
    state_dir: &std::path::Path,
    take_over: bool,
    policy: &RetryPolicy,
) -> anyhow::Result<()> {
    let session_id = interactive_id(state_dir, user)?;
    attach_once(router, user, &session_id, take_over, policy)
        .await
        .map_err(|e| match e {
            CallError::Refused(s) if s.code() == tonic::Code::FailedPrecondition => {
                anyhow!("{}", s.message())
            }
            other => anyhow!("{other}"),
        })?;
    let router = router.clone();
    let policy = *policy;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(ATTACH_INTERVAL_MS)).await;
            match attach_once(&router, user, &session_id, false, &policy).await {
                Err(CallError::Refused(s))
                    if matches!(
                        s.code(),
                        tonic::Code::Aborted | tonic::Code::FailedPrecondition
                    ) =>
                {
                    eprintln!("error: {}", s.message());
                    std::process::exit(1);
                }
                // Unreachable for now: the next attach tries again.
                _ => {}
            }
        }
    });
    Ok(())
}

/// This client's interactive session id for `user`: kept in
/// `<state-dir>/<id>.interactive`, so that the same client started again
/// after a crash is the same session, not a second login.
fn interactive_id(state_dir: &std::path::Path, user: u32) -> anyhow::Result<String> {
    let path = state_dir.join(format!("{user}.interactive"));
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_string());
        }
    }
    let id: String = tsn_cluster::session::new_token()
        .map_err(|e| anyhow!("no randomness: {e}"))?
        .chars()
        .take(32)
        .collect();
    tsn_datastore::jsonl::write_atomic(&path, format!("{id}\n").as_bytes())
        .map_err(|e| anyhow!("cannot keep the session id: {e}"))?;
    Ok(id)
}

async fn attach_once(
    router: &Router,
    user: u32,
    session_id: &str,
    take_over: bool,
    policy: &RetryPolicy,
) -> Result<(), CallError> {
    let request = AttachRequest {
        user,
        session_id: session_id.to_string(),
        take_over,
    };
    router
        .call(user, policy, |route| {
            let request = request.clone();
            async move { Ok(route.sessions().attach(request).await?.into_inner()) }
        })
        .await
        .map(|_| ())
}
