//! The core end-to-end scenarios of tsn, each on its own deployment of the
//! real binaries, driven through the gRPC API and `tsn_client` as a user
//! would drive them.
//!
//! Build the binaries first: `cargo build --bins`.

use std::time::{Duration, Instant};

use tonic::Code;
use tsn_datastore::{Entry, Op, Post};
use tsn_harness::results::{
    client_json_posts, duplicate_ids, ids, json_text, jsonl_problems, one_line_error, post_texts,
    texts,
};
use tsn_harness::stream::texts_of;
use tsn_harness::{Api, Deployment};
use tsn_proto::csce438::Message;
use tsn_proto::tsn::TimelinePost;

/// The sync services' poll interval in these tests.
const Q_MS: u64 = 500;
/// The delivery bound the design promises: one poll plus a second.
const DELIVERY_BOUND_MS: u64 = Q_MS + 1_000;
/// How long a test waits for messages it knows are coming.
const ARRIVAL_DEADLINE_MS: u64 = 30_000;
/// How long an interactive client may take to exit once its input ends
/// (it is killed after that: exiting at the end of input in timeline mode
/// is not part of the contract).
const CLIENT_EXIT_DEADLINE_MS: u64 = 5_000;
/// Posts in a timeline stream's initial batch.
const INITIAL_BATCH_POSTS: usize = 20;
/// Longest post text, in bytes.
const POST_TEXT_MAX_BYTES: usize = tsn_datastore::limits::POST_TEXT_MAX_BYTES;

const SUCCESS: &str = "SUCCESS";
const ALREADY_EXISTS: &str = "FAILURE_ALREADY_EXISTS";
const INVALID_USERNAME: &str = "FAILURE_INVALID_USERNAME";
const NOT_A_FOLLOWER: &str = "FAILURE_NOT_A_FOLLOWER";

fn arrival_deadline() -> Duration {
    Duration::from_millis(ARRIVAL_DEADLINE_MS)
}

async fn follow(api: &Api, user: u32, target: &str) -> String {
    match api.follow(user, target).await {
        Ok(msg) => msg,
        Err(status) => panic!("user {user} FOLLOW {target:?}: {status}"),
    }
}

async fn unfollow(api: &Api, user: u32, target: &str) -> String {
    match api.unfollow(user, target).await {
        Ok(msg) => msg,
        Err(status) => panic!("user {user} UNFOLLOW {target:?}: {status}"),
    }
}

async fn post(api: &Api, user: u32, post_id: &str, text: &str) {
    if let Err(status) = api.post(user, post_id, text).await {
        panic!("user {user} post {post_id:?}: {status}");
    }
}

async fn read(api: &Api, user: u32, limit: u32) -> Vec<TimelinePost> {
    match api.read(user, limit).await {
        Ok(posts) => posts,
        Err(status) => panic!("Posts.Read of user {user} (limit {limit}): {status}"),
    }
}

/// The first `n` messages of `user`'s Timeline stream: its initial batch.
async fn initial_batch(api: &Api, user: u32, n: usize) -> Vec<Message> {
    let mut stream = match api.open_timeline(user).await {
        Ok(s) => s,
        Err(status) => panic!("opening user {user}'s timeline stream: {status}"),
    };
    match stream.collect(n, arrival_deadline()).await {
        Ok(messages) => messages,
        Err(e) => panic!("initial batch of user {user}: {e}"),
    }
}

/// A stream message and a Read post describe the same timeline line.
fn assert_same_line(msg: &Message, post: &TimelinePost, user: u32) {
    assert_eq!(
        (
            msg.username.as_str(),
            msg.msg.as_str(),
            msg.post_id.as_str(),
            msg.seq
        ),
        (
            post.author.to_string().as_str(),
            post.text.as_str(),
            post.post_id.as_str(),
            post.seq
        ),
        "user {user}: the stream and Posts.Read disagree"
    );
}

/// What a stream message says, for record-by-record comparisons.
fn message_record(m: &Message) -> (String, String, String, u64, Option<(i64, i32)>) {
    (
        m.username.clone(),
        m.msg.clone(),
        m.post_id.clone(),
        m.seq,
        m.timestamp.as_ref().map(|t| (t.seconds, t.nanos)),
    )
}

