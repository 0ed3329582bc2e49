//! What every tsn process shares about the cluster.
//!
//! * [`address`]: `host:port` and lists of them on the command line.
//! * [`auth`]: the deployment secret every internal RPC carries and checks.
//! * [`limits`]: timing defaults and limits, each with its unit in its name.
//! * [`coord`]: a client of the coordinator with timeouts and reconnection.
//! * [`heartbeat`]: the heartbeat loop of servers and sync services.
//! * [`net`]: the accepted connections of every gRPC server (`TCP_NODELAY`,
//!   limits, the TLS handshake).
//! * [`password`]: account passwords, kept only as Argon2id hashes.
//! * [`session`]: session tokens: made, hashed, carried as `authorization: Bearer`.
//! * [`tls`]: TLS on every listener and channel, reloaded from its files.
//! * [`watch`]: following files that change on disk.
//! * [`shutdown`]: the one shared signal that stops a process gracefully.
//! * [`sync`]: the one poison-tolerant mutex lock.
//! * [`home_cluster`]: which cluster serves a client id.

pub mod address;
pub mod admin;
pub mod auth;
pub mod clock;
pub mod coord;
pub mod heartbeat;
pub mod limits;
pub mod net;
pub mod password;
pub mod refusal;
pub mod retry;
pub mod session;
pub mod shutdown;
pub mod sync;
pub mod tls;
pub mod watch;

pub use address::{parse_address_list, parse_host_port};

/// The cluster that serves `user` among `clusters` clusters:
/// `((user - 1) mod clusters) + 1`. Client ids start at 1.
pub fn home_cluster(user: u32, clusters: u32) -> u32 {
    assert!(user >= 1 && clusters >= 1);
    (user - 1) % clusters + 1
}

/// Parses a client id: a positive integer that fits the classic `int32`.
pub fn parse_user_id(text: &str) -> Option<u32> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u32 = t.parse().ok()?;
    (1..=i32::MAX as u32).contains(&id).then_some(id)
}

/// Logs to stderr, at the level of `RUST_LOG` (default `info`).
pub fn init_logging() {
    init_logging_with_default("info");
}

/// Logs to stderr, at the level of `RUST_LOG`, else `default_level`.
pub fn init_logging_with_default(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_cluster_round_robins_from_one() {
        let got: Vec<u32> = (1..=7).map(|u| home_cluster(u, 3)).collect();
        assert_eq!(got, vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(home_cluster(5, 1), 1);
    }

    #[test]
    fn user_ids_are_positive_int32() {
        assert_eq!(parse_user_id("42"), Some(42));
        assert_eq!(parse_user_id(" 7 "), Some(7));
        for bad in [
            "",
            "0",
            "-1",
            "abc",
            "1.5",
            "2147483648",
            "+3",
            "99999999999999",
        ] {
            assert_eq!(parse_user_id(bad), None, "{bad:?}");
        }
        assert_eq!(parse_user_id("2147483647"), Some(i32::MAX as u32));
    }
}
