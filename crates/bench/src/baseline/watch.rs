//! The Redis baseline's watched followers: one pub/sub connection per
//! follower, subscribed to its channel, noting when each of this run's
//! posts arrives, as the tsn run's Timeline streams do. A follower counts
//! as live (in the `live` set the post script reads) only once its
//! subscription is confirmed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use redis::Client;
use tokio::task::JoinHandle;
use tsn_cluster::shutdown::{Shutdown, Trigger};
use tsn_cluster::sync::lock;

use crate::baseline::posts::{channel, connect, id_of, LIVE_KEY};
use crate::delivery::Arrival;
use crate::ids::parse_post_id;
use crate::limits::ARRIVALS_MAX_RECORDS;
use crate::record::Clock;

#[derive(Default)]
struct Sink {
    arrivals: Mutex<Vec<Arrival>>,
    dropped: AtomicU64,
}

/// The live subscriptions of the watched followers.
pub struct Subscribers {
    sink: Arc<Sink>,
    stop: Trigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscribers {
    /// Subscribes each of `followers` on its own connection and marks it
    /// live; returns once all are.
    pub async fn start(
        client: &Client,
        followers: &[u32],
        run: &str,
        clock: Clock,
    ) -> anyhow::Result<Subscribers> {
        let sink = Arc::new(Sink::default());
        let (stop, stopped) = Shutdown::new();
        let mut tasks = Vec::with_capacity(followers.len());
        let mut con = connect(client).await?;
        for &user in followers {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel(user)).await?;
            redis::cmd("SADD")
                .arg(LIVE_KEY)
                .arg(user)
                .query_async::<()>(&mut con)
                .await?;
            let sink = sink.clone();
            let run = run.to_string();
            let mut stop = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let mut messages = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        _ = stop.wait() => return,
                        msg = messages.next() => msg,
                    };
                    let Some(msg) = msg else { return };
                    let at_us = clock.now_us();
                    let Ok(text) = std::str::from_utf8(msg.get_payload_bytes()) else {
                        continue;
                    };
                    let Some((_, n)) = id_of(text).and_then(|id| parse_post_id(&run, id)) else {
                        continue;
                    };
                    let mut a = lock(&sink.arrivals);
                    if a.len() < ARRIVALS_MAX_RECORDS {
                        a.push(Arrival {
                            n,
                            follower: user,
                            at_us,
                        });
                    } else {
                        sink.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Subscribers { sink, stop, tasks })
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.sink.arrivals).clone()
    }

    pub fn dropped(&self) -> u64 {
        self.sink.dropped.load(Ordering::Relaxed)
    }

    /// Closes every subscription.
    pub async fn stop(self) {
        self.stop.fire();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