/// 1. LIST, FOLLOW and UNFOLLOW with the classic reply codes, across three
/// clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follow_and_unfollow_across_clusters() {
    let d = Deployment::start(3, 0, Q_MS).await;
    let api = d.api();
    d.login_all(&[1, 2, 3]).await;
    for user in [1, 2, 3] {
        let listing = d
            .wait_list(
                user,
                &format!("user {user} to see exactly users 1, 2, 3"),
                |l| l.all_users == ids([1, 2, 3]),
            )
            .await;
        assert!(listing.followers.is_empty(), "{listing:?}");
    }

    assert_eq!(follow(&api, 1, "1").await, ALREADY_EXISTS, "follow self");
    assert_eq!(
        follow(&api, 1, "99").await,
        INVALID_USERNAME,
        "unknown user"
    );
    assert_eq!(follow(&api, 1, "abc").await, INVALID_USERNAME, "malformed");
    assert_eq!(follow(&api, 1, "2").await, SUCCESS);
    assert_eq!(follow(&api, 1, "2").await, ALREADY_EXISTS, "follow twice");
    assert_eq!(follow(&api, 3, "2").await, SUCCESS);
    d.wait_followers(2, ids([1, 3])).await;

    assert_eq!(unfollow(&api, 1, "3").await, NOT_A_FOLLOWER, "not followed");
    assert_eq!(
        unfollow(&api, 1, "1").await,
        INVALID_USERNAME,
        "unfollow self"
    );
    assert_eq!(
        unfollow(&api, 1, "99").await,
        INVALID_USERNAME,
        "unknown user"
    );
    assert_eq!(unfollow(&api, 1, "2").await, SUCCESS);
    d.wait_followers(2, ids([3])).await;
    assert_eq!(
        unfollow(&api, 1, "2").await,
        NOT_A_FOLLOWER,
        "unfollow twice"
    );
}

/// 2. Timelines: an early follower on another cluster and one on the same
/// cluster see the last 20 posts; a late follower sees only the posts made
/// after it followed. Through Posts.Read, the Timeline stream and
/// `tsn_client timeline --json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_of_early_and_late_followers() {
    let d = Deployment::start(3, 0, Q_MS).await;
    let api = d.api();
    // With 3 clusters: 1 and 4 on cluster 1, 2 and 5 on cluster 2.
    d.login_all(&[1, 2, 4, 5]).await;
    d.follow_and_wait(2, 1).await;
    d.follow_and_wait(4, 1).await;
    for i in 1..=10 {
        post(&api, 1, &format!("1-p{i}"), &format!("p{i}")).await;
    }
    d.follow_and_wait(5, 1).await;
    for i in 11..=22 {
        post(&api, 1, &format!("1-p{i}"), &format!("p{i}")).await;
    }
    // Sending a post again with its id stores nothing new.
    match api.post(1, "1-p5", "p5").await {
        Ok(reply) => assert!(
            reply.duplicate,
            "a post sent again is a duplicate: {reply:?}"
        ),
        Err(status) => panic!("sending p5 again: {status}"),
    }

    let all = texts("p", (1..=22).rev());
    let late = texts("p", (11..=22).rev());
    d.wait_timeline(1, &all).await;
    d.wait_timeline(2, &all).await;
    d.wait_timeline(4, &all).await;
    d.wait_timeline(5, &late).await;

    let last20 = texts("p", (3..=22).rev());
    for user in [2, 4] {
        let read20 = read(&api, user, INITIAL_BATCH_POSTS as u32).await;
        assert_eq!(
            post_texts(&read20),
            last20,
            "user {user}: Posts.Read limit 20"
        );
        assert!(duplicate_ids(&read20).is_empty(), "{read20:?}");
        let batch = initial_batch(&api, user, INITIAL_BATCH_POSTS).await;
        assert_eq!(
            texts_of(&batch),
            last20,
            "user {user}: the stream's initial batch"
        );
        for (msg, post) in batch.iter().zip(&read20) {
            assert_same_line(msg, post, user);
        }
    }
    let read5 = read(&api, 5, INITIAL_BATCH_POSTS as u32).await;
    assert_eq!(
        post_texts(&read5),
        late,
        "user 5: only posts after the follow"
    );
    let batch5 = initial_batch(&api, 5, late.len()).await;
    assert_eq!(
        texts_of(&batch5),
        late,
        "user 5: the stream's initial batch"
    );

    let (code, stdout, stderr) = d.client(&["-i", "2", "--json", "timeline"]).await;
    assert_eq!(code, 0, "tsn_client timeline failed: {stderr}");
    let posts = match client_json_posts(&stdout) {
        Ok(p) => p,
        Err(e) => panic!("tsn_client --json timeline output: {e}"),
    };
    let shown: Vec<String> = posts.iter().filter_map(json_text).collect();
    assert_eq!(
        shown, last20,
        "tsn_client --json timeline of user 2:\n{stdout}"
    );
}

