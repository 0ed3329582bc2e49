//! How the timeline's two hot paths scale with the length of a timeline:
//! the last-20 read (`read_timeline`, what a Timeline stream sends first
//! and what `Posts.Read` answers) and the durable append of one post
//! (`Store::append`: journal line, fsync, then the timeline line). Both
//! must cost the same at 1,000 and at 1,000,000 posts: the read goes
//! backwards from the end of the file, the append only ever writes at it.
//!
//! Each size gets its own datastore, built once by writing the journal and
//! the timeline directly as JSON Lines (far faster than appending a
//! million entries one fsync at a time), then opened with `Store::open`,
//! which folds the whole journal into memory as a server does at start.
//!
//! Then the write path of a batch as a server runs it, per entry: the
//! primary's group commit without its fsync (`Store::stage`,
//! `write_staged`, `finish`: journal line, timeline lines) and a
//! secondary's `Store::append_lines` of the primary's lines as received
//! (parse, journal, fsync, timeline lines), with posts and deliveries to
//! several followers as the closed loop of `tsn_bench` makes them.
//!
//! `cargo bench -p tsn_datastore --bench timeline`; set
//! `TSN_BENCH_TIMELINE_MAX_POSTS` to stop at a smaller size.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tsn_datastore::record::{time_text, TimelineLine};
use tsn_datastore::store::read_timeline;
use tsn_datastore::{jsonl, Entry, Layout, Op, Post, Store};

/// Timeline lengths measured, in posts.
const SIZES_POSTS: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// The environment variable that lowers the largest size (for a quick run).
const MAX_POSTS_ENV: &str = "TSN_BENCH_TIMELINE_MAX_POSTS";
/// Posts shown when a stream opens.
const READ_LAST_POSTS: usize = 20;
/// The one user whose timeline is measured, and its cluster.
const USER: u32 = 1;
const CLUSTER: u32 = 1;
/// Bytes of text of every post: a typical short post.
const POST_TEXT_BYTES: usize = 80;
/// A fixed post time, so that every built line has the same length.
const POST_TS_MS: i64 = 1_700_000_000_000;
/// Samples per size: fewer for the fsyncing append, whose samples are slow.
const READ_SAMPLES: usize = 50;
const APPEND_SAMPLES: usize = 20;
const MEASUREMENT_TIME_MS: u64 = 4_000;
const WARM_UP_TIME_MS: u64 = 1_000;

fn post(n: u64) -> Post {
    Post {
        id: format!("{USER}-p{n}"),
        author: USER,
        text: format!("{n:0>width$}", width = POST_TEXT_BYTES),
        ts_ms: POST_TS_MS,
    }
}

/// Writes a consistent datastore of `posts` posts by [`USER`]: the journal
/// (the user's login at seq 1, then one post per seq) and the timeline file
/// that the journal derives. Returns the seq of the last entry.
fn build(layout: &Layout, posts: u64) -> std::io::Result<u64> {
    std::fs::create_dir_all(layout.client_dir(USER))?;
    let mut journal = BufWriter::new(File::create(layout.journal())?);
    let mut timeline = BufWriter::new(File::create(layout.timeline(USER))?);
    let login = Entry {
        seq: 1,
        epoch: 1,
        op: Op::User {
            user: USER,
            cluster: CLUSTER,
        },
    };
    writeln!(journal, "{}", login.to_line())?;
    let time = time_text(POST_TS_MS);
    for n in 1..=posts {
        let seq = n + 1;
        let p = post(n);
        let line = TimelineLine {
            seq,
            time: time.clone(),
            post: p.clone(),
        };
        serde_json::to_writer(&mut timeline, &line)?;
        timeline.write_all(b"\n")?;
        let entry = Entry {
            seq,
            epoch: 1,
            op: Op::Post(p),
        };
        writeln!(journal, "{}", entry.to_line())?;
    }
    journal.into_inner()?.sync_all()?;
    timeline.into_inner()?.sync_all()?;
    File::create(layout.following(USER))?;
    File::create(layout.followers(USER))?;
    Ok(posts + 1)
}

