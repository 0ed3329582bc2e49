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
use tsn_proto::tsn::{LoginRequest, LogoutRequest};

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
