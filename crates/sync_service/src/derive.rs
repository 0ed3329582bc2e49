//! The heart of the sync service: which operations a destination cluster
//! needs, given a batch of this cluster's committed journal entries.
//!
//! Pure logic: everything it needs to know beyond the entries is looked up
//! first and handed in, because each step depends on the one before:
//!
//! 1. [`followers_needed`] -> [`homes_needed`]: the [`Lookups`] of a batch,
//!    the same for every destination, made once per batch and shared by
//!    the destination feeds (see `source`);
//! 2. [`backfill_followers_needed`] -> [`backfills_needed`]: the
//!    [`Backfills`] of one destination, made by its feed just before it
//!    sends;
//! 3. [`derive`].
//!
//! A lookup that is missing is an error, never a silent skip, so the caller
//! retries instead of losing a change.
//!
//! The rules, for destination `d` and an entry of cluster `own`:
//!
//! * `User{user, cluster: own}`, `d != own`: `User` (every cluster knows
//!   every user; users of other clusters are not passed on again).
//! * `Follow{a, b}`, `home(b) == d`: `AddFollower{b, a, since_ms, version: seq}`.
//! * `Unfollow{a, b}`, `home(b) == d`: `RemoveFollower{b, a, version: seq}`.
//!   When `d == own`, the follow's own entry already wrote that edge with
//!   that version (the primary folds it, so that LIST reads the follow at
//!   once: `JournalFold::own_follower_edge`), and the primary skips this
//!   copy as a duplicate. It is sent all the same, so that the rule stays
//!   one rule for every destination and an edge never depends on two
//!   views of where a user lives agreeing.
//! * `Post(p)`, `d != own`: one `Deliver{[f..], p}` naming every follower
//!   `f` of the author with `home(f) == d` that followed at or before the
//!   post and whose edge was added to this journal before the post's entry
//!   (an edge added later brings the post with its backfill, so that the
//!   author's posts reach `f` in order). (Followers on `own` got the post in its own journal entry: the
//!   primary writes it into their timelines when it commits the post.)
//! * `AddFollower{b, a}`, `home(a) == d != own`, `a` still follows `b`:
//!   `Deliver{[a], p}` for each post of `b` since the follow (a backfill: the
//!   post may have been processed before the follow reached this cluster).
//!   A follower on `own` needs none: its follow is an earlier entry of the
//!   same journal as every post it must see.
//!
//! Only posts made after the follow reach a follower.
//!
//! Why the followers of a post may be shared while those of a backfill may
//! not: the followers of a post's author are looked up after the post was
//! committed, once, and a destination feed that lags uses that answer
//! later. A follower added after that lookup has its `AddFollower` later in
//! the journal, and its backfill brings the post; so a lookup made early is
//! only closer to the followers at the time of the post. A backfill is
//! different: it sends the posts made up to the moment `PostsSince` is
//! asked, so whether the follower still follows must be known as of that
//! same moment, or a lagging feed could send posts made after an unfollow.
//! Hence a destination looks up the followers it backfills itself, right
//! before it asks for the posts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tsn_datastore::limits::DELIVER_RECIPIENTS_MAX;
use tsn_datastore::{Entry, Op, Post};

/// The followers of a user: follower -> the time it followed from.
pub type FollowerList = BTreeMap<u32, i64>;

/// What a batch needs to know beyond its entries, for every destination.
#[derive(Debug, Default)]
pub struct Lookups {
    /// Author of a post of the batch -> its followers, looked up after the
    /// batch was committed.
    pub followers: HashMap<u32, FollowerList>,
    /// (author, follower) -> the seq of the entry of this journal that
    /// added the edge (absent: 0, an edge older than any entry here).
    pub added_at: HashMap<(u32, u32), u64>,
    /// User -> the cluster that serves it.
    pub homes: HashMap<u32, u32>,
}

