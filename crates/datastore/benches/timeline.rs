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
//! `cargo bench -p tsn_datastore --bench timeline`; set
//! `TSN_BENCH_TIMELINE_MAX_POSTS` to stop at a smaller size.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::Path;
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

fn append_line(file: &mut File, path: &Path, line: &[u8]) {
    if let Err(e) = jsonl::append(file, path, line) {
        panic!("append: {e}");
    }
}

criterion_group!(benches, timeline);
criterion_main!(benches);