/// 3. A post reaches the open streams of a follower on another cluster and
/// of one on the same cluster within q + 1 s of its acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_reach_open_streams_within_the_delivery_bound() {
    let d = Deployment::start(3, 0, Q_MS).await;
    let api = d.api();
    d.login_all(&[1, 2, 4]).await;
    d.follow_and_wait(2, 1).await;
    d.follow_and_wait(4, 1).await;
    let mut recorders = Vec::new();
    for user in [2, 4] {
        match api.open_timeline(user).await {
            Ok(stream) => recorders.push(stream.record()),
            Err(status) => panic!("opening user {user}'s stream: {status}"),
        }
    }
    // A first post proves both streams are live before anything is timed.
    post(&api, 1, "1-warm-up", "warm-up").await;
    for r in &recorders {
        r.wait_for_text("warm-up", arrival_deadline()).await;
    }
    let mut delays_ms = Vec::new();
    for i in 1..=3 {
        let text = format!("timed-{i}");
        post(&api, 1, &format!("1-timed-{i}"), &text).await;
        let acked = Instant::now();
        for r in &recorders {
            let arrived = r.wait_for_text(&text, arrival_deadline()).await;
            let delay = arrived.saturating_duration_since(acked);
            delays_ms.push((r.user(), i, delay.as_millis()));
        }
    }
    eprintln!("delivery delays (user, post, ms): {delays_ms:?}");
    for (user, i, ms) in delays_ms {
        assert!(
            ms <= u128::from(DELIVERY_BOUND_MS),
            "post timed-{i} reached user {user} {ms} ms after its acknowledgement (bound {DELIVERY_BOUND_MS} ms)"
        );
    }
}

/// The state a user sees, kept to compare before and after a crash.
#[derive(Debug, PartialEq)]
struct Seen {
    all_users: Vec<String>,
    followers: Vec<String>,
    timeline: Vec<TimelinePost>,
}

async fn seen_by(api: &Api, user: u32) -> Result<Seen, String> {
    let listing = api.list(user).await.map_err(|s| s.to_string())?;
    let timeline = api
        .read(user, tsn_datastore::limits::TIMELINE_READ_MAX_POSTS as u32)
        .await
        .map_err(|s| s.to_string())?;
    Ok(Seen {
        all_users: listing.all_users.into_iter().collect(),
        followers: listing.followers.into_iter().collect(),
        timeline,
    })
}

/// 4. kill -9 of every process, then a restart on the same files: every
/// user's LIST and timeline are unchanged, record by record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_kill_9_of_every_process() {
    let mut d = Deployment::start(3, 1, Q_MS).await;
    let api = d.api();
    let users = [1, 2, 3, 4, 5, 6];
    d.login_all(&users).await;
    for (user, target) in [(2, 1), (3, 1), (4, 1), (1, 2), (5, 3)] {
        d.follow_and_wait(user, target).await;
    }
    // Each author's posts reach everyone before the next author posts, so
    // every timeline's order is known.
    let a = texts("a", (1..=5).rev());
    for i in 1..=5 {
        post(&api, 1, &format!("1-a{i}"), &format!("a{i}")).await;
    }
    for user in [1, 2, 3, 4] {
        d.wait_timeline(user, &a).await;
    }
    for i in 1..=3 {
        post(&api, 2, &format!("2-b{i}"), &format!("b{i}")).await;
    }
    let ba = [texts("b", (1..=3).rev()), a.clone()].concat();
    d.wait_timeline(1, &ba).await;
    d.wait_timeline(2, &ba).await;
    for i in 1..=2 {
        post(&api, 3, &format!("3-c{i}"), &format!("c{i}")).await;
    }
    let c = texts("c", (1..=2).rev());
    d.wait_timeline(3, &[c.clone(), a.clone()].concat()).await;
    d.wait_timeline(5, &c).await;
    d.wait_timeline(6, &[]).await;

    let mut before = Vec::new();
    let mut batches = Vec::new();
    for user in users {
        let seen = match seen_by(&api, user).await {
            Ok(s) => s,
            Err(e) => panic!("user {user} before the crash: {e}"),
        };
        let n = seen.timeline.len().min(INITIAL_BATCH_POSTS);
        let batch: Vec<_> = initial_batch(&api, user, n)
            .await
            .iter()
            .map(message_record)
            .collect();
        before.push(seen);
        batches.push(batch);
    }

    d.kill9_all();
    d.restart_all().await;

    for (i, user) in users.into_iter().enumerate() {
        let want = &before[i];
        let api2 = api.clone();
        let got = tsn_harness::wait_for(
            arrival_deadline(),
            &format!("user {user}'s LIST and timeline to be as before the crash"),
            || {
                let api = api2.clone();
                async move {
                    let seen = seen_by(&api, user).await?;
                    if &seen == want {
                        Ok(seen)
                    } else {
                        Err(format!("{seen:?}\nbefore: {want:?}"))
                    }
                }
            },
        )
        .await;
        assert_eq!(&got, want);
        let batch: Vec<_> = initial_batch(&api, user, batches[i].len())
            .await
            .iter()
            .map(message_record)
            .collect();
        assert_eq!(batch, batches[i], "user {user}: the stream's initial batch");
    }

    // And the restarted deployment still works.
    post(&api, 1, "1-after", "after the crash").await;
    let mut want2 = vec!["after the crash".to_string()];
    want2.extend(post_texts(&before[1].timeline));
    d.wait_timeline(2, &want2).await;
}

