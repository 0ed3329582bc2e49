//! One shared signal that tells every task of a process to stop.
//!
//! `Ctrl-C` or `SIGTERM` fires it; tasks hold a [`Shutdown`] and select on
//! [`Shutdown::wait`] next to their work.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger { tx }, Shutdown { rx })
    }

    /// A signal fired by Ctrl-C or SIGTERM.
    pub fn on_signals() -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("installing a SIGTERM handler");
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutting down");
            trigger.fire();
        });
        shutdown
    }

    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the signal has fired.
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|fired| *fired).await;
    }
}
