//! A primary whose disk is full refuses writes with `RESOURCE_EXHAUSTED`
//! ("disk full …") and keeps serving reads, instead of exiting; once space
//! returns it accepts writes again, and every acknowledged post is there.
//!
//! Needs root (it mounts a small tmpfs for the primary's datastore inside
//! the test's own temp dir); skipped with a message otherwise.
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;
use tsn_harness::deployment::{Config, Deployment};

use common::{ms, post};

/// Size of the primary's tmpfs: room for the datastore of a few posts.
const TMPFS_SIZE_BYTES: u64 = 4 * 1024 * 1024;
/// How long the primary may take to accept writes again once space returns.
const RESUME_WITHIN_MS: u64 = 10_000;
const USER: u32 = 1;
/// Most posts the full disk may still take (into its files' last pages).
const POSTS_UNTIL_REFUSED_MAX: usize = 500;

/// Unmounts the tmpfs when dropped, even when the test panics.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE_BYTES}")])
            .arg("tmpfs")
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs on {}", dir.display());
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Lazy: a process of the deployment may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file of zeros into `dir` until the disk refuses.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return path;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_and_keeps_reads() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut config = Config::new(1, 0, common::Q_MS);
    config.root = Some(root.path().to_path_buf());
    let dir = tsn_datastore::Layout::new(&root.path().join("datastore"), 1, 1)
        .dir()
        .to_path_buf();
    let _mounted = Mounted::tmpfs(&dir);
    let d = Deployment::start_with(config).await;
    let api = d.api();
    assert_eq!(d.primary_of(1).await.0, 1, "server 1 is the first primary");
    api.login(USER).await.unwrap();
    post(&api, USER, "1-before", "before").await;

    let filler = fill(&dir);
    // The files' last pages may still hold a few lines: post until refused.
    let mut acknowledged = vec!["1-before".to_string()];
    let refused = loop {
        let id = format!("1-full-{}", acknowledged.len());
        match api.post(USER, &id, "full").await {
            Ok(_) if acknowledged.len() < POSTS_UNTIL_REFUSED_MAX => acknowledged.push(id),
            Ok(_) => panic!("{POSTS_UNTIL_REFUSED_MAX} posts accepted on a full disk"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("disk full"), "{refused}");
    // Final for every client: no silent retries against a full disk.
    assert!(
        tsn_cluster::refusal::is_final_refusal(&refused) && !tsn_client::is_retryable(&refused),
        "the disk-full refusal is not marked final: {refused:?}"
    );
    // Reads still work, and the primary is still the primary.
    let texts: Vec<String> = d.timeline(USER).await.into_iter().map(|p| p.text).collect();
    assert!(texts.contains(&"before".to_string()), "{texts:?}");
    assert_eq!(d.primary_of(1).await.0, 1);

    std::fs::remove_file(&filler).unwrap();
    let until = Instant::now() + ms(RESUME_WITHIN_MS);
    loop {
        match api.post(USER, "1-after", "after").await {
            Ok(_) => break acknowledged.push("1-after".to_string()),
            Err(s) if s.code() == Code::ResourceExhausted && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("a post once space returned: {s}"),
        }
    }
    d.wait_timeline_has(USER, "after").await;
    let texts: Vec<String> = d.timeline(USER).await.into_iter().map(|p| p.text).collect();
    assert!(texts.contains(&"before".to_string()), "{texts:?}");
    // Each acknowledged post once, in the journal too.
    let journal = d.journal(1, 1);
    for id in &acknowledged {
        let n = journal
            .iter()
            .filter(|e| matches!(&e.op, tsn_datastore::Op::Post(p) if &p.id == id))
            .count();
        assert_eq!(n, 1, "{id} in the journal");
    }
}

/// How many times `id` is posted in `journal`.
fn count(journal: &[tsn_datastore::Entry], id: &str) -> usize {
    journal
        .iter()
        .filter(|e| matches!(&e.op, tsn_datastore::Op::Post(p) if p.id == id))
        .count()
}

/// A secondary whose disk is full leaves the in-sync set without exiting
/// (the primary keeps acknowledging posts) and rejoins once space returns,
/// with every acknowledged post once.
#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_with_a_full_disk_leaves_and_rejoins_the_in_sync_set() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut config = Config::new(1, 1, common::Q_MS);
    config.root = Some(root.path().to_path_buf());
    let dir = tsn_datastore::Layout::new(&root.path().join("datastore"), 1, 2)
        .dir()
        .to_path_buf();
    let _mounted = Mounted::tmpfs(&dir);
    let mut d = Deployment::start_with(config).await;
    let api = d.api();
    assert_eq!(d.primary_of(1).await.0, 1, "server 1 is the first primary");
    common::wait_in_sync(&d, 1, 2).await;
    api.login(USER).await.unwrap();
    post(&api, USER, "1-before", "before").await;

    let filler = fill(&dir);
    let mut acknowledged = vec!["1-before".to_string()];
    let until = Instant::now() + ms(RESUME_WITHIN_MS);
    loop {
        let id = format!("1-full-{}", acknowledged.len());
        if api.post(USER, &id, "full").await.is_ok() {
            acknowledged.push(id);
        }
        let views = common::views(&api).await;
        if views
            .iter()
            .any(|v| v.cluster_id == 1 && !v.in_sync.contains(&2))
        {
            break;
        }
        assert!(
            Instant::now() < until && acknowledged.len() < POSTS_UNTIL_REFUSED_MAX,
            "the secondary never left the in-sync set: {views:?}"
        );
    }
    assert!(d.server(1, 2).is_running(), "the secondary exited");
    let log = std::fs::read_to_string(d.logs_dir().join("c1-server2.stderr.log")).unwrap();
    assert!(
        log.contains("the disk is full"),
        "the secondary's log: {log}"
    );
    post(&api, USER, "1-during", "during").await;
    acknowledged.push("1-during".to_string());

    std::fs::remove_file(&filler).unwrap();
    common::wait_in_sync(&d, 1, 2).await;
    post(&api, USER, "1-after", "after").await;
    acknowledged.push("1-after".to_string());
    // Acknowledged with the secondary in sync: it holds everything before.
    let primary = d.journal(1, 1);
    let secondary = d.journal(1, 2);
    for id in &acknowledged {
        assert_eq!(count(&primary, id), 1, "{id} in the primary's journal");
        assert_eq!(count(&secondary, id), 1, "{id} in the secondary's journal");
    }
}
