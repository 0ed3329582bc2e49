//! The in-memory fold of the journal: who exists, who follows whom, which
//! posts each timeline holds. Pure logic, no I/O.
//!
//! [`JournalFold::is_duplicate`] is what makes every op idempotent: an op whose
//! record is already present (the same user, an edge version not newer than
//! the one held, a post id already in that timeline) changes nothing.
//!
//! A follow between two users of this cluster writes the follower edge of
//! the followed user in its own entry, with the follow's seq as the edge's
//! version ([`JournalFold::own_follower_edge`]), so that the followed user's
//! LIST shows it as soon as the follow is acknowledged. The sync service's
//! `AddFollower` (or `RemoveFollower`) for the same edge carries the same
//! version, so it is a duplicate and is skipped.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::limits::SESSIONS_PER_USER_MAX;
use crate::record::{Entry, Op};

#[derive(Default, Debug)]
pub struct JournalFold {
    /// The cluster whose journal this is (0, as by `default()`: none, so
    /// no follow writes a follower edge itself).
    cluster: u32,
    /// Every known user and the cluster that serves it.
    users: BTreeMap<u32, u32>,
    /// Local user -> (followed user -> since_ms).
    following: HashMap<u32, BTreeMap<u32, i64>>,
    /// Local user -> (follower -> since_ms), as told by the sync services
    /// (followers on every cluster).
    followers: HashMap<u32, BTreeMap<u32, i64>>,
    /// Any user -> (local follower -> since_ms), from this cluster's own
    /// follows: who receives a local author's post in the same entry.
    local_followers: HashMap<u32, BTreeMap<u32, i64>>,
    /// (user, follower) -> version of the last change of that edge.
    edge_versions: HashMap<(u32, u32), u64>,
    /// (user, follower) -> seq of the entry of this journal that added the
    /// edge now in `followers`. A post committed before it is not the
    /// follower's to get live: the edge's backfill brings it, in order.
    edge_added_at: HashMap<(u32, u32), u64>,
    /// Timeline owner -> hashes of the post ids it holds.
    timeline_posts: HashMap<u32, HashSet<u64>>,
    /// Timeline owner -> seq of its newest line.
    timeline_last_seq: HashMap<u32, u64>,
    /// Local user -> seq up to which the MP3 variant's `Timeline` showed
    /// its timeline (`Op::Shown`).
    shown: HashMap<u32, u64>,
    /// Local user -> its account and sessions (`Op::Account`,
    /// `Op::Session`, `Op::Logout`): users with one are claimed.
    accounts: HashMap<u32, Account>,
    last_seq: u64,
    /// The newest timestamp this cluster gave (a post's `ts_ms`, a
    /// follow's `since_ms`): a new primary's cluster time starts no
    /// earlier (see `tsn_cluster::clock`).
    last_ts_ms: i64,
}

/// An account as its cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub handle: String,
    /// Argon2id, PHC string.
    pub password_hash: String,
    /// SHA-256 of a token (hex) -> when the session expires (ms since the
    /// Unix epoch).
    sessions: BTreeMap<String, i64>,
}

impl Account {
    /// Whether the token hashing to `token_sha256` is a session that has
    /// not expired at `now_ms`.
    pub fn session_valid(&self, token_sha256: &str, now_ms: i64) -> bool {
        self.sessions
            .get(token_sha256)
            .is_some_and(|&expires_ms| now_ms < expires_ms)
    }

