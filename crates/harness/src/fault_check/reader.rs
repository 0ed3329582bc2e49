//! Reads every timeline of a deployment as the checks need it: the newest
//! lines through `Posts.Read` on the user's primary, the older ones from
//! that primary's `timeline.data`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tsn_cluster::coord::{channel, server_address, CoordClient};
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_datastore::limits::TIMELINE_READ_MAX_POSTS;
use tsn_datastore::record::TimelineLine;
use tsn_datastore::Layout;
use tsn_proto::tsn::posts_client::PostsClient;
use tsn_proto::tsn::ReadRequest;

use super::files::read_complete_lines;
use super::timelines::{check, Expectation, Line, Report, Timelines, CHECK_USERS_MAX};

/// Time limit of one `Posts.Read` of the reader.
pub const READ_TIMEOUT_MS: u64 = 5_000;
/// How often [`Reader::wait_converged`] reads every timeline again. Reading
/// them is not free, and convergence after a stop takes seconds, not
/// milliseconds.
pub const CONVERGE_POLL_INTERVAL_MS: u64 = 250;

/// Reads timelines from a deployment as the checks need them.
#[derive(Clone)]
pub struct Reader {
    coord: CoordClient,
    datastore_root: PathBuf,
    read_limit: u32,
}

impl Reader {
    /// Reads through the coordinator `coord`; the servers' files are under
    /// `datastore_root` (the `--datastore` of every server).
    pub fn new(coord: CoordClient, datastore_root: &Path) -> Reader {
        Reader {
            coord,
            datastore_root: datastore_root.to_path_buf(),
            read_limit: TIMELINE_READ_MAX_POSTS as u32,
        }
    }

    /// The same reader asking `Posts.Read` for at most `limit` lines, so
    /// that the older lines come from the files sooner: a run with a small
    /// limit must see exactly the timelines a run with the largest sees.
    pub fn with_read_limit(mut self, limit: u32) -> Reader {
        assert!(
            (1..=TIMELINE_READ_MAX_POSTS as u32).contains(&limit),
            "a read limit is 1..={TIMELINE_READ_MAX_POSTS}"
        );
        self.read_limit = limit;
        self
    }

    /// `user`'s whole timeline, oldest first, from its cluster's current
    /// primary: `Posts.Read` gives the newest lines (committed ones only);
    /// when it returns as many as asked, the older lines come from the
    /// primary's `timeline.data`. Each of those precedes a committed line,
    /// so it is committed too.
    pub async fn timeline(&self, user: u32) -> Result<Vec<Line>, String> {
        let info = self
            .coord
            .get_server(user)
            .await
            .map_err(|s| format!("GetServer({user}): {s}"))?;
        let address = server_address(&info);
        let ch = channel(&address, READ_TIMEOUT_MS).map_err(|e| format!("{e:#}"))?;
        let mut posts = PostsClient::new(ch).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        let limit = self.read_limit;
        let read = posts.read(ReadRequest { user, limit });
        let newest = match tokio::time::timeout(Duration::from_millis(READ_TIMEOUT_MS), read).await
        {
            Ok(Ok(reply)) => reply.into_inner().posts,
            Ok(Err(status)) => return Err(format!("Posts.Read({user}) on {address}: {status}")),
            Err(_) => return Err(format!("Posts.Read({user}) on {address}: timed out")),
        };
        if newest.len() > limit as usize {
            return Err(format!(
                "Posts.Read({user}) on {address} returned {} lines, more than the {limit} asked for",
                newest.len()
            ));
        }
        let mut lines: Vec<Line> = newest
            .into_iter()
            .rev()
            .map(|p| Line {
                seq: p.seq,
                post_id: p.post_id,
                author: p.author,
                text: p.text,
            })
            .collect();
        if lines.len() < limit as usize {
            return Ok(lines);
        }
        let oldest_read = lines.first().map_or(0, |l| l.seq);
        let (cluster, server) = match (
            u32::try_from(info.cluster_id),
            u32::try_from(info.server_id),
        ) {
            (Ok(c), Ok(s)) => (c, s),
            _ => return Err(format!("GetServer({user}) named {info:?}")),
        };
        let path = Layout::new(&self.datastore_root, cluster, server).timeline(user);
        let file = tokio::task::spawn_blocking(move || {
            read_complete_lines(&path, |l| serde_json::from_slice::<TimelineLine>(l))
        })
        .await
        .map_err(|e| format!("reading a timeline file: {e}"))??;
        let mut older: Vec<Line> = file
            .into_iter()
            .filter(|l| l.seq < oldest_read)
            .map(|l| Line {
                seq: l.seq,
                post_id: l.post.id,
                author: l.post.author,
                text: l.post.text,
            })
            .collect();
        // The file must have been the primary's for the whole read.
        let again = self
            .coord
            .get_server(user)
            .await
            .map_err(|s| format!("GetServer({user}): {s}"))?;
        if again.server_id != info.server_id {
            return Err(format!(
                "the primary of user {user}'s cluster changed during the read ({} -> {})",
                info.server_id, again.server_id
            ));
        }
        older.append(&mut lines);
        Ok(older)
    }

    /// The timelines of `users`; the first that cannot be read is an error.
    pub async fn timelines(&self, users: &[u32]) -> Result<Timelines, String> {
        assert!(users.len() <= CHECK_USERS_MAX);
        let mut timelines = Timelines::new();
        for &user in users {
            timelines.insert(user, self.timeline(user).await?);
        }
        Ok(timelines)
    }

    /// Reads every user's timeline and checks them against `expect`; a
    /// timeline that cannot be read is reported as such.
    pub async fn check(&self, expect: &Expectation) -> Report {
        let mut timelines = Timelines::new();
        let mut unread = Vec::new();
        for &user in &expect.users {
            match self.timeline(user).await {
                Ok(lines) => {
                    timelines.insert(user, lines);
                }
                Err(why) => unread.push((user, why)),
            }
        }
        let mut report = check(expect, &timelines);
        for (user, why) in unread {
            report.timelines.entry(user).or_default().unread = Some(why);
        }
        report
    }

    /// Checks the deployment until it has converged (every timeline read
    /// and holding every post it must) or `deadline` passed. `Ok` with the
    /// report of the converged deployment (which may still hold other
    /// problems: the caller asserts [`Report::is_clean`]); `Err` with the
    /// last report.
    /// Waits until the timelines hold `expect` (see
    /// [`Reader::wait_converged`]) and panics unless every one is clean:
    /// with the report, and `context()` (e.g. the processes' logs) when
    /// they did not converge in `deadline`. Returns the clean report.
    pub async fn assert_clean(
        &self,
        expect: &Expectation,
        deadline: Duration,
        context: impl FnOnce() -> String,
    ) -> Report {
        match self.wait_converged(expect, deadline).await {
            Ok(r) => {
                assert!(r.is_clean(), "the timelines are wrong:\n{r}");
                r
            }
            Err(r) => panic!("the timelines did not converge:\n{r}\n{}", context()),
        }
    }

    pub async fn wait_converged(
        &self,
        expect: &Expectation,
        deadline: Duration,
    ) -> Result<Report, Report> {
        let start = Instant::now();
        loop {
            let report = self.check(expect).await;
            if report.is_converged() {
                return Ok(report);
            }
            if start.elapsed() >= deadline {
                return Err(report);
            }
            let left = deadline.saturating_sub(start.elapsed());
            tokio::time::sleep(left.min(Duration::from_millis(CONVERGE_POLL_INTERVAL_MS))).await;
        }
    }
}
