//! The follow graph of a run and the followers whose streams are watched.
//! Pure and seeded: the same flags give the same graph, so a run against a
//! long-lived deployment (`-c`) can be repeated.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::index;
use rand::SeedableRng;
use tsn_cluster::home_cluster;

/// `(follower, followed)` pairs: each user follows `follows` others,
/// `round(follows × cross_share)` of them served by other clusters (none
/// when there is one cluster), the rest by its own.
pub fn follow_graph(
    users: u32,
    clusters: u32,
    follows: u32,
    cross_share: f64,
    seed: u64,
) -> Result<Vec<(u32, u32)>, String> {
    assert!(users >= 1 && clusters >= 1);
    assert!((0.0..=1.0).contains(&cross_share));
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); clusters as usize];
    for u in 1..=users {
        members[(home_cluster(u, clusters) - 1) as usize].push(u);
    }
    let others: Vec<Vec<u32>> = (0..clusters as usize)
        .map(|c| {
            members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != c)
                .flat_map(|(_, m)| m.iter().copied())
                .collect()
        })
        .collect();
    let n_cross = if clusters > 1 {
        (follows as f64 * cross_share).round() as u32
    } else {
        0
    };
    let n_same = follows - n_cross;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut edges = Vec::with_capacity(users as usize * follows as usize);
    for u in 1..=users {
        let c = (home_cluster(u, clusters) - 1) as usize;
        let same = &members[c];
        if same.len() < n_same as usize + 1 {
            return Err(format!(
                "user {u} should follow {n_same} users of its own cluster, which has only {} others: use more --users, fewer --follows or a larger --cross-share",
                same.len() - 1
            ));
        }
        if others[c].len() < n_cross as usize {
            return Err(format!(
                "user {u} should follow {n_cross} users of other clusters, which have only {}: use more --users, fewer --follows or a smaller --cross-share",
                others[c].len()
            ));
        }
        // One more than needed, so that `u` itself can be left out.
        let picked = index::sample(&mut rng, same.len(), n_same as usize + 1);
        edges.extend(
            picked
                .iter()
                .map(|i| same[i])
                .filter(|&t| t != u)
                .take(n_same as usize)
                .map(|t| (u, t)),
        );
        let picked = index::sample(&mut rng, others[c].len(), n_cross as usize);
        edges.extend(picked.iter().map(|i| (u, others[c][i])));
    }
    Ok(edges)
}

/// Followed user -> its followers.
pub fn followers_of(edges: &[(u32, u32)]) -> BTreeMap<u32, BTreeSet<u32>> {
    let mut by: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for &(follower, target) in edges {
        by.entry(target).or_default().insert(follower);
    }
    by
}

/// `count` distinct users that follow someone, chosen at random, sorted.
pub fn sample_followers(edges: &[(u32, u32)], count: u32, seed: u64) -> Vec<u32> {
    let followers: Vec<u32> = edges
        .iter()
        .map(|&(f, _)| f)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let count = (count as usize).min(followers.len());
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_f011_0e25);
    let mut picked: Vec<u32> = index::sample(&mut rng, followers.len(), count)
        .iter()
        .map(|i| followers[i])
        .collect();
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_follows_the_asked_mix() {
        let (users, clusters) = (300, 3);
        let edges = follow_graph(users, clusters, 10, 0.5, 7).unwrap();
        assert_eq!(edges.len(), 300 * 10);
        let mut seen = BTreeSet::new();
        for u in 1..=users {
            let mine: Vec<u32> = edges
                .iter()
                .filter(|(f, _)| *f == u)
                .map(|&(_, t)| t)
                .collect();
            assert_eq!(mine.len(), 10);
            let cross = mine
                .iter()
                .filter(|&&t| home_cluster(t, clusters) != home_cluster(u, clusters))
                .count();
            assert_eq!(cross, 5, "user {u}");
            assert!(!mine.contains(&u), "user {u} follows itself");
            assert!(mine.iter().all(|&t| (1..=users).contains(&t)));
            for t in mine {
                assert!(seen.insert((u, t)), "({u}, {t}) twice");
            }
        }
    }

    #[test]
    fn the_graph_is_seeded() {
        assert_eq!(
            follow_graph(100, 3, 5, 0.4, 1).unwrap(),
            follow_graph(100, 3, 5, 0.4, 1).unwrap()
        );
        assert_ne!(
            follow_graph(100, 3, 5, 0.4, 1).unwrap(),
            follow_graph(100, 3, 5, 0.4, 2).unwrap()
        );
    }

    #[test]
    fn one_cluster_means_no_cross_follows() {
        let edges = follow_graph(20, 1, 4, 1.0, 1).unwrap();
        assert_eq!(edges.len(), 80);
    }

    #[test]
    fn an_impossible_graph_is_refused() {
        // 6 users over 3 clusters: each has one other user in its cluster.
        let e = follow_graph(6, 3, 4, 0.0, 1).unwrap_err();
        assert!(e.contains("only 1 others"), "{e}");
        assert!(follow_graph(6, 3, 4, 1.0, 1).is_ok());
        assert!(follow_graph(6, 3, 5, 1.0, 1).is_err());
    }

    #[test]
    fn zero_follows_is_an_empty_graph() {
        assert!(follow_graph(10, 3, 0, 0.5, 1).unwrap().is_empty());
        assert!(sample_followers(&[], 10, 1).is_empty());
    }

    #[test]
    fn the_sample_is_distinct_followers() {
        let edges = follow_graph(200, 3, 4, 0.5, 3).unwrap();
        let s = sample_followers(&edges, 50, 3);
        assert_eq!(s.len(), 50);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_followers(&edges, 5000, 3).len(), 200);
        let by = followers_of(&edges);
        assert_eq!(by.values().map(BTreeSet::len).sum::<usize>(), edges.len());
    }
}
