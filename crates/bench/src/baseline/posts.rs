//! A post to the Redis baseline: one script, run by its SHA (`EVALSHA`),
//! that does what a tsn primary does for a post — the line into the
//! author's and every follower's timeline, pushed to the followers that
//! watch — followed in the same pipeline by the wait for the replica.
//!
//! The follow graph lives in Redis as a set of followers per author
//! (`followers:<id>`), as a tsn primary knows the followers from its own
//! journal; the script reads it, so the client sends one small request per
//! post, as a tsn client does. Timelines are lists (`timeline:<id>`),
//! newest first, trimmed to [`TIMELINE_KEEP_LINES`]. Followers with a live
//! subscription are in the set `live` (added by each subscriber once
//! subscribed); the script publishes the line on `posts:<id>` to those.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script, Value};

use crate::limits::POST_CALL_TIMEOUT_MS;

/// Lines kept in each Redis timeline list.
pub const TIMELINE_KEEP_LINES: u32 = 1_000;
/// Members added per `SADD` of the follow graph, and commands per
/// pipeline while loading it.
const SETUP_PIPELINE_MAX_COMMANDS: usize = 1_000;
/// The set of followers whose subscription is live.
pub const LIVE_KEY: &str = "live";

/// KEYS[1] the author's followers, KEYS[2] the live set; ARGV[1] the
/// author, ARGV[2] the line, ARGV[3] the lines kept. Returns the number of
/// followers.
const POST_SCRIPT: &str = r"
local line = ARGV[2]
local keep = tonumber(ARGV[3]) - 1
local followers = redis.call('SMEMBERS', KEYS[1])
local own = 'timeline:' .. ARGV[1]
redis.call('LPUSH', own, line)
redis.call('LTRIM', own, 0, keep)
for _, f in ipairs(followers) do
  local k = 'timeline:' .. f
  redis.call('LPUSH', k, line)
  redis.call('LTRIM', k, 0, keep)
end
if #followers > 0 then
  local live = redis.call('SMISMEMBER', KEYS[2], unpack(followers))
  for i, f in ipairs(followers) do
    if live[i] == 1 then
      redis.call('PUBLISH', 'posts:' .. f, line)
    end
  end
end
return #followers
";

pub fn followers_key(user: u32) -> String {
    format!("followers:{user}")
}

pub fn channel(user: u32) -> String {
    format!("posts:{user}")
}

/// The line of a post: its id, a tab, its text (the id is what a
/// subscriber needs to time the delivery).
pub fn line(post_id: &str, text: &str) -> String {
    format!("{post_id}\t{text}")
}

/// The post id at the start of a published line.
pub fn id_of(line: &str) -> Option<&str> {
    line.split_once('\t').map(|(id, _)| id)
}

/// How a post waits for the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaWait {
    /// Redis 7.2 and later: `WAITAOF 1 1`, the write fsynced on the
    /// primary and on one replica.
    WaitAof,
    /// Older: `WAIT 1`, one replica acknowledged the write's offset. With
    /// `appendfsync always` a replica flushes and fsyncs its AOF before
    /// it writes its replies in the same turn of its event loop, its
    /// acknowledgement to the primary included.
    Wait,
}

impl ReplicaWait {
    pub fn for_version(version: (u32, u32)) -> ReplicaWait {
        if version >= (7, 2) {
            ReplicaWait::WaitAof
        } else {
            ReplicaWait::Wait
        }
    }
}

/// Opens a connection with the bench's call timeout (the crate's default
/// of 500 ms would cut a post stuck behind a slow fsync short).
pub async fn connect(client: &Client) -> anyhow::Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_millis(POST_CALL_TIMEOUT_MS)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Writes the follow graph: `followers_of` as one set per author.
pub async fn load_graph(
    con: &mut MultiplexedConnection,
    followers_of: &BTreeMap<u32, BTreeSet<u32>>,
) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    let mut queued = 0;
    for (author, followers) in followers_of {
        let list: Vec<u32> = followers.iter().copied().collect();
        for chunk in list.chunks(SETUP_PIPELINE_MAX_COMMANDS) {
            pipe.cmd("SADD")
                .arg(followers_key(*author))
                .arg(chunk)
                .ignore();
            queued += 1;
            if queued >= SETUP_PIPELINE_MAX_COMMANDS {
                pipe.query_async::<()>(con).await?;
                pipe = redis::pipe();
                queued = 0;
            }
        }
    }
    if queued > 0 {
        pipe.query_async::<()>(con).await?;
    }
    Ok(())
}

