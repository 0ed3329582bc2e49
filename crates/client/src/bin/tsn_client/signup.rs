//! `signup <handle>`: creates an account at the coordinator, which decides
//! that the handle is unique and gives the account its client id.

use anyhow::anyhow;
use serde_json::json;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::password::Password;
use tsn_datastore::handle::Handle;
use tsn_proto::tsn::SignUpReply;

use crate::output::Output;

pub async fn run(
    coord: &CoordClient,
    handle: &Handle,
    password: &Password,
) -> anyhow::Result<SignUpReply> {
    coord
        .sign_up(handle.as_str(), password.expose())
        .await
        .map_err(|status| match status.code() {
            tonic::Code::AlreadyExists => anyhow!("the handle {handle} is taken"),
            _ => anyhow!("sign-up failed: {}", status.message()),
        })
}

/// `signed up alice: id 4 on cluster 1`, or
/// `{"handle":"alice","id":4,"cluster":1}`.
pub fn print(out: &Output, reply: &SignUpReply) -> std::io::Result<()> {
    if out.json() {
        out.json_line(&json!({
            "handle": reply.handle,
            "id": reply.user,
            "cluster": reply.cluster,
        }))
    } else {
        out.line(&format!(
            "signed up {}: id {} on cluster {}",
            reply.handle, reply.user, reply.cluster
        ))
    }
}