/// 5. Bad input gets a clear error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let d = Deployment::start(3, 0, Q_MS).await;
    let api = d.api();
    d.login_all(&[1, 2]).await;
    post(&api, 1, "1-first", "first").await;
    d.wait_timeline(1, &["first".to_string()]).await;
    let (primary, _) = d.primary_of(1).await;
    let journal_before = d.journal_lines(1, primary);
    let timeline_before = d.timeline(1).await;
    let assert_unchanged = |what: &str, journal_now: usize, timeline_now: &[TimelinePost]| {
        assert_eq!(journal_now, journal_before, "{what}: the journal changed");
        assert_eq!(
            timeline_now, timeline_before,
            "{what}: the timeline changed"
        );
    };

    for bad_id in ["abc", "0", "-3"] {
        let (code, _, stderr) = d.client(&["-i", bad_id, "list"]).await;
        assert_ne!(code, 0, "tsn_client -i {bad_id} list must fail");
        if let Err(e) = one_line_error(&stderr) {
            panic!("tsn_client -i {bad_id} list: {e}");
        }
    }

    let too_long = "x".repeat(POST_TEXT_MAX_BYTES + 1);
    let (code, _, stderr) = d.client(&["-i", "1", "post", &too_long]).await;
    assert_ne!(code, 0, "a {}-byte post must fail", too_long.len());
    if let Err(e) = one_line_error(&stderr) {
        panic!("tsn_client post <too long>: {e}");
    }
    assert_unchanged(
        "a too long post",
        d.journal_lines(1, primary),
        &d.timeline(1).await,
    );

    let (code, _, stderr) = d.client(&["-i", "1", "post", ""]).await;
    assert_ne!(code, 0, "an empty post must fail");
    if let Err(e) = one_line_error(&stderr) {
        panic!("tsn_client post \"\": {e}");
    }
    assert_unchanged(
        "an empty post",
        d.journal_lines(1, primary),
        &d.timeline(1).await,
    );

    assert_eq!(follow(&api, 1, "abc").await, INVALID_USERNAME);

    let (code, stdout, stderr) = d.client_with_stdin(&["-i", "1"], "FOO\nEXIT\n").await;
    assert_eq!(code, 0, "EXIT ends the interactive client well: {stderr}");
    let said = format!("{stdout}{stderr}").to_lowercase();
    assert!(
        said.contains("unknown"),
        "FOO must be answered with an unknown-command message:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // 513 two-byte characters: fewer than 1024 characters, more than 1024
    // bytes. The limit is in bytes.
    let multibyte = "é".repeat(POST_TEXT_MAX_BYTES / 2 + 1);
    for (what, text) in [
        ("empty", String::new()),
        ("too long", too_long.clone()),
        ("too many bytes", multibyte),
    ] {
        match api
            .post(1, &format!("1-bad-{}", what.replace(' ', "-")), &text)
            .await
        {
            Err(status) if status.code() == Code::InvalidArgument => {}
            other => panic!("Posts.Post with {what} text: want INVALID_ARGUMENT, got {other:?}"),
        }
        assert_unchanged(what, d.journal_lines(1, primary), &d.timeline(1).await);
    }

    // Exactly the limit is fine.
    let longest = "y".repeat(POST_TEXT_MAX_BYTES);
    post(&api, 1, "1-longest", &longest).await;
    let now = d.timeline(1).await;
    assert_eq!(post_texts(&now), vec![longest, "first".to_string()]);
    assert!(d.journal_lines(1, primary) > journal_before);
}

