//! The one poison-tolerant mutex lock every tsn crate uses.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, going on with the data if a thread panicked holding it:
/// every critical section in tsn leaves its data consistent before anything
/// in it can panic, so a poisoned lock holds consistent data.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let m = std::sync::Arc::new(Mutex::new(5));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 5);
    }
}