/// What one destination's backfills need, looked up by its feed.
#[derive(Debug, Default)]
pub struct Backfills {
    /// Followed user of an `AddFollower` whose follower the destination
    /// serves -> its current followers (does the follower still follow?).
    pub followers: HashMap<u32, FollowerList>,
    /// (author, since_ms) -> the author's own posts at or after since_ms.
    pub posts: HashMap<(u32, i64), Vec<Post>>,
}

/// A lookup the caller should have made and did not.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    #[error("the followers of user {0} were not looked up")]
    Followers(u32),
    #[error("the home cluster of user {0} was not looked up")]
    Home(u32),
    #[error("the posts of user {author} since {since_ms} ms were not looked up")]
    Posts { author: u32, since_ms: i64 },
}

/// Users whose followers the batch needs for every destination: the
/// authors of its posts.
pub fn followers_needed(entries: &[Entry]) -> BTreeSet<u32> {
    let mut users = BTreeSet::new();
    for entry in entries {
        if let Op::Post(post) = &entry.op {
            users.insert(post.author);
        }
    }
    users
}

/// Users whose home cluster the batch needs, given the followers looked up:
/// follow targets, followers that may receive a post, and new followers
/// that may need a backfill.
pub fn homes_needed(entries: &[Entry], lookups: &Lookups) -> BTreeSet<u32> {
    let mut users = BTreeSet::new();
    for entry in entries {
        match &entry.op {
            Op::Follow { target, .. } | Op::Unfollow { target, .. } => {
                users.insert(*target);
            }
            Op::Post(post) => {
                if let Some(followers) = lookups.followers.get(&post.author) {
                    users.extend(
                        followers
                            .iter()
                            .filter(|(_, since_ms)| **since_ms <= post.ts_ms)
                            .map(|(follower, _)| *follower),
                    );
                }
            }
            Op::AddFollower { follower, .. } => {
                users.insert(*follower);
            }
            _ => {}
        }
    }
    users
}

/// Users whose current followers `dest` needs for its backfills: the
/// followed user of each `AddFollower` whose follower `dest` serves.
pub fn backfill_followers_needed(
    own: u32,
    dest: u32,
    entries: &[Entry],
    lookups: &Lookups,
) -> Result<BTreeSet<u32>, DeriveError> {
    let mut users = BTreeSet::new();
    if dest == own {
        return Ok(users);
    }
    for entry in entries {
        if let Op::AddFollower { user, follower, .. } = &entry.op {
            if home(lookups, *follower)? == dest {
                users.insert(*user);
            }
        }
    }
    Ok(users)
}

/// The (author, since_ms) post lists the batch needs for backfills to
/// `dest`, given the followers in `backfills`.
pub fn backfills_needed(
    own: u32,
    dest: u32,
    entries: &[Entry],
    lookups: &Lookups,
    backfills: &Backfills,
) -> Result<BTreeSet<(u32, i64)>, DeriveError> {
    let mut wanted = BTreeSet::new();
    if dest == own {
        return Ok(wanted);
    }
    for entry in entries {
        if let Op::AddFollower {
            user,
            follower,
            since_ms,
            ..
        } = &entry.op
        {
            if home(lookups, *follower)? != dest {
                continue;
            }
            if let Some(since_ms) = backfill_since(backfills, *user, *follower, *since_ms)? {
                wanted.insert((*user, since_ms));
            }
        }
    }
    Ok(wanted)
}

