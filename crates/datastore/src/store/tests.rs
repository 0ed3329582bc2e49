//! The store as a whole: files that follow the journal, recovery, reads,
//! truncation, and the same bytes whichever way entries come.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::derived::{derived_lines, FileLines};
use super::*;
use crate::layout::DerivedFile;
use crate::record::{time_text, ClientLine, EdgeLine, Op, Post, TimelineLine};
use std::collections::BTreeMap;

fn post(id: &str, author: u32, ts_ms: i64) -> Post {
    Post {
        id: id.into(),
        author,
        text: format!("text of {id}"),
        ts_ms,
    }
}

fn append_ops(store: &mut Store, ops: Vec<Op>) {
    let mut seq = store.last_seq();
    let entries: Vec<Entry> = ops
        .into_iter()
        .map(|op| {
            seq += 1;
            Entry { seq, epoch: 1, op }
        })
        .collect();
    store.append(&entries).unwrap();
}

/// A new store of server 1 of cluster 1 in a temp dir (kept while the
/// first value lives).
fn new_store() -> (tempfile::TempDir, Layout, Store) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), 1, 1);
    let store = Store::open(layout.clone(), 1).unwrap();
    (dir, layout, store)
}

fn user(user: u32, cluster: u32) -> Op {
    Op::User { user, cluster }
}

#[test]
fn files_follow_the_journal_and_recover_after_a_torn_write() {
    let (_dir, layout, mut store) = new_store();
    append_ops(
        &mut store,
        vec![
            user(1, 1),
            user(2, 2),
            Op::Post(post("1-a", 1, 10)),
            Op::Post(post("1-b", 1, 20)),
            Op::Follow {
                user: 1,
                target: 2,
                since_ms: 15,
            },
        ],
    );
    let tl = read_timeline(&layout, 1, 20, u64::MAX);
    assert_eq!(
        tl.iter().map(|l| l.post.id.as_str()).collect::<Vec<_>>(),
        vec!["1-b", "1-a"]
    );
    assert!(layout.following(1).exists() && !layout.client_dir(2).exists());
    drop(store);

    // Crash in the middle of writing the timeline: its last line is
    // torn. The journal has it, so it comes back whole.
    let tpath = layout.timeline(1);
    let full = std::fs::read(&tpath).unwrap();
    std::fs::write(&tpath, &full[..full.len() - 7]).unwrap();
    let store = Store::open(layout.clone(), 1).unwrap();
    assert_eq!(std::fs::read(&tpath).unwrap(), full);
    assert_eq!(store.last_seq(), 5);
    assert!(store.state().follows(1, 2));
}

#[test]
fn reads_after_and_since() {
    let (_dir, layout, mut store) = new_store();
    let mut ops = vec![user(1, 1)];
    for i in 0..30 {
        ops.push(Op::Post(post(&format!("1-{i}"), 1, 100 + i)));
        ops.push(Op::Deliver {
            to: vec![1],
            post: post(&format!("2-{i}"), 2, 100 + i),
        });
    }
    append_ops(&mut store, ops);
    let last = read_timeline(&layout, 1, 20, u64::MAX);
    assert_eq!(last.len(), 20);
    assert_eq!(last[0].post.id, "2-29");
    let after = read_timeline_after(&layout, 1, last[1].seq, u64::MAX, 100);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].post.id, "2-29");
    let since = read_posts_since(&layout, 1, 127, 100);
    assert_eq!(
        since.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec!["1-27", "1-28", "1-29"]
    );
    // Lines not yet committed (seq > max_seq) are not shown.
    let upto = read_timeline(&layout, 1, 5, 10);
    assert!(upto.iter().all(|l| l.seq <= 10));
}

#[test]
fn truncate_rebuilds_the_files() {
    let (_dir, layout, mut store) = new_store();
    append_ops(
        &mut store,
        vec![
            user(1, 1),
            Op::Post(post("1-a", 1, 10)),
            Op::Post(post("1-b", 1, 20)),
        ],
    );
    store.truncate_after(2).unwrap();
    assert_eq!(store.last_seq(), 2);
    assert!(!store.state().has_post(1, "1-b"));
    let tl = read_timeline(&layout, 1, 20, u64::MAX);
    assert_eq!(tl.len(), 1);
    assert_eq!(tl[0].post.id, "1-a");
}

