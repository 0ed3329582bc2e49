//! Holds a deployment to tsn's promise after a run of faults: no
//! acknowledged post is lost, none appears twice, and every replica of a
//! cluster holds the same journal.
//!
//! The checks are pure functions of what the writers recorded
//! ([`crate::load::PostRecord`]) and what the deployment holds
//! ([`Timelines`], journal entries), so they are tested here on hand-made
//! cases; the readers next to them fetch what the deployment holds.
//!
//! The rules, for the timeline of every user U, read line by line:
//!
//! * every acknowledged post of U is there exactly once;
//! * every acknowledged post of an author A that U follows is there exactly
//!   once, if U's follow of A was acknowledged before the post was sent;
//! * the posts of each author appear in the order the author made them;
//! * no post id appears twice, acknowledged or not (a post whose
//!   acknowledgement never came may be there once or not at all);
//! * every line is a post some writer sent, with the text it sent, from
//!   U itself or from an author U followed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tsn_cluster::coord::{channel, server_address, CoordClient};
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_datastore::limits::TIMELINE_READ_MAX_POSTS;
use tsn_datastore::record::TimelineLine;
use tsn_datastore::{Entry, Layout};
use tsn_proto::tsn::posts_client::PostsClient;
use tsn_proto::tsn::ReadRequest;

use crate::load::{parse_post_id, PostRecord};

/// Ids listed per kind of problem per timeline in a failure message.
pub const REPORT_IDS_MAX: usize = 20;
/// Time limit of one `Posts.Read` of the checker.
pub const READ_TIMEOUT_MS: u64 = 5_000;
/// How often [`wait_converged`] reads every timeline again. Reading them is
/// not free, and convergence after a stop takes seconds, not milliseconds.
pub const CONVERGE_POLL_INTERVAL_MS: u64 = 250;
/// Largest file the checker reads whole (a journal or a timeline).
pub const FILE_READ_MAX_BYTES: u64 = 1 << 30;
/// Most users one check looks at.
pub const CHECK_USERS_MAX: usize = 10_000;

/// One line of a timeline, as far as the checks care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub seq: u64,
    pub post_id: String,
    pub author: u32,
    pub text: String,
}

/// Every user's timeline, oldest line first.
pub type Timelines = BTreeMap<u32, Vec<Line>>;

/// `follower` follows `followee`, acknowledged at `acked_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowRecord {
    pub follower: u32,
    pub followee: u32,
    pub acked_at: Instant,
}

/// What the deployment must hold.
#[derive(Clone, Debug, Default)]
pub struct Expectation {
    /// Every user whose timeline is checked.
    pub users: Vec<u32>,
    pub follows: Vec<FollowRecord>,
    /// Every post any writer sent, acknowledged or not.
    pub posts: Vec<PostRecord>,
}

/// What is wrong with one timeline; empty lists when nothing is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineProblems {
    /// The timeline could not be read.
    pub unread: Option<String>,
    /// Acknowledged posts that should be there and are not.
    pub missing: Vec<String>,
    /// Post ids found more than once.
    pub duplicated: Vec<String>,
    /// Posts found before an earlier post of the same author.
    pub out_of_order: Vec<String>,
    /// Post ids no writer sent.
    pub unknown: Vec<String>,
    /// Posts whose author or text differ from what was sent.
    pub altered: Vec<String>,
    /// Posts of an author the timeline's owner never followed.
    pub not_followed: Vec<String>,
}

impl TimelineProblems {
    pub fn is_clean(&self) -> bool {
        *self == TimelineProblems::default()
    }
}