fn sizes() -> Vec<u64> {
    let max = std::env::var(MAX_POSTS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    SIZES_POSTS.into_iter().filter(|&n| n <= max).collect()
}

fn timeline(c: &mut Criterion) {
    let dir = match tempfile::Builder::new().prefix("tsn-bench-tl-").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temp dir: {e}"),
    };
    let mut read = c.benchmark_group("read_last_20");
    read.sample_size(READ_SAMPLES)
        .measurement_time(Duration::from_millis(MEASUREMENT_TIME_MS))
        .warm_up_time(Duration::from_millis(WARM_UP_TIME_MS))
        .throughput(Throughput::Elements(READ_LAST_POSTS as u64));
    let mut built = Vec::new();
    for posts in sizes() {
        let layout = Layout::new(&dir.path().join(posts.to_string()), CLUSTER, 1);
        let last_seq = match build(&layout, posts) {
            Ok(s) => s,
            Err(e) => panic!("building a timeline of {posts} posts: {e}"),
        };
        read.bench_with_input(BenchmarkId::from_parameter(posts), &layout, |b, layout| {
            b.iter(|| {
                let lines = read_timeline(layout, USER, READ_LAST_POSTS, u64::MAX);
                assert_eq!(lines.len(), READ_LAST_POSTS);
                black_box(lines)
            })
        });
        built.push((posts, layout, last_seq));
    }
    read.finish();

    let mut append = c.benchmark_group("append_post_fsync");
    append
        .sample_size(APPEND_SAMPLES)
        .measurement_time(Duration::from_millis(MEASUREMENT_TIME_MS))
        .warm_up_time(Duration::from_millis(WARM_UP_TIME_MS));
    for (posts, layout, last_seq) in &built {
        let mut store = match Store::open(layout.clone(), CLUSTER) {
            Ok(s) => s,
            Err(e) => panic!("opening the datastore of {posts} posts: {e}"),
        };
        assert_eq!(store.last_seq(), *last_seq, "the built journal is whole");
        let mut n = *posts;
        append.bench_function(BenchmarkId::from_parameter(posts), |b| {
            b.iter(|| {
                n += 1;
                let entry = Entry {
                    seq: n + 1,
                    epoch: 1,
                    op: Op::Post(post(n)),
                };
                if let Err(e) = store.append(std::slice::from_ref(&entry)) {
                    panic!("append: {e}");
                }
            })
        });
    }
    append.finish();

    // The derived-file write alone: one timeline line appended to the big
    // file, no fsync (the journal's fsync is what makes a post durable).
    let mut write = c.benchmark_group("append_timeline_line_no_fsync");
    write
        .sample_size(READ_SAMPLES)
        .measurement_time(Duration::from_millis(MEASUREMENT_TIME_MS))
        .warm_up_time(Duration::from_millis(WARM_UP_TIME_MS));
    for (posts, layout, _) in &built {
        let path = layout.timeline(USER);
        let mut file = match jsonl::open_append(&path) {
            Ok(f) => f,
            Err(e) => panic!("opening {}: {e}", path.display()),
        };
        let mut line = match serde_json::to_vec(&TimelineLine {
            seq: u64::MAX,
            time: time_text(POST_TS_MS),
            post: post(0),
        }) {
            Ok(l) => l,
            Err(e) => panic!("serializing a line: {e}"),
        };
        line.push(b'\n');
        write.bench_function(BenchmarkId::from_parameter(posts), |b| {
            b.iter(|| append_line(&mut file, &path, &line))
        });
    }
    write.finish();
}

/// Local users of the batch benchmark's cluster (a third of `tsn_bench`'s
/// 1,000 users).
const BATCH_USERS: u32 = 333;
/// Posts in one batch; each is followed by a delivery of another post.
const BATCH_POSTS: u64 = 32;
/// Recipients of each delivery (same-cluster followers of its author).
const BATCH_DELIVERY_RECIPIENTS: u32 = 5;
/// The primary's batches that the secondary receives, over and over.
const SECONDARY_BATCHES: usize = 1000;
/// Samples of the batch benchmarks: every batch grows the files on disk.
const BATCH_SAMPLES: usize = 20;

