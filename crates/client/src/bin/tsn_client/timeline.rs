//! `timeline [--limit N]`: the newest posts of the user's timeline, read
//! once with `Posts.Read` (no stream); and `timeline --watch` (and the
//! interactive timeline mode): the stream, kept open through failovers by
//! the library's [`TimelineWatch`], each new post shown as it arrives.

use tsn_client::limits::TIMELINE_LIMIT_MAX;
use tsn_client::{user_policy, CallError, Event, RetryPolicy, Router, TimelineWatch};
use tsn_proto::tsn::{ReadRequest, TimelinePost};

use crate::display::ShownPost;
use crate::output::Output;

/// Up to `limit` posts, newest first.
pub async fn read(
    router: &Router,
    user: u32,
    limit: u32,
    policy: &RetryPolicy,
) -> Result<Vec<TimelinePost>, CallError> {
    assert!((1..=TIMELINE_LIMIT_MAX).contains(&limit));
    let request = ReadRequest { user, limit };
    let mut posts = router
        .call(user, policy, |route| async move {
            Ok(route.posts().read(request).await?.into_inner().posts)
        })
        .await?;
    // A server that sends more than asked does not get to flood the screen.
    posts.truncate(limit as usize);
    Ok(posts)
}

pub fn print(out: &Output, posts: &[TimelinePost]) -> std::io::Result<()> {
    for post in posts {
        show(out, &ShownPost::from_read(post))?;
    }
    Ok(())
}

/// Shows `user`'s timeline until `max_posts` were shown (forever with
/// `None`) or the server gives a final refusal. A broken stream is reopened
/// without a total deadline.
pub async fn watch(
    router: Router,
    user: u32,
    out: Output,
    max_posts: Option<u64>,
) -> anyhow::Result<()> {
    if max_posts == Some(0) {
        return Ok(());
    }
    let mut stream = TimelineWatch::new(router, user, user_policy(None));
    let mut shown: u64 = 0;
    loop {
        let Event::Post(message) = stream.next().await? else {
            continue;
        };
        show(&out, &ShownPost::from_message(&message))?;
        shown += 1;
        if max_posts.is_some_and(|max| shown >= max) {
            return Ok(());
        }
    }
}

/// Prints one post as a classic line or a JSON object.
pub fn show(out: &Output, post: &ShownPost) -> std::io::Result<()> {
    if out.json() {
        out.json_line(&post.json())
    } else {
        out.line(&post.line())
    }
}