/// The outcome of a check of every timeline.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub timelines: BTreeMap<u32, TimelineProblems>,
    /// Lines read, over all timelines.
    pub lines: usize,
    /// (acknowledged post, timeline) pairs that had to be present and were
    /// looked for.
    pub placements: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.timelines.values().all(TimelineProblems::is_clean)
    }

    /// Whether every timeline was read and holds every post it must: the
    /// deployment has converged (other problems do not go away by waiting).
    pub fn is_converged(&self) -> bool {
        self.timelines
            .values()
            .all(|p| p.unread.is_none() && p.missing.is_empty())
    }

    pub fn missing_count(&self) -> usize {
        self.timelines.values().map(|p| p.missing.len()).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} timelines, {} lines, {} placements of acknowledged posts checked",
            self.timelines.len(),
            self.lines,
            self.placements
        )?;
        for (user, p) in &self.timelines {
            if p.is_clean() {
                continue;
            }
            write!(f, "user {user}'s timeline:")?;
            if let Some(why) = &p.unread {
                write!(f, " not read: {why};")?;
            }
            for (what, ids) in [
                ("missing", &p.missing),
                ("duplicated", &p.duplicated),
                ("out of order", &p.out_of_order),
                ("never sent", &p.unknown),
                ("altered", &p.altered),
                ("from an author not followed", &p.not_followed),
            ] {
                if !ids.is_empty() {
                    write!(f, " {} {what} {}", ids.len(), first_ids(ids))?;
                    write!(f, ";")?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The first [`REPORT_IDS_MAX`] ids, and how many more there are.
fn first_ids(ids: &[String]) -> String {
    let shown: Vec<&str> = ids
        .iter()
        .take(REPORT_IDS_MAX)
        .map(String::as_str)
        .collect();
    if ids.len() > REPORT_IDS_MAX {
        format!("{shown:?} and {} more", ids.len() - REPORT_IDS_MAX)
    } else {
        format!("{shown:?}")
    }
}

/// Checks every timeline of `expect.users` in `timelines` against what was
/// sent. Pure.
pub fn check(expect: &Expectation, timelines: &Timelines) -> Report {
    assert!(expect.users.len() <= CHECK_USERS_MAX);
    let sent: HashMap<&str, &PostRecord> = expect
        .posts
        .iter()
        .map(|p| (p.post_id.as_str(), p))
        .collect();
    // (follower, followee) -> the earliest acknowledgement of the follow.
    let mut follows: HashMap<(u32, u32), Instant> = HashMap::new();
    for f in &expect.follows {
        let at = follows
            .entry((f.follower, f.followee))
            .or_insert(f.acked_at);
        *at = (*at).min(f.acked_at);
    }
    let mut report = Report::default();
    for &user in &expect.users {
        let mut problems = TimelineProblems::default();
        match timelines.get(&user) {
            None => problems.unread = Some("no timeline was read".to_string()),
            Some(lines) => {
                report.lines += lines.len();
                check_lines(user, lines, &sent, &follows, &mut problems);
                // Every acknowledged post that must be here, in the
                // author's order.
                let present: HashMap<&str, usize> = count_ids(lines);
                for p in expect.posts.iter().filter(|p| p.is_acked()) {
                    let must = p.author == user
                        || follows
                            .get(&(user, p.author))
                            .is_some_and(|&at| at < p.sent_at);
                    if !must {
                        continue;
                    }
                    report.placements += 1;
                    if !present.contains_key(p.post_id.as_str()) {
                        problems.missing.push(p.post_id.clone());
                    }
                }
            }
        }
        report.timelines.insert(user, problems);
    }
    report
}

fn count_ids(lines: &[Line]) -> HashMap<&str, usize> {
    let mut counts = HashMap::with_capacity(lines.len());
    for l in lines {
        *counts.entry(l.post_id.as_str()).or_insert(0) += 1;
    }
    counts
}

/// The checks that look at each line: duplicates, order, origin, content.
fn check_lines(
    user: u32,
    lines: &[Line],
    sent: &HashMap<&str, &PostRecord>,
    follows: &HashMap<(u32, u32), Instant>,
    problems: &mut TimelineProblems,
) {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(lines.len());
    // Author -> the number of its latest post seen so far.
    let mut latest: HashMap<u32, u64> = HashMap::new();
    for line in lines {
        let count = seen.entry(line.post_id.as_str()).or_insert(0);
        *count += 1;
        if *count == 2 {
            problems.duplicated.push(line.post_id.clone());
        }
        if *count > 1 {
            continue;
        }
        let Some(record) = sent.get(line.post_id.as_str()) else {
            problems.unknown.push(line.post_id.clone());
            continue;
        };
        if record.author != line.author || record.text != line.text {
            problems.altered.push(format!(
                "{} (author {}, text {:?})",
                line.post_id, line.author, line.text
            ));
        }
        if record.author != user && !follows.contains_key(&(user, record.author)) {
            problems.not_followed.push(line.post_id.clone());
        }
        if let Some((author, n)) = parse_post_id(&line.post_id) {
            let last = latest.entry(author).or_insert(0);
            if n <= *last {
                problems.out_of_order.push(line.post_id.clone());
            } else {
                *last = n;
            }
        }
    }
}

/// Entries of one journal, in file order.
#[derive(Clone, Debug)]
pub struct NamedJournal {
    pub name: String,
    pub entries: Vec<Entry>,
}

/// Checks that the journals of one cluster's servers agree: each is a
/// gap-free sequence from seq 1, and all hold the same entries up to the
/// shortest one's end. Returns how many entries were compared. Pure.
pub fn compare_journals(journals: &[NamedJournal]) -> Result<usize, String> {
    for j in journals {
        for (i, e) in j.entries.iter().enumerate() {
            if e.seq != i as u64 + 1 {
                return Err(format!(
                    "{}: entry {} has seq {} (the journal must run 1, 2, …)",
                    j.name,
                    i + 1,
                    e.seq
                ));
            }
        }
    }
    let Some(shortest) = journals.iter().map(|j| j.entries.len()).min() else {
        return Ok(0);
    };
    let first = &journals[0];
    for other in &journals[1..] {
        if let Some(i) = (0..shortest).find(|&i| first.entries[i] != other.entries[i]) {
            return Err(format!(
                "{} and {} disagree at seq {}:\n  {}: {}\n  {}: {}",
                first.name,
                other.name,
                i + 1,
                first.name,
                first.entries[i].to_line(),
                other.name,
                other.entries[i].to_line()
            ));
        }
    }
    Ok(shortest)
}

// ---------------------------------------------------------------- readers

/// Every complete line of `path`, parsed by `parse`; a line that does not
/// parse is an error (a replica's files are never corrupt in these tests).
/// A partial last line (being written) is left out; a missing file has no
/// lines.
fn read_lines<T>(
    path: &Path,
    parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<Vec<T>, String> {
    let bytes = match std::fs::metadata(path) {
        Ok(m) if m.len() > FILE_READ_MAX_BYTES => {
            return Err(format!(
                "{} is {} bytes, more than the {FILE_READ_MAX_BYTES} the checker reads",
                path.display(),
                m.len()
            ))
        }
        Ok(_) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..i],
        None => return Ok(Vec::new()),
    };
    complete
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            parse(l).map_err(|e| {
                format!(
                    "{} line {}: {e}: {}",
                    path.display(),
                    i + 1,
                    String::from_utf8_lossy(&l[..l.len().min(200)])
                )
            })
        })
        .collect()
}

/// The journal of the server whose files are at `layout`.
pub fn read_journal(layout: &Layout) -> Result<Vec<Entry>, String> {
    read_lines(&layout.journal(), |l| serde_json::from_slice::<Entry>(l))
}

/// Reads the journals of `servers` (name, files) and checks that they agree
/// (see [`compare_journals`]); returns how many entries were compared.
pub fn journals_agree(servers: &[(String, Layout)]) -> Result<usize, String> {
    let mut journals = Vec::with_capacity(servers.len());
    for (name, layout) in servers {
        journals.push(NamedJournal {
            name: name.clone(),
            entries: read_journal(layout)?,
        });
    }
    compare_journals(&journals)
}

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
            read_lines(&path, |l| serde_json::from_slice::<TimelineLine>(l))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{post_id, post_text, Acked};
    use tsn_datastore::{Op, Post};

    fn sent(author: u32, n: u64, at: Instant, acked: bool) -> PostRecord {
        PostRecord {
            author,
            n,
            post_id: post_id(author, n),
            text: post_text(author, n),
            sent_at: at,
            attempts: 1,
            acked: acked.then(|| Acked {
                at,
                try_sent_at: at,
                cluster: 1,
                server_id: 1,
                address: "127.0.0.1:1".into(),
                duplicate: false,
            }),
        }
    }

    fn line(seq: u64, author: u32, n: u64) -> Line {
        Line {
            seq,
            post_id: post_id(author, n),
            author,
            text: post_text(author, n),
        }
    }

    /// Users 1 and 2; 2 follows 1 from `t0`; 1 posts w1, w2 after it.
    fn setup() -> (Expectation, Instant) {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(10);
        let expect = Expectation {
            users: vec![1, 2],
            follows: vec![FollowRecord {
                follower: 2,
                followee: 1,
                acked_at: t0,
            }],
            posts: vec![sent(1, 1, later, true), sent(1, 2, later, true)],
        };
        (expect, t0)
    }

    fn timelines(of1: Vec<Line>, of2: Vec<Line>) -> Timelines {
        [(1, of1), (2, of2)].into_iter().collect()
    }

    #[test]
    fn complete_timelines_are_clean() {
        let (expect, _) = setup();
        let t = timelines(
            vec![line(1, 1, 1), line(2, 1, 2)],
            vec![line(3, 1, 1), line(4, 1, 2)],
        );
        let report = check(&expect, &t);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.placements, 4);
        assert_eq!(report.lines, 4);
    }

    #[test]
    fn missing_duplicated_and_out_of_order_posts_are_named() {
        let (expect, _) = setup();
        let t = timelines(
            vec![line(1, 1, 2), line(2, 1, 1)],
            vec![line(3, 1, 2), line(4, 1, 2)],
        );
        let report = check(&expect, &t);
        assert!(!report.is_clean());
        assert_eq!(report.timelines[&1].out_of_order, vec!["1-w1"]);
        assert_eq!(report.timelines[&2].missing, vec!["1-w1"]);
        assert_eq!(report.timelines[&2].duplicated, vec!["1-w2"]);
        assert!(!report.is_converged());
        let text = report.to_string();
        assert!(
            text.contains("user 2's timeline: 1 missing [\"1-w1\"]"),
            "{text}"
        );
        assert!(text.contains("1 duplicated [\"1-w2\"]"), "{text}");
    }

    #[test]
    fn posts_sent_before_the_follow_need_not_be_delivered() {
        let (mut expect, t0) = setup();
        expect
            .posts
            .insert(0, sent(1, 1, t0 - Duration::from_millis(1), true));
        expect.posts.remove(1);
        // 1-w1 predates the follow: absent from 2's timeline is fine, and
        // so is present once.
        let t = timelines(vec![line(1, 1, 1), line(2, 1, 2)], vec![line(3, 1, 2)]);
        assert!(check(&expect, &t).is_clean());
        let t = timelines(
            vec![line(1, 1, 1), line(2, 1, 2)],
            vec![line(3, 1, 1), line(4, 1, 2)],
        );
        assert!(check(&expect, &t).is_clean());
    }

    #[test]
    fn unacknowledged_posts_may_appear_once_but_not_twice() {
        let (mut expect, t0) = setup();
        expect
            .posts
            .push(sent(1, 3, t0 + Duration::from_millis(20), false));
        let base = vec![line(1, 1, 1), line(2, 1, 2)];
        let t = timelines(base.clone(), base.clone());
        assert!(check(&expect, &t).is_clean(), "absent is fine");
        let with = [base.clone(), vec![line(5, 1, 3)]].concat();
        let t = timelines(with.clone(), base.clone());
        assert!(check(&expect, &t).is_clean(), "once is fine");
        let twice = [with, vec![line(6, 1, 3)]].concat();
        let report = check(&expect, &timelines(twice, base));
        assert_eq!(report.timelines[&1].duplicated, vec!["1-w3"]);
    }

    #[test]
    fn strangers_and_altered_posts_are_found() {
        let (expect, _) = setup();
        let mut altered = line(2, 1, 2);
        altered.text = "changed".into();
        let stranger = Line {
            seq: 9,
            post_id: "1-zzz".into(),
            author: 1,
            text: "x".into(),
        };
        let t = timelines(
            vec![line(1, 1, 1), altered, stranger],
            // 2 follows 1, but 1 does not follow 2: a post of 2 in 1's
            // timeline would be a stray delivery; here 2's own is fine.
            vec![line(3, 1, 1), line(4, 1, 2)],
        );
        let report = check(&expect, &t);
        assert_eq!(report.timelines[&1].unknown, vec!["1-zzz"]);
        assert_eq!(report.timelines[&1].altered.len(), 1);
    }

    #[test]
    fn deliveries_to_non_followers_are_found() {
        let (mut expect, t0) = setup();
        expect.posts.push(sent(2, 1, t0, true));
        let t = timelines(
            vec![line(1, 1, 1), line(2, 1, 2), line(5, 2, 1)],
            vec![line(3, 1, 1), line(4, 1, 2), line(6, 2, 1)],
        );
        let report = check(&expect, &t);
        assert_eq!(report.timelines[&1].not_followed, vec!["2-w1"]);
        assert!(report.timelines[&2].is_clean());
    }

    #[test]
    fn an_unread_timeline_is_not_converged() {
        let (expect, _) = setup();
        let t: Timelines = [(1, vec![line(1, 1, 1), line(2, 1, 2)])]
            .into_iter()
            .collect();
        let report = check(&expect, &t);
        assert!(report.timelines[&2].unread.is_some());
        assert!(!report.is_converged());
    }

    #[test]
    fn long_lists_are_cut_in_reports() {
        let ids: Vec<String> = (1..=25).map(|n| post_id(1, n)).collect();
        let text = first_ids(&ids);
        assert!(text.contains("1-w20") && !text.contains("1-w21"), "{text}");
        assert!(text.ends_with("and 5 more"), "{text}");
    }

    fn entry(seq: u64, epoch: u64, id: &str) -> Entry {
        Entry {
            seq,
            epoch,
            op: Op::Post(Post {
                id: id.into(),
                author: 1,
                text: "t".into(),
                ts_ms: 5,
            }),
        }
    }

    fn journal(name: &str, entries: Vec<Entry>) -> NamedJournal {
        NamedJournal {
            name: name.into(),
            entries,
        }
    }

    #[test]
    fn journals_agree_up_to_the_shortest() {
        let a = journal("a", vec![entry(1, 1, "1-a"), entry(2, 1, "1-b")]);
        let b = journal("b", vec![entry(1, 1, "1-a")]);
        assert_eq!(compare_journals(&[a.clone(), b]), Ok(1));
        assert_eq!(compare_journals(&[]), Ok(0));
        let c = journal("c", vec![entry(1, 1, "1-a"), entry(2, 2, "1-b")]);
        let err = compare_journals(&[a, c]).expect_err("epochs differ at seq 2");
        assert!(err.contains("a and c disagree at seq 2"), "{err}");
    }

    #[test]
    fn journals_with_gaps_are_refused() {
        let gap = journal("g", vec![entry(1, 1, "1-a"), entry(3, 1, "1-b")]);
        let err = compare_journals(&[gap]).expect_err("a gap");
        assert!(err.contains("g: entry 2 has seq 3"), "{err}");
    }

    #[test]
    fn journal_files_are_read_whole_lines_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(dir.path(), 1, 1);
        std::fs::create_dir_all(layout.dir()).expect("mkdir");
        let line = entry(1, 1, "1-a").to_line();
        std::fs::write(layout.journal(), format!("{line}\n{{\"seq\":2,")).expect("write");
        assert_eq!(read_journal(&layout), Ok(vec![entry(1, 1, "1-a")]));
        std::fs::write(layout.journal(), format!("{line}\nnot json\n")).expect("write");
        let err = read_journal(&layout).expect_err("corrupt");
        assert!(err.contains("line 2"), "{err}");
        let missing = Layout::new(dir.path(), 9, 9);
        assert_eq!(read_journal(&missing), Ok(vec![]));
    }
}