/// The operations destination cluster `dest` needs for `entries` (committed
/// entries of cluster `own`, in journal order), in that order.
pub fn derive(
    own: u32,
    dest: u32,
    entries: &[Entry],
    lookups: &Lookups,
    backfills: &Backfills,
) -> Result<Vec<Op>, DeriveError> {
    debug_assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut ops = Vec::new();
    for entry in entries {
        match &entry.op {
            Op::User { user, cluster } => {
                if *cluster == own && dest != own {
                    ops.push(Op::User {
                        user: *user,
                        cluster: *cluster,
                    });
                }
            }
            Op::Follow {
                user,
                target,
                since_ms,
            } => {
                if home(lookups, *target)? == dest {
                    ops.push(Op::AddFollower {
                        user: *target,
                        follower: *user,
                        since_ms: *since_ms,
                        version: entry.seq,
                    });
                }
            }
            Op::Unfollow { user, target } => {
                if home(lookups, *target)? == dest {
                    ops.push(Op::RemoveFollower {
                        user: *target,
                        follower: *user,
                        version: entry.seq,
                    });
                }
            }
            Op::Post(_) if dest == own => {}
            Op::Post(post) => {
                let followers = lookups
                    .followers
                    .get(&post.author)
                    .ok_or(DeriveError::Followers(post.author))?;
                let mut to = Vec::new();
                for (follower, since_ms) in followers {
                    // An edge added after this post (the lookup was made
                    // later) brings the post with its backfill, in its
                    // author's order; sent live now, it would arrive
                    // before the older posts that backfill brings.
                    let added_at = lookups.added_at.get(&(post.author, *follower));
                    if added_at.is_some_and(|&at| at > entry.seq) {
                        continue;
                    }
                    if *since_ms <= post.ts_ms && home(lookups, *follower)? == dest {
                        to.push(*follower);
                    }
                }
                // One op per post and destination, not per follower.
                for to in to.chunks(DELIVER_RECIPIENTS_MAX) {
                    ops.push(Op::Deliver {
                        to: to.to_vec(),
                        post: post.clone(),
                    });
                }
            }
            Op::AddFollower {
                user,
                follower,
                since_ms,
                ..
            } => {
                if dest == own || home(lookups, *follower)? != dest {
                    continue;
                }
                let Some(since_ms) = backfill_since(backfills, *user, *follower, *since_ms)? else {
                    continue;
                };
                let posts = backfills
                    .posts
                    .get(&(*user, since_ms))
                    .ok_or(DeriveError::Posts {
                        author: *user,
                        since_ms,
                    })?;
                // Only the author's own posts since the follow, whatever the
                // primary sent.
                for post in posts {
                    if post.author == *user && post.ts_ms >= since_ms {
                        ops.push(Op::Deliver {
                            to: vec![*follower],
                            post: post.clone(),
                        });
                    }
                }
            }
            // A shown cursor, an account's password and its sessions
            // concern the own cluster's user only.
            Op::Deliver { .. }
            | Op::RemoveFollower { .. }
            | Op::Shown { .. }
            | Op::Account { .. }
            | Op::Session { .. }
            | Op::Logout { .. } => {}
        }
    }
    Ok(ops)
}

fn home(lookups: &Lookups, user: u32) -> Result<u32, DeriveError> {
    lookups
        .homes
        .get(&user)
        .copied()
        .ok_or(DeriveError::Home(user))
}

