//! `timeline [--limit N]`: the newest posts of the user's timeline, read
//! once with `Posts.Read` (no stream).

use std::time::Duration;

use tsn_proto::tsn::{ReadRequest, TimelinePost};

use crate::connection::{CallError, Connection};
use crate::display::ShownPost;
use crate::limits::TIMELINE_LIMIT_MAX;
use crate::output::Output;

/// Up to `limit` posts, newest first.
pub async fn read(
    conn: &mut Connection,
    limit: u32,
    retry_for: Option<Duration>,
) -> Result<Vec<TimelinePost>, CallError> {
    assert!((1..=TIMELINE_LIMIT_MAX).contains(&limit));
    let request = ReadRequest {
        user: conn.user(),
        limit,
    };
    let mut posts = conn
        .call(retry_for, |session| async move {
            let mut client = session.posts;
            Ok(client.read(request).await?.into_inner().posts)
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

/// Prints one post as a classic line or a JSON object.
pub fn show(out: &Output, post: &ShownPost) -> std::io::Result<()> {
    if out.json() {
        out.json_line(&post.json())
    } else {
        out.line(&post.line())
    }
}
