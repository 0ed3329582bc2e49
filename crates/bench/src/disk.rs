//! `tsn_bench disk`: the latency of the disk alone, as a primary uses it.
//!
//! Appends one line of about a journal entry's size to a file and
//! `fdatasync`s it, again and again at a fixed interval, and reports the
//! percentiles. A durable post waits for at least one such call (two, on
//! the primary and the secondary, overlapped): no acknowledgement latency
//! can be lower than this, so it is the floor that a p99 target is judged
//! against on the machine at hand.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::DiskArgs;
use crate::stats::{summarize, Summary};

/// Bytes of each appended line, newline included: about a journal entry
/// of a short post.
pub const LINE_BYTES: usize = 200;

/// Runs the probe in a new temp dir under `args.dir` and prints its figures.
pub fn disk(args: DiskArgs) -> anyhow::Result<()> {
    eprintln!(
        "tsn_bench disk: {} appends with fdatasync, one every {} ms, in {}",
        args.count,
        args.interval_ms,
        args.dir.display()
    );
    let summary = probe_in(
        &args.dir,
        args.count,
        Duration::from_millis(args.interval_ms),
    )?;
    println!(
        "fdatasync of a {LINE_BYTES}-byte append (ms): count {}, p50 {:.3}, p90 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3}",
        summary.count, summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.p999_ms, summary.max_ms
    );
    Ok(())
}

/// [`probe`] in a new temp dir under `dir`, removed after.
pub fn probe_in(dir: &Path, count: u32, interval: Duration) -> anyhow::Result<Summary> {
    let temp = tempfile::Builder::new()
        .prefix("tsn_bench-disk-")
        .tempdir_in(dir)
        .map_err(|e| anyhow::anyhow!("cannot make a temp dir in {}: {e}", dir.display()))?;
    probe(temp.path(), count, interval)
}

/// `count` timed append-and-fdatasync calls on a file in `dir`, starting
/// one every `interval` (a call that takes longer delays the next).
pub fn probe(dir: &Path, count: u32, interval: Duration) -> anyhow::Result<Summary> {
    let path = dir.join("probe.data");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut line = vec![b'x'; LINE_BYTES];
    line[LINE_BYTES - 1] = b'\n';
    let mut samples_us = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for i in 0..count {
        if let Some(wait) = (start + interval * i).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        samples_us.push(t.elapsed().as_micros() as u64);
    }
    Ok(summarize(samples_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_timed_and_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = probe(dir.path(), 5, Duration::from_millis(1)).unwrap();
        assert_eq!(s.count, 5);
        assert!(s.max_ms > 0.0 && s.p50_ms <= s.max_ms);
        let len = std::fs::metadata(dir.path().join("probe.data"))
            .unwrap()
            .len();
        assert_eq!(len, 5 * LINE_BYTES as u64);
    }
}