/// The ops of the `n`th batch: posts of local users, each with the
/// delivery of a remote user's post to some local followers.
fn batch_ops(n: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..BATCH_POSTS {
        let k = n * BATCH_POSTS + i;
        let author = 1 + (k % u64::from(BATCH_USERS)) as u32;
        ops.push(Op::Post(Post {
            id: format!("{author}-b{k}"),
            author,
            text: format!("{k:0>width$}", width = POST_TEXT_BYTES),
            ts_ms: POST_TS_MS + k as i64,
        }));
        let to = (0..BATCH_DELIVERY_RECIPIENTS)
            .map(|r| 1 + ((k * 7 + u64::from(r) * 61) % u64::from(BATCH_USERS)) as u32)
            .collect::<std::collections::BTreeSet<u32>>()
            .into_iter()
            .collect();
        ops.push(Op::Deliver {
            to,
            post: Post {
                id: format!("1000-b{k}"),
                author: 1000,
                text: format!("{k:0>width$}", width = POST_TEXT_BYTES),
                ts_ms: POST_TS_MS + k as i64,
            },
        });
    }
    ops
}

fn batches(c: &mut Criterion) {
    let dir = match tempfile::Builder::new()
        .prefix("tsn-bench-batch-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temp dir: {e}"),
    };
    let open = |server: u32| match Store::open(Layout::new(dir.path(), CLUSTER, server), CLUSTER) {
        Ok(s) => s,
        Err(e) => panic!("opening a datastore: {e}"),
    };
    let mut primary = open(1);
    let users: Vec<Op> = (1..=BATCH_USERS)
        .map(|user| Op::User {
            user,
            cluster: CLUSTER,
        })
        .collect();
    let entries = BATCH_POSTS * 2;
    let mut group = c.benchmark_group("write_batch");
    group
        .sample_size(BATCH_SAMPLES)
        .measurement_time(Duration::from_millis(MEASUREMENT_TIME_MS))
        .warm_up_time(Duration::from_millis(WARM_UP_TIME_MS))
        .throughput(Throughput::Elements(entries));
    let commit = |store: &mut Store, ops: Vec<Op>| {
        for op in ops {
            store.stage(op, 1);
        }
        let pending = match store.write_staged() {
            Ok(p) => p,
            Err(e) => panic!("write_staged: {e}"),
        };
        if let Err(e) = store.finish(&pending) {
            panic!("finish: {e}");
        }
    };
    commit(&mut primary, users);
    let mut n = 0;
    group.bench_function("primary_commit_no_fsync", |b| {
        b.iter(|| {
            n += 1;
            commit(&mut primary, batch_ops(n));
        })
    });

    // The secondary receives the primary's lines, batch by batch.
    let lines: Vec<Vec<u8>> = primary
        .read_journal_lines(
            0,
            BATCH_USERS as usize + SECONDARY_BATCHES * entries as usize,
            usize::MAX,
        )
        .into_iter()
        .map(|l| l.bytes.to_vec())
        .collect();
    let mut secondary = open(2);
    let (first, rest) = lines.split_at(BATCH_USERS as usize);
    append_received(&mut secondary, first.to_vec());
    let mut received = rest.chunks(entries as usize).cycle();
    let mut replica = 3;
    group.bench_function("secondary_append_fsync", |b| {
        b.iter(|| {
            let batch = received.next().unwrap_or_default().to_vec();
            if batch
                .first()
                .and_then(|l| Entry::from_line(l))
                .map(|e| e.seq)
                != Some(secondary.last_seq() + 1)
            {
                // Past the primary's end: start again on a fresh replica.
                secondary = open(replica);
                replica += 1;
                append_received(&mut secondary, first.to_vec());
                received = rest.chunks(entries as usize).cycle();
                return;
            }
            append_received(&mut secondary, batch);
        })
    });
    group.finish();
}

/// What a secondary does with an Append: parse each line, then store the
/// lines as they came.
fn append_received(store: &mut Store, lines: Vec<Vec<u8>>) {
    let entries: Vec<Entry> = lines
        .iter()
        .map(|l| match Entry::from_line(l) {
            Some(e) => e,
            None => panic!("a journal line does not parse"),
        })
        .collect();
    let lines: Vec<Arc<[u8]>> = lines.into_iter().map(Arc::from).collect();
    if let Err(e) = store.append_lines(&entries, &lines) {
        panic!("append_lines: {e}");
    }
}

fn append_line(file: &mut File, path: &Path, line: &[u8]) {
    if let Err(e) = jsonl::append(file, path, line) {
        panic!("append: {e}");
    }
}

criterion_group!(benches, timeline, batches);
criterion_main!(benches);
