//! Free TCP ports for the processes a test starts.
//!
//! The kernel picks a free port when asked to bind port 0; the harness takes
//! it and closes the socket so that the process can bind it. Another process
//! may take the port in between: [`is_address_in_use`] recognises the
//! failure so that the start can be retried on another port. Tests of one
//! binary run in parallel, so ports handed out once are never handed out
//! again by this process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// How many ports the kernel is asked for before giving up on finding one
/// not yet handed out by this process.
const PORT_TRIES_MAX: u32 = 1_000;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has
/// not handed out before.
pub fn free_port() -> u16 {
    for _ in 0..PORT_TRIES_MAX {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"),
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => panic!("cannot read the address of a bound socket: {e}"),
        };
        drop(listener);
        // A poisoned lock only means another test panicked while holding
        // it; the set itself is still valid.
        let mut ports = handed_out().lock().unwrap_or_else(|p| p.into_inner());
        if ports.insert(port) {
            return port;
        }
    }
    panic!("no free port found in {PORT_TRIES_MAX} tries");
}

/// Whether a process's error output says it could not bind its port.
pub fn is_address_in_use(output: &str) -> bool {
    let lower = output.to_ascii_lowercase();
    lower.contains("address already in use")
        || lower.contains("address in use")
        || lower.contains("addrinuse")
        || lower.contains("os error 98")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
        assert!(!ports.contains(&0));
    }

    #[test]
    fn a_handed_out_port_can_be_bound() {
        let port = free_port();
        let bound = TcpListener::bind(("127.0.0.1", port));
        assert!(bound.is_ok(), "port {port}: {bound:?}");
    }

    #[test]
    fn recognises_bind_failures() {
        assert!(is_address_in_use(
            "Error: Address already in use (os error 98)"
        ));
        assert!(is_address_in_use("error: bind: AddrInUse"));
        assert!(!is_address_in_use("error: connection refused"));
    }
}