    /// How many sessions it holds, expired ones included.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

fn post_key(id: &str) -> u64 {
    // DefaultHasher::new() uses fixed keys, so the hash is stable.
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl JournalFold {
    /// The fold of an empty journal of cluster `cluster`.
    pub fn new(cluster: u32) -> JournalFold {
        JournalFold {
            cluster,
            ..JournalFold::default()
        }
    }

    /// The follower edge `(followed, follower)` that `op` writes itself: a
    /// follow or unfollow whose followed user this cluster serves (its
    /// follower always is: a follow is written by the follower's primary).
    /// Its version is the entry's seq, as the sync service's would be.
    /// The same before and after the op is applied: a follow changes no
    /// user's cluster.
    pub fn own_follower_edge(&self, op: &Op) -> Option<(u32, u32)> {
        match op {
            Op::Follow { user, target, .. } | Op::Unfollow { user, target }
                if self.cluster != 0 && self.users.get(target) == Some(&self.cluster) =>
            {
                Some((*target, *user))
            }
            _ => None,
        }
    }

    /// True when applying `op` would change nothing.
    pub fn is_duplicate(&self, op: &Op) -> bool {
        match op {
            Op::User { user, cluster } => self.users.get(user) == Some(cluster),
            Op::Follow { user, target, .. } => self.follows(*user, *target),
            Op::Unfollow { user, target } => !self.follows(*user, *target),
            Op::Post(p) => self.has_post(p.author, &p.id),
            Op::Deliver { to, post } => to.iter().all(|t| self.has_post(*t, &post.id)),
            Op::AddFollower {
                user,
                follower,
                version,
                ..
            }
            | Op::RemoveFollower {
                user,
                follower,
                version,
            } => self
                .edge_versions
                .get(&(*user, *follower))
                .is_some_and(|v| v >= version),
            Op::Shown { user, seq } => self.shown_seq(*user) >= *seq,
            Op::Account {
                user,
                handle,
                password_hash,
            } => self
                .accounts
                .get(user)
                .is_some_and(|a| &a.handle == handle && &a.password_hash == password_hash),
            Op::Session {
                user, token_sha256, ..
            } => self
                .accounts
                .get(user)
                .is_some_and(|a| a.sessions.contains_key(token_sha256)),
            Op::Logout { user, token_sha256 } => !self
                .accounts
                .get(user)
                .is_some_and(|a| a.sessions.contains_key(token_sha256)),
        }
    }

    /// What of `op` is not yet present: `None` when applying it would
    /// change nothing; for a delivery, only the recipients that lack the
    /// post, sorted and without repeats, so that the stored entry writes
    /// each timeline line exactly once.
    pub fn remaining(&self, op: &Op) -> Option<Op> {
        match op {
            Op::Deliver { to, post } => {
                let mut to: Vec<u32> = to
                    .iter()
                    .copied()
                    .filter(|t| !self.has_post(*t, &post.id))
                    .collect();
                to.sort_unstable();
                to.dedup();
                (!to.is_empty()).then(|| Op::Deliver {
                    to,
                    post: post.clone(),
                })
            }
            op if self.is_duplicate(op) => None,
            op => Some(op.clone()),
        }
    }

    pub fn apply(&mut self, entry: &Entry) {
        debug_assert!(entry.seq > self.last_seq, "entries apply in order");
        self.last_seq = entry.seq;
        match &entry.op {
            Op::User { user, cluster } => {
                self.users.insert(*user, *cluster);
            }
            Op::Follow {
                user,
                target,
                since_ms,
            } => {
                self.last_ts_ms = self.last_ts_ms.max(*since_ms);
                if self.own_follower_edge(&entry.op).is_some() {
                    self.add_follower(*target, *user, *since_ms, entry.seq, entry.seq);
                }
                self.following
                    .entry(*user)
                    .or_default()
                    .insert(*target, *since_ms);
                self.local_followers
                    .entry(*target)
                    .or_default()
                    .insert(*user, *since_ms);
            }
            Op::Unfollow { user, target } => {
                if self.own_follower_edge(&entry.op).is_some() {
                    self.remove_follower(*target, *user, entry.seq);
                }
                if let Some(f) = self.following.get_mut(user) {
                    f.remove(target);
                }
                if let Some(f) = self.local_followers.get_mut(target) {
                    f.remove(user);
                }
            }
            Op::Post(p) => {
                self.last_ts_ms = self.last_ts_ms.max(p.ts_ms);
                for owner in self.post_timelines(p) {
                    self.add_post(owner, &p.id, entry.seq);
                }
            }
            Op::Deliver { to, post } => {
                for t in to {
                    self.add_post(*t, &post.id, entry.seq);
                }
            }
            Op::AddFollower {
                user,
                follower,
                since_ms,
                version,
            } => self.add_follower(*user, *follower, *since_ms, *version, entry.seq),
            Op::RemoveFollower {
                user,
                follower,
                version,
            } => self.remove_follower(*user, *follower, *version),
            Op::Shown { user, seq } => {
                let shown = self.shown.entry(*user).or_default();
                *shown = (*shown).max(*seq);
            }
            Op::Account {
                user,
                handle,
                password_hash,
            } => {
                let account = self.accounts.entry(*user).or_insert_with(|| Account {
                    handle: String::new(),
                    password_hash: String::new(),
                    sessions: BTreeMap::new(),
                });
                account.handle.clone_from(handle);
                account.password_hash.clone_from(password_hash);
            }
            Op::Session {
                user,
                token_sha256,
                expires_ms,
            } => {
                // A session of a user without an account is refused before
                // it is written; one in an old journal changes nothing.
                if let Some(account) = self.accounts.get_mut(user) {
                    account.sessions.insert(token_sha256.clone(), *expires_ms);
                    while account.sessions.len() > SESSIONS_PER_USER_MAX {
                        let first = account
                            .sessions
                            .iter()
                            .min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
                            .map(|(t, _)| t.clone());
                        match first {
                            Some(t) => account.sessions.remove(&t),
                            None => break,
                        };
                    }
                }
            }
            Op::Logout { user, token_sha256 } => {
                if let Some(account) = self.accounts.get_mut(user) {
                    account.sessions.remove(token_sha256);
                }
            }
        }
    }

    /// The account of `user`, if it has claimed one here.
    pub fn account(&self, user: u32) -> Option<&Account> {
        self.accounts.get(&user)
    }

    fn add_follower(&mut self, user: u32, follower: u32, since_ms: i64, version: u64, seq: u64) {
        self.edge_versions.insert((user, follower), version);
        self.edge_added_at.insert((user, follower), seq);
        self.followers
            .entry(user)
            .or_default()
            .insert(follower, since_ms);
    }

    fn remove_follower(&mut self, user: u32, follower: u32, version: u64) {
        self.edge_versions.insert((user, follower), version);
        self.edge_added_at.remove(&(user, follower));
        if let Some(f) = self.followers.get_mut(&user) {
            f.remove(&follower);
        }
    }

    /// The seq up to which `user`'s timeline has been shown by the MP3
    /// variant's `Timeline` (0: never).
    pub fn shown_seq(&self, user: u32) -> u64 {
        self.shown.get(&user).copied().unwrap_or(0)
    }

    fn add_post(&mut self, owner: u32, id: &str, seq: u64) {
        self.timeline_posts
            .entry(owner)
            .or_default()
            .insert(post_key(id));
        self.timeline_last_seq.insert(owner, seq);
    }

    /// The timelines a post of a local author goes into, in one entry: the
    /// author's, then those of the users of this cluster who follow the
    /// author since the post's time or earlier, in id order. Followers on
    /// other clusters get it through the sync services.
    ///
    /// Because the follows are folded from the same journal, the primary
    /// and every secondary compute the same list for the same entry; and a
    /// follow or unfollow takes effect exactly at its place in the journal.
    pub fn post_timelines(&self, post: &crate::record::Post) -> Vec<u32> {
        let mut owners = vec![post.author];
        if let Some(f) = self.local_followers.get(&post.author) {
            owners.extend(
                f.iter()
                    .filter(|(u, since_ms)| **since_ms <= post.ts_ms && **u != post.author)
                    .map(|(u, _)| *u),
            );
        }
        owners
    }

    pub fn has_post(&self, owner: u32, id: &str) -> bool {
        self.timeline_posts
            .get(&owner)
            .is_some_and(|s| s.contains(&post_key(id)))
    }

    pub fn user_cluster(&self, user: u32) -> Option<u32> {
        self.users.get(&user).copied()
    }

    /// Every known user, in id order.
    pub fn users(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.users.iter().map(|(u, c)| (*u, *c))
    }

    pub fn follows(&self, user: u32, target: u32) -> bool {
        self.following
            .get(&user)
            .is_some_and(|f| f.contains_key(&target))
    }

    pub fn following(&self, user: u32) -> Vec<(u32, i64)> {
        self.following
            .get(&user)
            .map(|f| f.iter().map(|(u, s)| (*u, *s)).collect())
            .unwrap_or_default()
    }

    pub fn followers(&self, user: u32) -> Vec<(u32, i64)> {
        self.followers
            .get(&user)
            .map(|f| f.iter().map(|(u, s)| (*u, *s)).collect())
            .unwrap_or_default()
    }

    /// `user`'s followers as [`JournalFold::followers`], each with the seq
    /// of the entry of this journal that added its edge.
    pub fn followers_added_at(&self, user: u32) -> Vec<(u32, i64, u64)> {
        self.followers
            .get(&user)
            .map(|f| {
                f.iter()
                    .map(|(u, s)| {
                        let at = self.edge_added_at.get(&(user, *u)).copied();
                        (*u, *s, at.unwrap_or(0))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn timeline_last_seq(&self, user: u32) -> u64 {
        self.timeline_last_seq.get(&user).copied().unwrap_or(0)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The newest timestamp this cluster's own entries carry (posts and
    /// follows; a delivery's is another cluster's); 0 if none.
    pub fn last_ts_ms(&self) -> i64 {
        self.last_ts_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Post;

    fn apply_all(ops: &[Op]) -> JournalFold {
        apply_all_on(JournalFold::default(), ops)
    }

    /// Applies each op that is not a duplicate, the i-th at seq i + 1.
    fn apply_all_on(mut s: JournalFold, ops: &[Op]) -> JournalFold {
        for (i, op) in ops.iter().enumerate() {
            if !s.is_duplicate(op) {
                s.apply(&Entry {
                    seq: i as u64 + 1,
                    epoch: 1,
                    op: op.clone(),
                });
            }
        }
        s
    }

    fn post(id: &str, author: u32) -> Post {
        Post {
            id: id.into(),
            author,
            text: "t".into(),
            ts_ms: 1,
        }
    }

    #[test]
    fn ops_applied_twice_act_once() {
        let ops = [
            Op::User {
                user: 1,
                cluster: 1,
            },
            Op::User {
                user: 1,
                cluster: 1,
            },
            Op::Post(post("1-a", 1)),
            Op::Post(post("1-a", 1)),
            Op::Deliver {
                to: vec![2],
                post: post("1-a", 1),
            },
            Op::Deliver {
                to: vec![2],
                post: post("1-a", 1),
            },
        ];
        let s = apply_all(&ops);
        assert_eq!(s.last_seq(), 5, "three duplicates were skipped");
        assert!(s.has_post(1, "1-a") && s.has_post(2, "1-a"));
        assert!(!s.has_post(3, "1-a"));
    }

    #[test]
    fn the_shown_cursor_only_grows() {
        let shown = |seq| Op::Shown { user: 2, seq };
        let s = apply_all(&[shown(5)]);
        assert_eq!(s.shown_seq(2), 5);
        assert_eq!(s.shown_seq(3), 0, "per user");
        assert!(s.is_duplicate(&shown(5)) && s.is_duplicate(&shown(4)));
        assert!(!s.is_duplicate(&shown(6)));
        let line = Entry {
            seq: 9,
            epoch: 1,
            op: shown(7),
        }
        .to_line();
        assert_eq!(
            Entry::from_line(line.as_bytes()).map(|e| e.op),
            Some(shown(7))
        );
    }

    #[test]
    fn a_delivery_keeps_only_the_recipients_that_lack_the_post() {
        let s = apply_all(&[Op::Deliver {
            to: vec![2],
            post: post("1-a", 1),
        }]);
        let again = Op::Deliver {
            to: vec![4, 2, 3, 4],
            post: post("1-a", 1),
        };
        assert!(!s.is_duplicate(&again));
        assert_eq!(
            s.remaining(&again),
            Some(Op::Deliver {
                to: vec![3, 4],
                post: post("1-a", 1)
            })
        );
        let done = Op::Deliver {
            to: vec![2, 2],
            post: post("1-a", 1),
        };
        assert!(s.is_duplicate(&done));
        assert_eq!(s.remaining(&done), None);
        let user = Op::User {
            user: 9,
            cluster: 1,
        };
        assert_eq!(s.remaining(&user), Some(user.clone()));
    }

    #[test]
    fn the_newest_own_timestamp_counts_posts_and_follows_not_deliveries() {
        assert_eq!(apply_all(&[]).last_ts_ms(), 0);
        let s = apply_all(&[
            Op::Follow {
                user: 2,
                target: 1,
                since_ms: 40,
            },
            Op::Post(Post {
                ts_ms: 30,
                ..post("1-a", 1)
            }),
            Op::Deliver {
                to: vec![2],
                post: Post {
                    ts_ms: 99,
                    ..post("3-a", 3)
                },
            },
        ]);
        assert_eq!(s.last_ts_ms(), 40, "the latest, not the last");
    }

    #[test]
    fn a_post_goes_to_the_local_followers_of_its_time() {
        let follow = |user, since_ms| Op::Follow {
            user,
            target: 1,
            since_ms,
        };
        let at = |id: &str, ts_ms| {
            Op::Post(Post {
                ts_ms,
                ..post(id, 1)
            })
        };
        // 2 follows 1 from 10 on, 3 from 30 on, 4 follows and unfollows.
        let s = apply_all(&[
            follow(2, 10),
            follow(3, 30),
            follow(4, 5),
            Op::Unfollow { user: 4, target: 1 },
            at("1-a", 20),
        ]);
        let p = |ts_ms| Post {
            ts_ms,
            ..post("1-x", 1)
        };
        assert_eq!(s.post_timelines(&p(20)), vec![1, 2]);
        assert_eq!(s.post_timelines(&p(30)), vec![1, 2, 3]);
        assert!(s.has_post(1, "1-a") && s.has_post(2, "1-a"));
        assert!(!s.has_post(3, "1-a") && !s.has_post(4, "1-a"));
        // A retry of the same post is a duplicate, even for its followers.
        assert!(s.is_duplicate(&at("1-a", 20)));
    }

    #[test]
    fn follower_edges_take_the_newest_version_in_any_order() {
        let add = |v| Op::AddFollower {
            user: 1,
            follower: 2,
            since_ms: 10,
            version: v,
        };
        let remove = |v| Op::RemoveFollower {
            user: 1,
            follower: 2,
            version: v,
        };
        // follow (v5), unfollow (v7) arriving in reverse order: not a follower.
        let s = apply_all(&[remove(7), add(5)]);
        assert!(s.followers(1).is_empty());
        // unfollow (v5), follow again (v7), any order: a follower.
        let s = apply_all(&[add(7), remove(5), add(7)]);
        assert_eq!(s.followers(1), vec![(2, 10)]);
        // The edge is known with the entry that added it (seq 1 here)...
        assert_eq!(s.followers_added_at(1), vec![(2, 10, 1)]);
        // ...and a follow again after an unfollow with its own entry.
        let s = apply_all(&[add(5), remove(6), add(7)]);
        assert_eq!(s.followers_added_at(1), vec![(2, 10, 3)]);
    }

    #[test]
    fn follow_and_unfollow_are_idempotent() {
        let f = Op::Follow {
            user: 1,
            target: 2,
            since_ms: 3,
        };
        let u = Op::Unfollow { user: 1, target: 2 };
        let s = JournalFold::default();
        assert!(
            s.is_duplicate(&u),
            "unfollowing someone not followed changes nothing"
        );
        let s = apply_all(&[f.clone(), f.clone()]);
        assert_eq!(s.last_seq(), 1);
        assert_eq!(s.following(1), vec![(2, 3)]);
        let s = apply_all(&[f, u.clone(), u]);
        assert_eq!(s.last_seq(), 2);
        assert!(!s.follows(1, 2));
    }

    /// Users 1 and 3 on cluster 1, user 2 on cluster 2, as cluster 1 knows
    /// them.
    fn users_of_two_clusters() -> Vec<Op> {
        vec![
            Op::User {
                user: 1,
                cluster: 1,
            },
            Op::User {
                user: 2,
                cluster: 2,
            },
            Op::User {
                user: 3,
                cluster: 1,
            },
        ]
    }

    #[test]
    fn a_follow_on_the_own_cluster_writes_the_follower_edge_at_once() {
        let mut ops = users_of_two_clusters();
        // seq 4: 1 follows 3 (both on cluster 1).
        ops.push(Op::Follow {
            user: 1,
            target: 3,
            since_ms: 40,
        });
        let s = apply_all_on(JournalFold::new(1), &ops);
        assert_eq!(s.followers(3), vec![(1, 40)], "read at once");
        assert_eq!(s.own_follower_edge(&ops[3]), Some((3, 1)));
        // The sync service's copy of the same edge has the follow's seq as
        // its version: a duplicate, skipped.
        let from_sync = Op::AddFollower {
            user: 3,
            follower: 1,
            since_ms: 40,
            version: 4,
        };
        assert!(s.is_duplicate(&from_sync));
        assert_eq!(s.remaining(&from_sync), None);
    }

    #[test]
    fn an_unfollow_on_the_own_cluster_removes_the_edge_at_once() {
        let mut ops = users_of_two_clusters();
        ops.push(Op::Follow {
            user: 1,
            target: 3,
            since_ms: 40,
        });
        // seq 5: 1 unfollows 3.
        ops.push(Op::Unfollow { user: 1, target: 3 });
        let s = apply_all_on(JournalFold::new(1), &ops);
        assert!(s.followers(3).is_empty());
        // The sync service's copies, in either order, change nothing: the
        // follow's (v4) is older than the unfollow, the unfollow's (v5) is
        // the one held.
        for late in [
            Op::AddFollower {
                user: 3,
                follower: 1,
                since_ms: 40,
                version: 4,
            },
            Op::RemoveFollower {
                user: 3,
                follower: 1,
                version: 5,
            },
        ] {
            assert!(s.is_duplicate(&late), "{late:?}");
        }
        // Following again (seq 6) writes the edge again, newer than both.
        ops.push(Op::Follow {
            user: 1,
            target: 3,
            since_ms: 60,
        });
        ops.push(Op::AddFollower {
            user: 3,
            follower: 1,
            since_ms: 40,
            version: 4,
        });
        ops.push(Op::RemoveFollower {
            user: 3,
            follower: 1,
            version: 5,
        });
        let s = apply_all_on(JournalFold::new(1), &ops);
        assert_eq!(s.followers(3), vec![(1, 60)]);
        assert_eq!(s.last_seq(), 6, "the late copies were skipped");
    }

    #[test]
    fn a_follow_of_another_cluster_s_user_leaves_the_edge_to_its_cluster() {
        let mut ops = users_of_two_clusters();
        ops.push(Op::Follow {
            user: 1,
            target: 2,
            since_ms: 40,
        });
        let s = apply_all_on(JournalFold::new(1), &ops);
        assert_eq!(s.own_follower_edge(&ops[3]), None);
        assert!(s.followers(2).is_empty(), "cluster 2 keeps 2's followers");
        assert!(s.follows(1, 2));
        // A fold that serves no cluster writes no follower edge itself.
        let mut ops = users_of_two_clusters();
        ops.push(Op::Follow {
            user: 1,
            target: 3,
            since_ms: 40,
        });
        let s = apply_all(&ops);
        assert!(s.followers(3).is_empty());
        assert_eq!(s.own_follower_edge(&ops[3]), None);
    }

    fn token(i: usize) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn sessions_start_expire_and_end_and_act_once() {
        let account = Op::Account {
            user: 4,
            handle: "alice".into(),
            password_hash: "$argon2id$h".into(),
        };
        let session = |i: usize, expires_ms| Op::Session {
            user: 4,
            token_sha256: token(i),
            expires_ms,
        };
        // A session of a user without an account is nothing.
        let s = apply_all(&[session(1, 100)]);
        assert!(s.account(4).is_none());
        let logout = Op::Logout {
            user: 4,
            token_sha256: token(1),
        };
        let s = apply_all(&[account.clone(), session(1, 100), account.clone()]);
        let a = s.account(4).unwrap();
        assert_eq!(a.handle, "alice");
        assert!(a.session_valid(&token(1), 99));
        assert!(!a.session_valid(&token(1), 100), "expired at expires_ms");
        assert!(!a.session_valid(&token(2), 0));
        assert!(s.is_duplicate(&account));
        assert!(s.is_duplicate(&session(1, 100)));
        assert!(!s.is_duplicate(&logout));
        let s = apply_all(&[account.clone(), session(1, 100), logout.clone()]);
        assert!(!s.account(4).unwrap().session_valid(&token(1), 0));
        assert!(s.is_duplicate(&logout), "nothing left to end");
        // Beyond the most sessions, the one expiring first ends.
        let mut ops = vec![account];
        for i in 0..=SESSIONS_PER_USER_MAX {
            ops.push(session(i, 1_000 + i as i64));
        }
        let s = apply_all(&ops);
        let a = s.account(4).unwrap();
        assert_eq!(a.sessions(), SESSIONS_PER_USER_MAX);
        assert!(!a.session_valid(&token(0), 0));
        assert!(a.session_valid(&token(SESSIONS_PER_USER_MAX), 0));
    }
}
