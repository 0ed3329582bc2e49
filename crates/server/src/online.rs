//! Which interactive session of each account is online: one at a time.
//! Pure, with the clock passed in.
//!
//! An interactive client attaches when it starts and again every
//! `ATTACH_INTERVAL_MS` (the client's constant) with a random session id
//! that it keeps across reconnections. A second session of the account is
//! refused while the first attached within [`ONLINE_TIMEOUT_MS`], unless it
//! takes over; the one taken over learns it at its next attach. This lives
//! in the primary's memory only: after a failover or a restart every
//! session attaches afresh, so a reconnecting client is never refused as a
//! second login (for one timeout after a failover, neither is another).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a session counts as online after it last attached, in ms.
pub const ONLINE_TIMEOUT_MS: u64 = 15_000;
/// Most accounts tracked; past this, the sessions no longer online are
/// forgotten first.
pub const ONLINE_ACCOUNTS_MAX: usize = 100_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Attach {
    /// Online now.
    Ok,
    /// Another session is online.
    Elsewhere,
    /// This session was taken over by another.
    TakenOver,
}

#[derive(Default)]
pub struct Online {
    /// User -> (online session id, when it last attached).
    sessions: HashMap<u32, (String, Instant)>,
    /// User -> session ids that were taken over (the latest few).
    taken_over: HashMap<u32, Vec<String>>,
}

/// Session ids remembered per user as taken over.
const TAKEN_OVER_KEPT: usize = 4;

impl Online {
    pub fn attach(&mut self, user: u32, session: &str, take_over: bool, now: Instant) -> Attach {
        let timeout = Duration::from_millis(ONLINE_TIMEOUT_MS);
        if self
            .taken_over
            .get(&user)
            .is_some_and(|ids| ids.iter().any(|s| s == session))
        {
            return Attach::TakenOver;
        }
        if let Some((current, at)) = self.sessions.get(&user) {
            let alive = now.saturating_duration_since(*at) < timeout;
            if current != session && alive {
                if !take_over {
                    return Attach::Elsewhere;
                }
                let ended = self.taken_over.entry(user).or_default();
                ended.push(current.clone());
                if ended.len() > TAKEN_OVER_KEPT {
                    ended.remove(0);
                }
            }
        }
        if self.sessions.len() >= ONLINE_ACCOUNTS_MAX && !self.sessions.contains_key(&user) {
            self.sessions
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < timeout);
        }
        self.sessions.insert(user, (session.to_string(), now));
        Attach::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_interactive_session_at_a_time() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut online = Online::default();
        assert_eq!(online.attach(4, "a", false, at(0)), Attach::Ok);
        // The same session again (a reconnection): fine.
        assert_eq!(online.attach(4, "a", false, at(100)), Attach::Ok);
        assert_eq!(online.attach(4, "b", false, at(200)), Attach::Elsewhere);
        // Another account is not held up.
        assert_eq!(online.attach(5, "b", false, at(200)), Attach::Ok);
        // Taking over ends the first; it learns so at its next attach.
        assert_eq!(online.attach(4, "b", true, at(300)), Attach::Ok);
        assert_eq!(online.attach(4, "a", false, at(400)), Attach::TakenOver);
        assert_eq!(online.attach(4, "a", true, at(400)), Attach::TakenOver);
        // A session silent past the timeout no longer counts.
        let later = 300 + ONLINE_TIMEOUT_MS;
        assert_eq!(online.attach(4, "c", false, at(later)), Attach::Ok);
    }
}
