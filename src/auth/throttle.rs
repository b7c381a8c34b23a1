//! Login throttling: failed logins are counted per e-mail address and per
//! client address within a sliding window; past the limit, every login for
//! that key is refused until enough failures have left the window.
//!
//! Kept in memory: it protects one process, and a restart forgets it (the
//! password hashes still make guessing slow).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits for [`LoginThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures allowed per e-mail address within the window.
    pub per_email: u32,
    /// Failures allowed per client address within the window.
    pub per_client: u32,
    /// Length of the window.
    pub window: Duration,
}

#[derive(Default)]
struct Failures {
    by_email: HashMap<String, VecDeque<Instant>>,
    by_client: HashMap<IpAddr, VecDeque<Instant>>,
}

/// Counts failed logins and decides when to refuse.
pub struct LoginThrottle {
    limits: Limits,
    failures: Mutex<Failures>,
}

impl LoginThrottle {
    /// A throttle with no failures recorded.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            failures: Mutex::new(Failures::default()),
        }
    }

    /// `Some(wait)` if a login for `email` from `client` must be refused now.
    pub fn check(&self, email: &str, client: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.lock();
        let by_email = failures
            .by_email
            .get_mut(email)
            .and_then(|times| self.blocked_for(times, self.limits.per_email, now));
        let by_client = client.and_then(|ip| {
            failures
                .by_client
                .get_mut(&ip)
                .and_then(|times| self.blocked_for(times, self.limits.per_client, now))
        });
        by_email.max(by_client)
    }

    /// Records a failed login.
    pub fn record_failure(&self, email: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        let window = self.limits.window;
        let mut failures = self.lock();
        let times = failures.by_email.entry(email.to_owned()).or_default();
        prune(times, window, now);
        times.push_back(now);
        if let Some(ip) = client {
            let times = failures.by_client.entry(ip).or_default();
            prune(times, window, now);
            times.push_back(now);
        }
    }

    /// Forgets the failures of `email` after a successful login.
    pub fn record_success(&self, email: &str) {
        self.lock().by_email.remove(email);
    }

    /// Drops keys whose failures have all left the window (bounds memory).
    pub fn sweep(&self) {
        let now = Instant::now();
        let window = self.limits.window;
        let mut failures = self.lock();
        failures.by_email.retain(|_, times| {
            prune(times, window, now);
            !times.is_empty()
        });
        failures.by_client.retain(|_, times| {
            prune(times, window, now);
            !times.is_empty()
        });
    }

    fn blocked_for(
        &self,
        times: &mut VecDeque<Instant>,
        limit: u32,
        now: Instant,
    ) -> Option<Duration> {
        prune(times, self.limits.window, now);
        let limit = limit as usize;
        if times.len() < limit {
            return None;
        }
        // The block lifts when all but limit-1 of the failures have expired.
        let lifting = times[times.len() - limit];
        Some((lifting + self.limits.window).saturating_duration_since(now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // A panic while holding the lock cannot leave the maps inconsistent.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn prune(times: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_email: 3,
            per_client: 5,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn blocks_an_email_after_its_limit_and_success_clears_it() {
        let t = throttle();
        for _ in 0..2 {
            t.record_failure("a@x.io", None);
            assert!(t.check("a@x.io", None).is_none());
        }
        t.record_failure("a@x.io", None);
        let wait = t.check("a@x.io", None).expect("blocked");
        assert!(wait > Duration::from_secs(58) && wait <= Duration::from_secs(60));
        assert!(t.check("b@x.io", None).is_none());
        t.record_success("a@x.io");
        assert!(t.check("a@x.io", None).is_none());
    }

    #[test]
    fn blocks_a_client_address_across_emails() {
        let t = throttle();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for i in 0..5 {
            t.record_failure(&format!("u{i}@x.io"), Some(ip));
        }
        assert!(t.check("new@x.io", Some(ip)).is_some());
        assert!(t
            .check("new@x.io", Some("127.0.0.10".parse().unwrap()))
            .is_none());
    }
}