/// 6. A torn last line in a timeline file and in the journal (a crash in
/// the middle of a write) is cut at restart; nothing acknowledged is lost
/// or doubled, and new posts work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_lines_are_cut_at_restart() {
    let mut d = Deployment::start(1, 0, Q_MS).await;
    let api = d.api();
    d.login_all(&[1, 2]).await;
    d.follow_and_wait(2, 1).await;
    for i in 1..=5 {
        post(&api, 1, &format!("1-t{i}"), &format!("t{i}")).await;
    }
    let five = texts("t", (1..=5).rev());
    let before1 = d.wait_timeline(1, &five).await;
    let before2 = d.wait_timeline(2, &five).await;
    let layout = d.primary_layout(1).await;

    d.kill9_all();
    let timeline2 = layout.timeline(2);
    append(
        &timeline2,
        br#"{"seq":999999,"time":"2024-01-01T00:00:00.000Z","id":"1-torn","au"#,
    );
    let journal = layout.journal();
    append(&journal, &torn_next_entry(&journal));

    d.restart_all().await;
    let after1 = d.wait_timeline(1, &five).await;
    let after2 = d.wait_timeline(2, &five).await;
    assert_eq!(after1, before1, "user 1's timeline changed");
    assert_eq!(after2, before2, "user 2's timeline changed");
    assert!(duplicate_ids(&after2).is_empty(), "{after2:?}");

    post(&api, 1, "1-t6", "t6").await;
    let six = texts("t", (1..=6).rev());
    d.wait_timeline(1, &six).await;
    d.wait_timeline(2, &six).await;
    for file in [journal, timeline2, layout.timeline(1)] {
        let problems = jsonl_problems(&file);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(f) => f,
        Err(e) => panic!("opening {}: {e}", path.display()),
    };
    if let Err(e) = file.write_all(bytes) {
        panic!("appending to {}: {e}", path.display());
    }
}

/// The first half of the journal entry that would follow the last one: what
/// a crash in the middle of its write leaves.
fn torn_next_entry(journal: &std::path::Path) -> Vec<u8> {
    let text = match std::fs::read_to_string(journal) {
        Ok(t) => t,
        Err(e) => panic!("reading {}: {e}", journal.display()),
    };
    let Some(last) = text
        .lines()
        .rev()
        .find_map(|l| Entry::from_line(l.as_bytes()))
    else {
        panic!("{} has no entry", journal.display());
    };
    let next = Entry {
        seq: last.seq + 1,
        epoch: last.epoch,
        op: Op::Post(Post {
            id: "1-torn".to_string(),
            author: 1,
            text: "never acknowledged".to_string(),
            ts_ms: 0,
        }),
    };
    let line = next.to_line();
    line.as_bytes()[..line.len() / 2].to_vec()
}

/// 7. The interactive client, fed through a pipe: FOLLOW, LIST, TIMELINE,
/// then a post typed in timeline mode, and a post of the followed user
/// shown live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_client_follows_lists_and_posts() {
    let d = Deployment::start(2, 0, Q_MS).await;
    let api = d.api();
    d.login_all(&[1, 2]).await;
    let mut client = d.interactive_client(1);
    let deadline = arrival_deadline();
    client
        .wait_stdout(deadline, "the Cmd> prompt", |out| out.contains("Cmd>"))
        .await;

    client.send_line("FOLLOW 2").await;
    client
        .wait_stdout(deadline, "FOLLOW 2 to succeed", |out| {
            out.to_lowercase().contains("success")
        })
        .await;
    d.wait_followers(2, ids([1])).await;

    let shown = client.stdout().len();
    client.send_line("LIST").await;
    client
        .wait_stdout(deadline, "LIST to show all users", |out| {
            let reply = out.get(shown..).unwrap_or_default().to_lowercase();
            reply.contains("all users") && reply.contains('1') && reply.contains('2')
        })
        .await;

    client.send_line("TIMELINE").await;
    client
        .wait_stdout(deadline, "TIMELINE mode", |out| {
            out.get(shown..)
                .unwrap_or_default()
                .to_lowercase()
                .contains("timeline")
        })
        .await;
    client.send_line("typed in timeline mode").await;
    d.wait_timeline(1, &["typed in timeline mode".to_string()])
        .await;

    post(&api, 2, "2-live", "live from user 2").await;
    client
        .wait_stdout(deadline, "user 2's post to be shown", |out| {
            out.contains("live from user 2")
        })
        .await;
    client.close_stdin();
    if client
        .wait_exit(Duration::from_millis(CLIENT_EXIT_DEADLINE_MS))
        .await
        .is_none()
    {
        client.kill().await;
    }
}

