//! The progress bar of a load phase: elapsed seconds and the current
//! throughput (acknowledgements over the last second). It draws on stderr
//! and hides itself when stderr is not a terminal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use crate::limits::{PROGRESS_RATE_SPAN_MS, PROGRESS_TICK_MS};
use crate::record::Records;

const TEMPLATE: &str = "{prefix:>12} [{bar:30}] {pos:>3}/{len}s {msg}";

pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// A bar for a phase that started at `start` and lasts `total`; `unit`
    /// names what is counted ("posts", "calls").
    pub fn start(
        label: &str,
        unit: &'static str,
        records: Arc<Records>,
        start: Instant,
        total: Duration,
    ) -> Progress {
        let bar = ProgressBar::new(total.as_secs().max(1));
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        let ticking = bar.clone();
        let task = tokio::spawn(async move {
            let mut seen: VecDeque<(Instant, u64)> = VecDeque::new();
            let span = Duration::from_millis(PROGRESS_RATE_SPAN_MS);
            let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_TICK_MS));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let count = records.count();
                seen.push_back((now, count));
                while seen.len() > 1 && seen.front().is_some_and(|(t, _)| now - *t > span) {
                    seen.pop_front();
                }
                let rate = match (seen.front(), seen.back()) {
                    (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => {
                        (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
                    }
                    _ => 0.0,
                };
                ticking.set_position(now.saturating_duration_since(start).as_secs());
                ticking.set_message(format!("{rate:>8.0} {unit}/s  {count} acknowledged"));
            }
        });
        Progress { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