/// From when a backfill of `user`'s posts to `follower` starts: `None` when
/// the follower no longer follows. Of the follow in the entry and the
/// current one, the later counts: after an unfollow and a new follow, the
/// posts in between must not reach the follower.
fn backfill_since(
    backfills: &Backfills,
    user: u32,
    follower: u32,
    entry_since_ms: i64,
) -> Result<Option<i64>, DeriveError> {
    let followers = backfills
        .followers
        .get(&user)
        .ok_or(DeriveError::Followers(user))?;
    Ok(followers
        .get(&follower)
        .map(|current_since_ms| entry_since_ms.max(*current_since_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: u32 = 1;

    /// No backfill lookups: for batches without `AddFollower`.
    fn none() -> Backfills {
        Backfills::default()
    }

    fn entry(seq: u64, op: Op) -> Entry {
        Entry { seq, epoch: 1, op }
    }

    fn post(author: u32, id: &str, ts_ms: i64) -> Post {
        Post {
            id: id.to_string(),
            author,
            text: format!("text of {id}"),
            ts_ms,
        }
    }

    /// Users live in cluster `(u - 1) % 3 + 1`, as with three clusters.
    fn lookups(followers: &[(u32, &[(u32, i64)])]) -> Lookups {
        let mut l = Lookups::default();
        for u in 1..=30 {
            l.homes.insert(u, tsn_cluster::home_cluster(u, 3));
        }
        for (user, list) in followers {
            l.followers
                .insert(*user, list.iter().copied().collect::<BTreeMap<_, _>>());
        }
        l
    }

    #[test]
    fn local_user_goes_to_every_other_cluster() {
        let entries = [entry(
            1,
            Op::User {
                user: 4,
                cluster: OWN,
            },
        )];
        let l = lookups(&[]);
        assert_eq!(derive(OWN, OWN, &entries, &l, &none()).unwrap(), vec![]);
        for dest in [2, 3] {
            assert_eq!(
                derive(OWN, dest, &entries, &l, &none()).unwrap(),
                vec![Op::User {
                    user: 4,
                    cluster: OWN
                }]
            );
        }
    }

    #[test]
    fn remote_users_are_not_propagated_again() {
        let entries = [entry(
            1,
            Op::User {
                user: 2,
                cluster: 2,
            },
        )];
        let l = lookups(&[]);
        for dest in 1..=3 {
            assert_eq!(derive(OWN, dest, &entries, &l, &none()).unwrap(), vec![]);
        }
    }

    #[test]
    fn follow_goes_to_the_target_cluster_with_the_seq_as_version() {
        // 1 follows 5 (cluster 2) and 7 (cluster 1, the own cluster).
        let entries = [
            entry(
                10,
                Op::Follow {
                    user: 1,
                    target: 5,
                    since_ms: 100,
                },
            ),
            entry(
                11,
                Op::Follow {
                    user: 1,
                    target: 7,
                    since_ms: 101,
                },
            ),
        ];
        let l = lookups(&[]);
        assert_eq!(
            derive(OWN, 2, &entries, &l, &none()).unwrap(),
            vec![Op::AddFollower {
                user: 5,
                follower: 1,
                since_ms: 100,
                version: 10
            }]
        );
        // The own cluster's copy: the follow's entry wrote the same edge
        // with the same version, so the primary skips it as a duplicate.
        assert_eq!(
            derive(OWN, OWN, &entries, &l, &none()).unwrap(),
            vec![Op::AddFollower {
                user: 7,
                follower: 1,
                since_ms: 101,
                version: 11
            }]
        );
        assert_eq!(derive(OWN, 3, &entries, &l, &none()).unwrap(), vec![]);
    }

    #[test]
    fn unfollow_removes_the_follower_with_the_seq_as_version() {
        let entries = [entry(42, Op::Unfollow { user: 1, target: 6 })];
        let l = lookups(&[]);
        assert_eq!(
            derive(OWN, 3, &entries, &l, &none()).unwrap(),
            vec![Op::RemoveFollower {
                user: 6,
                follower: 1,
                version: 42
            }]
        );
        assert_eq!(derive(OWN, 2, &entries, &l, &none()).unwrap(), vec![]);
        assert_eq!(derive(OWN, OWN, &entries, &l, &none()).unwrap(), vec![]);
    }

    #[test]
    fn post_is_split_by_the_followers_clusters() {
        // Author 1 (cluster 1) has followers 2, 5 (cluster 2), 3 (cluster 3)
        // and 4 (cluster 1).
        let p = post(1, "1-a", 1_000);
        let entries = [entry(3, Op::Post(p.clone()))];
        let l = lookups(&[(1, &[(2, 10), (3, 10), (4, 10), (5, 10)])]);
        assert_eq!(followers_needed(&entries), BTreeSet::from([1]));
        assert_eq!(homes_needed(&entries, &l), BTreeSet::from([2, 3, 4, 5]));
        let deliver = |to: &[u32]| Op::Deliver {
            to: to.to_vec(),
            post: p.clone(),
        };
        assert_eq!(
            derive(OWN, 2, &entries, &l, &none()).unwrap(),
            vec![deliver(&[2, 5])]
        );
        assert_eq!(
            derive(OWN, 3, &entries, &l, &none()).unwrap(),
            vec![deliver(&[3])]
        );
        // Follower 4 is on the author's own cluster: the post's own entry
        // put it into 4's timeline already.
        assert_eq!(derive(OWN, OWN, &entries, &l, &none()).unwrap(), vec![]);
    }

    #[test]
    fn a_post_with_very_many_followers_is_split_into_bounded_ops() {
        let p = post(1, "1-a", 1_000);
        let entries = [entry(3, Op::Post(p.clone()))];
        let n = DELIVER_RECIPIENTS_MAX as u32 + 10;
        let mut l = Lookups::default();
        l.followers.insert(1, (2..2 + n).map(|f| (f, 0)).collect());
        for f in 2..2 + n {
            l.homes.insert(f, 2);
        }
        let ops = derive(OWN, 2, &entries, &l, &none()).unwrap();
        let sizes: Vec<usize> = ops
            .iter()
            .map(|op| match op {
                Op::Deliver { to, .. } => to.len(),
                _ => panic!("only deliveries"),
            })
            .collect();
        assert_eq!(sizes, vec![DELIVER_RECIPIENTS_MAX, 10]);
    }

    #[test]
    fn post_made_before_the_follow_is_not_delivered() {
        let entries = [
            entry(1, Op::Post(post(1, "1-old", 500))),
            entry(2, Op::Post(post(1, "1-new", 1_500))),
        ];
        // 2 follows 1 from 1000 on.
        let l = lookups(&[(1, &[(2, 1_000)])]);
        assert_eq!(
            derive(OWN, 2, &entries, &l, &none()).unwrap(),
            vec![Op::Deliver {
                to: vec![2],
                post: post(1, "1-new", 1_500)
            }]
        );
    }

    #[test]
    fn post_at_the_follow_time_is_delivered() {
        let entries = [entry(1, Op::Post(post(1, "1-a", 1_000)))];
        let l = lookups(&[(1, &[(2, 1_000)])]);
        assert_eq!(derive(OWN, 2, &entries, &l, &none()).unwrap().len(), 1);
    }

    #[test]
    fn post_without_followers_gives_nothing() {
        let entries = [entry(1, Op::Post(post(1, "1-a", 1_000)))];
        let l = lookups(&[(1, &[])]);
        for dest in 1..=3 {
            assert_eq!(derive(OWN, dest, &entries, &l, &none()).unwrap(), vec![]);
        }
    }

    /// The followers a destination looked up for its backfills.
    fn current(followers: &[(u32, &[(u32, i64)])]) -> Backfills {
        let mut b = Backfills::default();
        for (user, list) in followers {
            b.followers
                .insert(*user, list.iter().copied().collect::<BTreeMap<_, _>>());
        }
        b
    }

    fn add_follower(seq: u64, user: u32, follower: u32, since_ms: i64) -> Entry {
        entry(
            seq,
            Op::AddFollower {
                user,
                follower,
                since_ms,
                version: 4,
            },
        )
    }

    #[test]
    fn backfill_sends_posts_since_the_follow_to_a_current_follower() {
        // 2 (cluster 2) now follows 1 (served here) from 1000 on.
        let entries = [add_follower(9, 1, 2, 1_000)];
        let l = lookups(&[]);
        // The shared lookups need no followers, only the follower's home.
        assert_eq!(followers_needed(&entries), BTreeSet::new());
        assert_eq!(homes_needed(&entries, &l), BTreeSet::from([2]));
        // Only the destination of the follower looks up 1's followers.
        assert_eq!(
            backfill_followers_needed(OWN, 2, &entries, &l).unwrap(),
            BTreeSet::from([1])
        );
        for dest in [3, OWN] {
            assert_eq!(
                backfill_followers_needed(OWN, dest, &entries, &l).unwrap(),
                BTreeSet::new()
            );
            assert_eq!(
                backfills_needed(OWN, dest, &entries, &l, &none()).unwrap(),
                BTreeSet::new()
            );
            assert_eq!(derive(OWN, dest, &entries, &l, &none()).unwrap(), vec![]);
        }
        assert_eq!(
            derive(OWN, 2, &entries, &l, &none()),
            Err(DeriveError::Followers(1))
        );
        let mut b = current(&[(1, &[(2, 1_000)])]);
        assert_eq!(
            backfills_needed(OWN, 2, &entries, &l, &b).unwrap(),
            BTreeSet::from([(1, 1_000)])
        );
        assert_eq!(
            derive(OWN, 2, &entries, &l, &b),
            Err(DeriveError::Posts {
                author: 1,
                since_ms: 1_000
            })
        );
        // An older post, or one of someone else, is not passed on even if
        // the primary sends it.
        b.posts.insert(
            (1, 1_000),
            vec![
                post(1, "1-a", 1_000),
                post(1, "1-b", 2_000),
                post(1, "1-old", 999),
                post(3, "3-x", 2_000),
            ],
        );
        assert_eq!(
            derive(OWN, 2, &entries, &l, &b).unwrap(),
            vec![
                Op::Deliver {
                    to: vec![2],
                    post: post(1, "1-a", 1_000)
                },
                Op::Deliver {
                    to: vec![2],
                    post: post(1, "1-b", 2_000)
                },
            ]
        );
    }

    /// The race: posts 1-a and 1-b are committed before 2's edge (seq 9),
    /// but the batch of 1-b is looked up after the edge was added. 1-b
    /// must not go live ahead of the backfill, or 2 would get 1-b before
    /// 1-a; the edge's backfill brings both, in order.
    #[test]
    fn a_post_committed_before_its_follower_s_edge_comes_with_the_backfill() {
        let entries = [
            entry(5, Op::Post(post(1, "1-b", 2_000))),
            add_follower(9, 1, 2, 1_000),
            entry(10, Op::Post(post(1, "1-c", 3_000))),
        ];
        let mut l = lookups(&[(1, &[(2, 1_000)])]);
        l.added_at.insert((1, 2), 9);
        let mut b = current(&[(1, &[(2, 1_000)])]);
        b.posts.insert(
            (1, 1_000),
            vec![post(1, "1-a", 1_500), post(1, "1-b", 2_000)],
        );
        let deliver = |id: &str, ts| Op::Deliver {
            to: vec![2],
            post: post(1, id, ts),
        };
        assert_eq!(
            derive(OWN, 2, &entries, &l, &b).unwrap(),
            vec![
                deliver("1-a", 1_500),
                deliver("1-b", 2_000),
                deliver("1-c", 3_000)
            ],
            "in the author's order, 1-b once"
        );
        // Without the edge's seq (an older primary), the post goes live.
        l.added_at.clear();
        assert_eq!(
            derive(OWN, 2, &entries[..1], &l, &b).unwrap(),
            vec![deliver("1-b", 2_000)]
        );
    }

    #[test]
    fn no_backfill_for_a_follower_on_the_own_cluster() {
        // 4 (cluster 1, like 1) follows 1: posts after the follow are in
        // the same journal and reach 4 in their own entries.
        let entries = [entry(
            9,
            Op::AddFollower {
                user: 1,
                follower: 4,
                since_ms: 1_000,
                version: 4,
            },
        )];
        let l = lookups(&[]);
        assert_eq!(
            backfill_followers_needed(OWN, OWN, &entries, &l).unwrap(),
            BTreeSet::new()
        );
        assert_eq!(
            backfills_needed(OWN, OWN, &entries, &l, &none()).unwrap(),
            BTreeSet::new()
        );
        assert_eq!(derive(OWN, OWN, &entries, &l, &none()).unwrap(), vec![]);
    }

    #[test]
    fn no_backfill_for_a_follower_that_unfollowed() {
        let entries = [add_follower(9, 1, 2, 1_000)];
        let l = lookups(&[]);
        // 5 follows 1, but 2 no longer does.
        let b = current(&[(1, &[(5, 1_000)])]);
        assert_eq!(
            backfills_needed(OWN, 2, &entries, &l, &b).unwrap(),
            BTreeSet::new()
        );
        assert_eq!(derive(OWN, 2, &entries, &l, &b).unwrap(), vec![]);
    }

    #[test]
    fn a_backfill_goes_by_the_destination_s_own_lookup_not_the_shared_one() {
        // The shared lookup (made when the batch was read) still had 2 as a
        // follower of 1; by the time the destination sends, 2 unfollowed.
        // The posts asked for now could be newer than the unfollow, so the
        // destination's own, later, lookup decides.
        let entries = [add_follower(9, 1, 2, 1_000)];
        let l = lookups(&[(1, &[(2, 1_000)])]);
        let b = current(&[(1, &[])]);
        assert_eq!(
            backfills_needed(OWN, 2, &entries, &l, &b).unwrap(),
            BTreeSet::new()
        );
        assert_eq!(derive(OWN, 2, &entries, &l, &b).unwrap(), vec![]);
    }

    #[test]
    fn backfill_starts_at_the_latest_follow() {
        // 2 followed at 1000, unfollowed, and followed again at 3000: the
        // old AddFollower must not bring the posts in between.
        let entries = [add_follower(9, 1, 2, 1_000)];
        let l = lookups(&[]);
        let b = current(&[(1, &[(2, 3_000)])]);
        assert_eq!(
            backfills_needed(OWN, 2, &entries, &l, &b).unwrap(),
            BTreeSet::from([(1, 3_000)])
        );
    }

    #[test]
    fn a_missing_home_of_a_new_follower_is_an_error() {
        let entries = [add_follower(9, 1, 2, 1_000)];
        assert_eq!(
            backfill_followers_needed(OWN, 2, &entries, &Lookups::default()),
            Err(DeriveError::Home(2))
        );
    }

    #[test]
    fn received_changes_are_not_passed_on() {
        let entries = [
            entry(
                1,
                Op::Deliver {
                    to: vec![1],
                    post: post(2, "2-a", 5),
                },
            ),
            entry(
                2,
                Op::RemoveFollower {
                    user: 1,
                    follower: 2,
                    version: 7,
                },
            ),
        ];
        let l = lookups(&[]);
        for dest in 1..=3 {
            assert_eq!(derive(OWN, dest, &entries, &l, &none()).unwrap(), vec![]);
        }
    }

    #[test]
    fn ops_keep_the_journal_order() {
        let p = post(1, "1-a", 2_000);
        let entries = [
            entry(
                1,
                Op::User {
                    user: 1,
                    cluster: OWN,
                },
            ),
            entry(
                2,
                Op::Follow {
                    user: 1,
                    target: 2,
                    since_ms: 1_000,
                },
            ),
            entry(3, Op::Post(p.clone())),
            entry(4, Op::Unfollow { user: 1, target: 2 }),
        ];
        let l = lookups(&[(1, &[(2, 1_500)])]);
        assert_eq!(
            derive(OWN, 2, &entries, &l, &none()).unwrap(),
            vec![
                Op::User {
                    user: 1,
                    cluster: OWN
                },
                Op::AddFollower {
                    user: 2,
                    follower: 1,
                    since_ms: 1_000,
                    version: 2
                },
                Op::Deliver {
                    to: vec![2],
                    post: p
                },
                Op::RemoveFollower {
                    user: 2,
                    follower: 1,
                    version: 4
                },
            ]
        );
    }

    #[test]
    fn a_missing_lookup_is_an_error_not_a_skip() {
        let entries = [entry(1, Op::Post(post(1, "1-a", 5)))];
        assert_eq!(
            derive(OWN, 2, &entries, &Lookups::default(), &none()),
            Err(DeriveError::Followers(1))
        );
        let mut l = Lookups::default();
        l.followers.insert(1, BTreeMap::from([(2, 0)]));
        assert_eq!(
            derive(OWN, 2, &entries, &l, &none()),
            Err(DeriveError::Home(2))
        );
        let follow = [entry(
            1,
            Op::Follow {
                user: 1,
                target: 9,
                since_ms: 0,
            },
        )];
        assert_eq!(
            derive(OWN, 2, &follow, &l, &none()),
            Err(DeriveError::Home(9))
        );
    }
}