/// Every file under a server's directory and its bytes, by relative path.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A mix of every kind of op, with post texts that need escaping.
fn mixed_ops() -> Vec<Op> {
    let odd = "\"quoted\"}} {braces] \\ \n\ttab \u{1} é ✓ 😀 </script>";
    let mut ops = vec![
        user(1, 1),
        user(4, 1),
        user(2, 2),
        Op::Follow {
            user: 1,
            target: 2,
            since_ms: 15,
        },
        Op::AddFollower {
            user: 1,
            follower: 4,
            since_ms: 16,
            version: 9,
        },
    ];
    for i in 0..6 {
        // 4 follows 1 from post 2 on, in the same batch as the posts,
        // and unfollows before post 4: posts 2 and 3 go into 4's
        // timeline in their own entries, the others do not.
        if i == 2 {
            ops.push(Op::Follow {
                user: 4,
                target: 1,
                since_ms: 1_700_000_000_000 + i,
            });
        }
        if i == 4 {
            ops.push(Op::Unfollow { user: 4, target: 1 });
        }
        ops.push(Op::Post(Post {
            id: format!("1-{i}"),
            author: 1,
            text: format!("{odd} {i}"),
            ts_ms: 1_700_000_000_000 + i,
        }));
        ops.push(Op::Deliver {
            to: vec![1, 4],
            post: Post {
                id: format!("2-{i}"),
                author: 2,
                text: format!("{i} {odd}"),
                ts_ms: 1_700_000_000_500 + i,
            },
        });
    }
    ops.push(Op::Unfollow { user: 1, target: 2 });
    ops.push(Op::RemoveFollower {
        user: 1,
        follower: 4,
        version: 11,
    });
    ops
}

/// The derived files as the serialization of the record types makes
/// them, line for line: what every way of writing them must give.
fn serialized_views(ops: &[Op]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut add = |file: &str, line: String| {
        let f = out.entry(file.to_string()).or_default();
        f.extend_from_slice(line.as_bytes());
        f.push(b'\n');
    };
    let edge = |seq, op: &str, user, since_ms, version| {
        serde_json::to_string(&EdgeLine {
            seq,
            op: op.into(),
            user,
            since_ms,
            version,
        })
        .unwrap()
    };
    let tl = |seq, post: &Post| {
        serde_json::to_string(&TimelineLine {
            seq,
            time: time_text(post.ts_ms),
            post: post.clone(),
        })
        .unwrap()
    };
    // Followed user -> local followers (with since_ms), as folded so far.
    let mut local_followers: BTreeMap<u32, BTreeMap<u32, i64>> = BTreeMap::new();
    // User -> its cluster; these views are those of cluster 1.
    let mut clusters: BTreeMap<u32, u32> = BTreeMap::new();
    let own = |clusters: &BTreeMap<u32, u32>, target: &u32| clusters.get(target) == Some(&1);
    for (i, op) in ops.iter().enumerate() {
        let seq = i as u64 + 1;
        if let Op::User { user, cluster } = op {
            clusters.insert(*user, *cluster);
        }
        match op {
            Op::Follow {
                user,
                target,
                since_ms,
            } => {
                local_followers
                    .entry(*target)
                    .or_default()
                    .insert(*user, *since_ms);
            }
            Op::Unfollow { user, target } => {
                local_followers.entry(*target).or_default().remove(user);
            }
            _ => {}
        }
        match op {
            Op::User { user, cluster } => {
                let line = ClientLine {
                    seq,
                    user: *user,
                    cluster: *cluster,
                };
                add("global_clients.data", serde_json::to_string(&line).unwrap());
            }
            Op::Follow {
                user,
                target,
                since_ms,
            } => {
                add(
                    &format!("local_clients/{user}/following.data"),
                    edge(seq, "follow", *target, Some(*since_ms), None),
                );
                // A follow of a user of the same cluster writes its
                // follower edge too, versioned by its own seq.
                if own(&clusters, target) {
                    add(
                        &format!("local_clients/{target}/followers.data"),
                        edge(seq, "add", *user, Some(*since_ms), Some(seq)),
                    );
                }
            }
            Op::Unfollow { user, target } => {
                add(
                    &format!("local_clients/{user}/following.data"),
                    edge(seq, "unfollow", *target, None, None),
                );
                if own(&clusters, target) {
                    add(
                        &format!("local_clients/{target}/followers.data"),
                        edge(seq, "remove", *user, None, Some(seq)),
                    );
                }
            }
            Op::AddFollower {
                user,
                follower,
                since_ms,
                version,
            } => add(
                &format!("local_clients/{user}/followers.data"),
                edge(seq, "add", *follower, Some(*since_ms), Some(*version)),
            ),
            Op::RemoveFollower {
                user,
                follower,
                version,
            } => add(
                &format!("local_clients/{user}/followers.data"),
                edge(seq, "remove", *follower, None, Some(*version)),
            ),
            Op::Shown { .. } | Op::Account { .. } | Op::Session { .. } | Op::Logout { .. } => {}
            Op::Post(p) => {
                add(
                    &format!("local_clients/{}/timeline.data", p.author),
                    tl(seq, p),
                );
                let followers = local_followers.get(&p.author).cloned().unwrap_or_default();
                for (f, since_ms) in followers {
                    if since_ms <= p.ts_ms {
                        add(&format!("local_clients/{f}/timeline.data"), tl(seq, p));
                    }
                }
            }
            Op::Deliver { to, post } => {
                for t in to {
                    add(&format!("local_clients/{t}/timeline.data"), tl(seq, post));
                }
            }
        }
    }
    out
}