/// 8. SIGTERM stops every process gracefully (exit code 0), and a restart
/// after a graceful stop finds everything as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_stops_gracefully_on_sigterm() {
    let mut d = Deployment::start(2, 1, Q_MS).await;
    let api = d.api();
    d.login_all(&[1, 2]).await;
    d.follow_and_wait(2, 1).await;
    post(&api, 1, "1-kept", "kept").await;
    let kept = vec!["kept".to_string()];
    d.wait_timeline(2, &kept).await;

    let codes = d.stop_all().await;
    let unclean: Vec<_> = codes.iter().filter(|(_, code)| *code != Some(0)).collect();
    assert!(
        unclean.is_empty(),
        "not stopped cleanly by SIGTERM: {unclean:?}"
    );

    d.restart_all().await;
    d.wait_timeline(1, &kept).await;
    d.wait_timeline(2, &kept).await;
}

/// 9. The interactive client logs in when it starts, as the classic client
/// does: a user who typed nothing but HELP exists for everyone, so that
/// users of its own and of another cluster can FOLLOW it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_client_logs_in_at_start() {
    let d = Deployment::start(2, 0, Q_MS).await;
    let api = d.api();
    d.login_all(&[1, 2]).await;
    // 3 is served by cluster 1 (like 1; 2 is on cluster 2).
    let mut client = d.interactive_client(3);
    let deadline = arrival_deadline();
    client
        .wait_stdout(deadline, "the login to be said", |out| {
            out.contains("logged in as 3 on cluster 1")
        })
        .await;
    client.send_line("HELP").await;
    client
        .wait_stdout(deadline, "HELP's list of commands", |out| {
            out.contains("UNFOLLOW <id>")
        })
        .await;
    assert_eq!(follow(&api, 1, "3").await, SUCCESS, "same cluster");
    assert_eq!(follow(&api, 2, "3").await, SUCCESS, "other cluster");
    d.wait_followers(3, ids([1, 2])).await;
    client.send_line("EXIT").await;
    if client
        .wait_exit(Duration::from_millis(CLIENT_EXIT_DEADLINE_MS))
        .await
        .is_none()
    {
        client.kill().await;
        panic!("EXIT did not end the client:\n{}", client.stderr());
    }
}

/// How many times a FOLLOW is followed at once by a LIST of the followed.
const FOLLOW_THEN_LIST_ROUNDS: usize = 100;

/// 10. A cluster reads its own follows at once: a LIST right after an
/// acknowledged FOLLOW (and UNFOLLOW) between two users of the same cluster
/// shows the change, every time, without waiting for the sync service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_right_after_a_follow_on_the_same_cluster_shows_it() {
    let d = Deployment::start(2, 1, Q_MS).await;
    let api = d.api();
    // 1 and 3 are both served by cluster 1.
    d.login_all(&[1, 3]).await;
    let listed = |user| {
        let api = api.clone();
        async move {
            match api.list(user).await {
                Ok(listing) => listing.followers,
                Err(status) => panic!("LIST of user {user}: {status}"),
            }
        }
    };
    for round in 0..FOLLOW_THEN_LIST_ROUNDS {
        assert_eq!(follow(&api, 1, "3").await, SUCCESS, "round {round}");
        assert_eq!(listed(3).await, ids([1]), "round {round}: after FOLLOW");
        assert_eq!(unfollow(&api, 1, "3").await, SUCCESS, "round {round}");
        assert!(listed(3).await.is_empty(), "round {round}: after UNFOLLOW");
    }
}
