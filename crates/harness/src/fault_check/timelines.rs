//! The pure check of every timeline against what the writers were told:
//! no acknowledged post lost, none twice, each author's posts in order,
//! nothing that was never sent. A function of what the writers recorded
//! ([`crate::load::PostRecord`]) and what the deployment holds
//! ([`Timelines`]), so it is tested here on hand-made cases.
//!
//! The rules, for the timeline of every user U, read line by line:
//!
//! * every acknowledged post of U is there exactly once;
//! * every acknowledged post of an author A that U follows is there exactly
//!   once, if U's follow of A was acknowledged before the post was sent;
//! * with [`Expectation::follow_time`] set, no post of A acknowledged
//!   before U *sent* its follow of A is there (a follow takes effect from
//!   its own time on, whatever the machines' clocks say);
//! * the posts of each author appear in the order the author made them;
//! * no post id appears twice, acknowledged or not (a post whose
//!   acknowledgement never came may be there once or not at all);
//! * every line is a post some writer sent, with the text it sent, from
//!   U itself or from an author U followed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::load::{parse_post_id, PostRecord};

/// Ids listed per kind of problem per timeline in a failure message.
pub const REPORT_IDS_MAX: usize = 20;
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

/// `follower` follows `followee`: the FOLLOW was first sent at `sent_at`
/// and acknowledged at `acked_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowRecord {
    pub follower: u32,
    pub followee: u32,
    pub sent_at: Instant,
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
    /// `None`: a post made before a follow may be in the follower's
    /// timeline or not. `Some(bound)`: it must not be, and a post must be
    /// there only if sent more than `bound` after the follow was
    /// acknowledged (and must not if acknowledged more than `bound` before
    /// it was sent). The servers order posts and follows by cluster time,
    /// each within its bound of the coordinator's clock, so a post and a
    /// follow on two clusters closer than twice that bound may go either
    /// way.
    pub follow_time: Option<Duration>,
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
    /// Posts acknowledged before the owner sent its follow of their author.
    pub before_follow: Vec<String>,
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
                ("acknowledged before the follow was sent", &p.before_follow),
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
    // (follower, followee) -> the earliest acknowledgement of the follow,
    // and the earliest time it was sent.
    let mut follows: HashMap<(u32, u32), Instant> = HashMap::new();
    let mut follows_sent: HashMap<(u32, u32), Instant> = HashMap::new();
    for f in &expect.follows {
        let at = follows
            .entry((f.follower, f.followee))
            .or_insert(f.acked_at);
        *at = (*at).min(f.acked_at);
        let sent = follows_sent
            .entry((f.follower, f.followee))
            .or_insert(f.sent_at);
        *sent = (*sent).min(f.sent_at);
    }
    let bound = expect.follow_time.unwrap_or(Duration::ZERO);
    let mut report = Report::default();
    for &user in &expect.users {
        let mut problems = TimelineProblems::default();
        match timelines.get(&user) {
            None => problems.unread = Some("no timeline was read".to_string()),
            Some(lines) => {
                report.lines += lines.len();
                check_lines(
                    user,
                    lines,
                    &sent,
                    &follows,
                    &follows_sent,
                    expect.follow_time,
                    &mut problems,
                );
                // Every acknowledged post that must be here, in the
                // author's order.
                let present: HashMap<&str, usize> = count_ids(lines);
                for p in expect.posts.iter().filter(|p| p.is_acked()) {
                    let must = p.author == user
                        || follows
                            .get(&(user, p.author))
                            .is_some_and(|&at| at + bound < p.sent_at);
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
    follows_sent: &HashMap<(u32, u32), Instant>,
    follow_time: Option<Duration>,
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
        let follow_sent = follows_sent.get(&(user, record.author));
        if let (Some(bound), Some(acked), Some(&follow_sent)) =
            (follow_time, &record.acked, follow_sent)
        {
            if record.author != user && acked.at + bound < follow_sent {
                problems.before_follow.push(line.post_id.clone());
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{post_id, post_text};

    fn sent(author: u32, n: u64, at: Instant, acked: bool) -> PostRecord {
        PostRecord::for_test(author, n, at, acked.then_some((1, 1)))
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
                sent_at: t0,
                acked_at: t0,
            }],
            posts: vec![sent(1, 1, later, true), sent(1, 2, later, true)],
            follow_time: None,
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
    fn a_post_acknowledged_before_the_follow_was_sent_must_not_be_there() {
        let (mut expect, t0) = setup();
        let earlier = t0 - Duration::from_millis(10);
        expect.posts.insert(0, sent(1, 0, earlier, true));
        // Sent before the follow was acknowledged, but after it was sent:
        // either way is right.
        expect.follows[0].sent_at = t0 - Duration::from_millis(5);
        expect
            .posts
            .push(sent(1, 3, t0 - Duration::from_millis(1), true));
        let all = vec![line(1, 1, 0), line(2, 1, 1), line(3, 1, 2), line(4, 1, 3)];
        let report = check(&expect, &timelines(all.clone(), all.clone()));
        assert!(report.is_clean(), "allowed unless asked for: {report}");
        expect.follow_time = Some(Duration::ZERO);
        let report = check(&expect, &timelines(all.clone(), all.clone()));
        assert_eq!(report.timelines[&2].before_follow, vec!["1-w0"]);
        assert!(report.timelines[&1].is_clean(), "the author's own post");
        let later = vec![line(2, 1, 1), line(3, 1, 2)];
        let report = check(&expect, &timelines(all, later));
        assert!(report.is_clean(), "{report}");
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
}