/// The posting side of the baseline: one connection per poster (a wait
/// for the replica holds its connection, as a blocked call does), and the
/// loaded script's SHA.
pub struct RedisPosts {
    conns: Vec<MultiplexedConnection>,
    sha: String,
    wait: ReplicaWait,
}

impl RedisPosts {
    /// `lanes` connections to `client`'s server, with the script loaded.
    pub async fn open(client: &Client, lanes: usize, wait: ReplicaWait) -> anyhow::Result<Self> {
        let mut conns = Vec::with_capacity(lanes.max(1));
        for _ in 0..lanes.max(1) {
            conns.push(connect(client).await?);
        }
        let script = Script::new(POST_SCRIPT);
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(POST_SCRIPT)
            .query_async(&mut conns[0])
            .await?;
        anyhow::ensure!(
            sha == script.get_hash(),
            "Redis loaded the script as {sha}, not {}",
            script.get_hash()
        );
        Ok(RedisPosts { conns, sha, wait })
    }

    pub fn wait(&self) -> ReplicaWait {
        self.wait
    }

    /// Post `post_id` by `author` on connection `lane`: the script, then
    /// the wait for the replica, in one round trip. `Err` says why it is
    /// not acknowledged.
    pub async fn post(
        &self,
        lane: usize,
        author: u32,
        post_id: &str,
        text: &str,
    ) -> Result<(), String> {
        let mut con = self.conns[lane % self.conns.len()].clone();
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(&self.sha)
            .arg(2)
            .arg(followers_key(author))
            .arg(LIVE_KEY)
            .arg(author)
            .arg(line(post_id, text))
            .arg(TIMELINE_KEEP_LINES)
            .ignore();
        match self.wait {
            ReplicaWait::WaitAof => pipe.cmd("WAITAOF").arg(1).arg(1).arg(POST_CALL_TIMEOUT_MS),
            ReplicaWait::Wait => pipe.cmd("WAIT").arg(1).arg(POST_CALL_TIMEOUT_MS),
        };
        let (reply,): (Value,) = pipe
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        if replicas_acked(&reply) >= 1 {
            Ok(())
        } else {
            Err(format!(
                "no replica acknowledged within {POST_CALL_TIMEOUT_MS} ms ({reply:?})"
            ))
        }
    }
}

/// Replicas that acknowledged, from a `WAIT` reply (an integer) or a
/// `WAITAOF` reply (local fsyncs, replica fsyncs).
fn replicas_acked(reply: &Value) -> i64 {
    match reply {
        Value::Int(n) => *n,
        Value::Array(v) => match v.as_slice() {
            [Value::Int(local), Value::Int(replicas)] if *local >= 1 => *replicas,
            _ => 0,
        },
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_id() {
        let l = line("3-b0123abcdn7", "hello\tworld");
        assert_eq!(id_of(&l), Some("3-b0123abcdn7"));
        assert_eq!(id_of("no tab"), None);
    }

    #[test]
    fn the_wait_follows_the_version() {
        assert_eq!(ReplicaWait::for_version((7, 0)), ReplicaWait::Wait);
        assert_eq!(ReplicaWait::for_version((7, 2)), ReplicaWait::WaitAof);
        assert_eq!(ReplicaWait::for_version((8, 0)), ReplicaWait::WaitAof);
    }

    #[test]
    fn replica_acknowledgements_are_read_from_both_replies() {
        assert_eq!(replicas_acked(&Value::Int(1)), 1);
        assert_eq!(replicas_acked(&Value::Int(0)), 0);
        assert_eq!(
            replicas_acked(&Value::Array(vec![Value::Int(1), Value::Int(1)])),
            1
        );
        // Not fsynced locally: not acknowledged.
        assert_eq!(
            replicas_acked(&Value::Array(vec![Value::Int(0), Value::Int(1)])),
            0
        );
        assert_eq!(replicas_acked(&Value::Nil), 0);
    }
}
