//! Attempt limits for the sign-in and token endpoints: at most N attempts per minute per
//! client address and per account name (a fixed one-minute window each). Account lockout
//! (in the core) slows guessing of one password; these limits slow spraying many.

use carevault_crypto::{TokenHash, hash_token};
use std::collections::HashMap;
use std::sync::Mutex;

/// Keys with more than this many windows are forgotten wholesale (memory bound).
const MAX_KEYS: usize = 100_000;

pub(crate) struct Limiter {
    per_minute: u32,
    windows: Mutex<HashMap<TokenHash, (i64, u32)>>,
}

impl Limiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt under `key` at `now_millis`; `Some(seconds to wait)` when over the limit.
    pub(crate) fn attempt(&self, key: &str, now_millis: i64) -> Option<i64> {
        let minute = now_millis.div_euclid(60_000);
        let Ok(mut map) = self.windows.lock() else {
            return None;
        };
        if map.len() >= MAX_KEYS {
            map.clear();
        }
        // Keys are hashed: account names are not kept in memory as text.
        let entry = map.entry(hash_token(key)).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        (entry.1 > self.per_minute).then(|| 60 - now_millis.rem_euclid(60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_fills_and_the_next_minute_starts_fresh() {
        let l = Limiter::new(3);
        for _ in 0..3 {
            assert_eq!(l.attempt("ip:1", 1_000), None);
        }
        assert_eq!(l.attempt("ip:1", 2_000), Some(58));
        assert_eq!(l.attempt("ip:2", 2_000), None, "keys are separate");
        assert_eq!(l.attempt("ip:1", 61_000), None);
    }
}