#[test]
fn derived_files_are_the_serialized_records_whichever_way_entries_come() {
    let ops = mixed_ops();
    let expected = serialized_views(&ops);
    let dir = tempfile::tempdir().unwrap();

    // The primary's way: staged in two batches, committed.
    let primary = Layout::new(dir.path(), 1, 1);
    let mut store = Store::open(primary.clone(), 1).unwrap();
    let (first, second) = ops.split_at(7);
    for batch in [first, second] {
        for op in batch {
            store.stage(op.clone(), 1);
        }
        let pending = store.write_staged().unwrap();
        pending.sync().unwrap();
        store.finish(&pending).unwrap();
    }
    let lines = store.read_journal_lines(0, usize::MAX, usize::MAX);
    drop(store);
    let files = snapshot(primary.dir());
    for (name, bytes) in &expected {
        assert_eq!(
            String::from_utf8_lossy(&files[name]),
            String::from_utf8_lossy(bytes),
            "{name}"
        );
    }
    // Each local user has its three files; the remote one has none.
    for f in ["timeline", "following", "followers"] {
        assert!(primary
            .dir()
            .join(format!("local_clients/4/{f}.data"))
            .exists());
    }
    assert!(!primary.client_dir(2).exists());

    // A secondary's way: the primary's lines, as they came, one Append
    // of three entries at a time.
    let secondary = Layout::new(dir.path(), 1, 2);
    let mut store = Store::open(secondary.clone(), 1).unwrap();
    for chunk in lines.chunks(3) {
        let lines: Vec<Arc<[u8]>> = chunk.iter().map(|l| l.bytes.clone()).collect();
        let entries: Vec<Entry> = lines.iter().map(|l| Entry::from_line(l).unwrap()).collect();
        store.append_lines(&entries, &lines).unwrap();
    }
    drop(store);
    assert_eq!(
        snapshot(secondary.dir()),
        files,
        "the same bytes in every file"
    );

    // Store::append (serializing the entries itself) makes them too.
    let third = Layout::new(dir.path(), 1, 3);
    let mut store = Store::open(third.clone(), 1).unwrap();
    append_ops(&mut store, ops.clone());
    drop(store);
    assert_eq!(snapshot(third.dir()), files);

    // Torn last lines of every kind of file come back whole.
    for rel in [
        "global_clients.data",
        "local_clients/1/following.data",
        "local_clients/1/followers.data",
        "local_clients/4/timeline.data",
    ] {
        let path = third.dir().join(rel);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
    }
    drop(Store::open(third.clone(), 1).unwrap());
    assert_eq!(snapshot(third.dir()), files);

    // Recovery rebuilds every derived file from the journal alone, the
    // same bytes again.
    let gc = third.global_clients();
    std::fs::remove_file(&gc).unwrap();
    std::fs::remove_dir_all(third.local_clients()).unwrap();
    let store = Store::open(third.clone(), 1).unwrap();
    assert_eq!(store.last_seq(), ops.len() as u64);
    drop(store);
    assert_eq!(snapshot(third.dir()), files);
}

#[test]
fn received_lines_are_stored_as_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), 1, 2);
    let mut store = Store::open(layout.clone(), 1).unwrap();
    // Valid lines, though not as this code writes them: extra spaces,
    // fields in another order, an escaped letter, an older delivery
    // with one recipient as a number.
    let lines: Vec<&[u8]> = vec![
        br#"{"seq":1,"epoch":1,"op":{"type":"user","user":1,"cluster":1}}"#,
        br#"{"seq":2, "epoch":1,"op":{"type":"post","id":"1-a","author":1,"text":"\u0041 a","ts_ms":5}}"#,
        br#"{"epoch":1,"seq":3,"op":{"type":"post","id":"1-b","author":1,"text":"b","ts_ms":6}}"#,
        br#"{"seq":4,"epoch":1,"op":{"type":"deliver","to":1,"post":{"id":"2-c","author":2,"text":"c","ts_ms":7}}}"#,
        br#"{"seq":5,"epoch":1,"op":{"type":"post","id":"1-d","author":1,"text":"d \"}\" ","ts_ms":8}}"#,
    ];
    let arcs: Vec<Arc<[u8]>> = lines.iter().map(|l| Arc::from(*l)).collect();
    let entries: Vec<Entry> = lines.iter().map(|l| Entry::from_line(l).unwrap()).collect();
    store.append_lines(&entries, &arcs).unwrap();
    let mut journal = Vec::new();
    for l in &lines {
        journal.extend_from_slice(l);
        journal.push(b'\n');
    }
    assert_eq!(std::fs::read(layout.journal()).unwrap(), journal);
    let held = store.read_journal_lines(0, 10, 1 << 20);
    assert!(held.iter().zip(&lines).all(|(h, l)| &h.bytes[..] == *l));
    // The timeline holds the serialized records either way.
    let ops: Vec<Op> = entries.iter().map(|e| e.op.clone()).collect();
    let expected = serialized_views(&ops);
    let tl = "local_clients/1/timeline.data";
    assert_eq!(
        String::from_utf8(std::fs::read(layout.dir().join(tl)).unwrap()).unwrap(),
        String::from_utf8(expected[tl].clone()).unwrap()
    );
    drop(store);
    // And the reopened journal serves the same bytes from the file.
    let store = Store::open(layout.clone(), 1).unwrap();
    let from_file = store.read_journal_lines(0, 10, 1 << 20);
    assert!(from_file
        .iter()
        .zip(&lines)
        .all(|(h, l)| &h.bytes[..] == *l));
    assert_eq!(from_file.len(), lines.len());
}

