//! Posting exactly once: record the post in the pending file, send it with
//! the retry rule, forget it once acknowledged.

use std::io::Read;

use tsn_proto::tsn::{PostReply, PostRequest};

use crate::error::CallError;
use crate::limits::POST_ID_RANDOM_HEX_CHARS;
use crate::pending::{PendingError, PendingPost, PendingStore};
use crate::post_text;
use crate::retry::RetryPolicy;
use crate::router::Router;

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Pending(#[from] PendingError),
    #[error("cannot choose a post id: {0}")]
    Random(std::io::Error),
    /// The server finally refused the post; it is no longer pending.
    #[error("{0}")]
    Refused(CallError),
    /// tsn stayed unreachable; the post stays pending and is sent again at
    /// the next start.
    #[error("{0}; the post is kept and will be sent again at the next start")]
    Kept(CallError),
    /// tsn stayed unreachable while re-sending the posts of an earlier run.
    #[error("{error}; {pending} earlier post(s) still pending, kept for the next start")]
    ResendKept { error: CallError, pending: usize },
}

/// A new post id: `<user>-<16 random hex characters>`, so ids of different
/// users never collide and ids of one user collide with odds of 2^-64.
pub fn new_post_id(user: u32) -> Result<String, std::io::Error> {
    let mut bytes = [0u8; POST_ID_RANDOM_HEX_CHARS / 2];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex.len(), POST_ID_RANDOM_HEX_CHARS);
    Ok(format!("{user}-{hex}"))
}

/// Posts `text` as `user`: validated, recorded as pending in `store` (the
/// store of `user`), sent until acknowledged or `policy` gives up.
pub async fn post(
    router: &Router,
    user: u32,
    store: &PendingStore,
    text: &str,
    policy: &RetryPolicy,
) -> Result<(String, PostReply), PostError> {
    post_text::validate(text).map_err(PostError::Invalid)?;
    let pending = PendingPost {
        post_id: new_post_id(user).map_err(PostError::Random)?,
        text: text.to_string(),
    };
    store.add(&pending)?;
    let reply = send(router, user, store, &pending, policy).await?;
    Ok((pending.post_id, reply))
}

/// Sends one pending post and settles its entry in the pending file.
async fn send(
    router: &Router,
    user: u32,
    store: &PendingStore,
    pending: &PendingPost,
    policy: &RetryPolicy,
) -> Result<PostReply, PostError> {
    let request = PostRequest {
        user,
        post_id: pending.post_id.clone(),
        text: pending.text.clone(),
    };
    let result = router
        .call(user, policy, |route| {
            let request = request.clone();
            async move { Ok(route.posts().post(request).await?.into_inner()) }
        })
        .await;
    match result {
        Ok(reply) => {
            store.remove(&pending.post_id)?;
            Ok(reply)
        }
        Err(error @ CallError::GaveUp { .. }) => Err(PostError::Kept(error)),
        Err(error) => {
            store.remove(&pending.post_id)?;
            Err(PostError::Refused(error))
        }
    }
}

/// What [`resend_pending`] did.
#[derive(Debug, Default)]
pub struct Resent {
    /// Posts acknowledged now.
    pub acknowledged: usize,
    /// Posts the server finally refused, with why: no longer pending.
    pub dropped: Vec<(String, CallError)>,
}

/// Sends again every post left pending by an earlier run (a crash, or an
/// outage longer than its retries), with its original id, so each is stored
/// exactly once. A post the server finally refuses is dropped (and listed,
/// for the caller to tell the user); an unreachable tsn stops the resend
/// with an error and leaves the rest pending.
pub async fn resend_pending(
    router: &Router,
    user: u32,
    store: &PendingStore,
    policy: &RetryPolicy,
) -> Result<Resent, PostError> {
    let posts = store.load()?;
    let total = posts.len();
    let mut resent = Resent::default();
    for (done, pending) in posts.iter().enumerate() {
        match send(router, user, store, pending, policy).await {
            Ok(_) => resent.acknowledged += 1,
            Err(PostError::Refused(error)) => resent.dropped.push((pending.post_id.clone(), error)),
            Err(PostError::Kept(error)) => {
                return Err(PostError::ResendKept {
                    error,
                    pending: total - done,
                });
            }
            Err(error) => return Err(error),
        }
    }
    Ok(resent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_ids_name_the_user_and_differ() {
        let a = new_post_id(12).unwrap();
        let b = new_post_id(12).unwrap();
        assert_ne!(a, b);
        let (user, hex) = a.split_once('-').unwrap();
        assert_eq!(user, "12");
        assert_eq!(hex.len(), POST_ID_RANDOM_HEX_CHARS);
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