#[test]
fn a_line_that_does_not_continue_the_journal_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), 1, 2);
    let mut store = Store::open(layout.clone(), 1).unwrap();
    append_ops(&mut store, vec![user(1, 1)]);
    let before = snapshot(layout.dir());
    let gap = Entry {
        seq: 3,
        epoch: 1,
        op: Op::Post(post("1-a", 1, 1)),
    };
    let line: Arc<[u8]> = Arc::from(gap.to_line().into_bytes());
    assert!(store
        .append_lines(std::slice::from_ref(&gap), std::slice::from_ref(&line))
        .is_err());
    // An older epoch inside a batch is refused whole, too.
    let two = [
        Entry {
            seq: 2,
            epoch: 2,
            op: Op::Post(post("1-b", 1, 1)),
        },
        Entry {
            seq: 3,
            epoch: 1,
            op: Op::Post(post("1-c", 1, 1)),
        },
    ];
    let lines: Vec<Arc<[u8]>> = two
        .iter()
        .map(|e| Arc::from(e.to_line().into_bytes()))
        .collect();
    assert!(store.append_lines(&two, &lines).is_err());
    assert_eq!(store.last_seq(), 1);
    assert!(!store.state().has_post(1, "1-b"));
    assert_eq!(snapshot(layout.dir()), before);
    assert!(store.read_journal_lines(1, 10, 1 << 20).is_empty());
}

#[test]
fn a_batch_groups_lines_by_file_in_entry_order() {
    let ops = mixed_ops();
    let mut batch = FileLines::default();
    let mut scratch = Vec::new();
    let mut state = JournalFold::new(1);
    for (i, op) in ops.iter().enumerate() {
        let entry = Entry {
            seq: i as u64 + 1,
            epoch: 1,
            op: op.clone(),
        };
        state.apply(&entry);
        let timelines = timelines_of(&state, &entry);
        let follower_edge = follower_edge_of(&state, &entry);
        derived_lines(
            1,
            &entry,
            &timelines,
            follower_edge,
            &mut scratch,
            |f, l| {
                if l.is_empty() {
                    batch.touch(f)
                } else {
                    batch.push(f, l)
                }
            },
        );
    }
    let files: Vec<DerivedFile> = batch.files.iter().map(|(f, _)| *f).collect();
    let mut unique = files.clone();
    unique.sort_by_key(|f| f.packed());
    unique.dedup();
    assert_eq!(
        unique.len(),
        files.len(),
        "one buffer, so one write, per file"
    );
    assert_eq!(
        files[..4],
        [
            DerivedFile::GlobalClients,
            DerivedFile::Timeline(1),
            DerivedFile::Following(1),
            DerivedFile::Followers(1)
        ],
        "files in the order first seen"
    );
    let expected = serialized_views(&ops);
    let layout = Layout::from_dir(PathBuf::from("/d"));
    for (f, bytes) in &batch.files {
        let rel = layout.derived(*f);
        let rel = rel.strip_prefix("/d").unwrap().display().to_string();
        assert_eq!(bytes, expected.get(&rel).unwrap_or(&Vec::new()), "{rel}");
    }
    // The buffers are reused by the next batch.
    let n = batch.files.len();
    for (_, b) in std::mem::take(&mut batch.files) {
        batch.recycle(b);
    }
    batch.at.clear();
    assert_eq!(batch.spare.len(), n);
    batch.push(DerivedFile::Timeline(9), b"x");
    assert_eq!(batch.spare.len(), n - 1);
    assert_eq!(batch.files[0].1, b"x\n");
}
