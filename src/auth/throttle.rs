//! Login throttling: failed logins are counted per e-mail address and per
//! client address within a sliding window; past the limit, every login for
//! that key is refused until enough failures have left the window.
//!
//! A login *reserves* its attempt before the password is checked
//! ([`LoginThrottle::reserve`]): the check and the count happen under one
//! lock, so concurrent logins cannot all pass a check made before any of
//! them failed. The attempt counts as a failure from then on, unless the
//! login succeeds ([`Reservation::succeeded`]): then the e-mail address's
//! count is cleared and the attempt is taken back from the client's count.
//! An attempt never resolved (a `503`, a dropped request) stays a failure.
//!
//! Memory is bounded whatever the traffic: each key keeps at most `limit`
//! timestamps (more cannot matter), e-mail addresses are kept as fixed-size
//! keyed hashes, client addresses as fixed-size keys (IPv6 per /64), and
//! each map holds at most [`Limits::max_keys`] keys. A full map first drops
//! expired keys, then the least telling ones: fewest failures in the
//! window, then the longest since their last failure. So a flood of new
//! addresses cannot push out an address that is being guessed at or is
//! blocked, nor fill the map so that nobody can log in.
//!
//! Kept in memory: it protects one process, and a restart forgets it (the
//! password hashes still make guessing slow).

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
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
    /// Most e-mail addresses, and most client addresses, tracked at once.
    pub max_keys: usize,
}

/// The key a client address is counted under: an IPv4 address, or the /64
/// network of an IPv6 address (one host usually has a whole /64, so
/// counting single IPv6 addresses would give it billions of limits).
/// IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Network(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => ClientKey::V6Network((v6.to_bits() >> 64) as u64),
        }
    }
}

/// An e-mail address as a 128-bit keyed hash: a fixed size whatever the
/// address, and no address kept in memory. The keys are random per process,
/// so nobody can search for two addresses that share a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EmailKey([u64; 2]);

/// Failures of one key within the window: at most `limit` timestamps (in
/// seconds since the throttle started), oldest first.
#[derive(Debug, Default)]
struct Failures(Vec<u32>);

impl Failures {
    /// Forgets failures that have left the window.
    fn prune(&mut self, now: u32, window: u32) {
        let expired = self
            .0
            .iter()
            .take_while(|&&at| now.saturating_sub(at) >= window)
            .count();
        self.0.drain(..expired);
    }

    /// Eviction order: fewer failures first, then older last failure first.
    fn rank(&self) -> (usize, u32) {
        (self.0.len(), self.0.last().copied().unwrap_or(0))
    }
}

/// The failures of one kind of key (e-mail or client), bounded in keys.
#[derive(Debug)]
struct Counter<K> {
    by_key: HashMap<K, Failures>,
    limit: usize,
    max_keys: usize,
}

impl<K: Eq + Hash + Copy> Counter<K> {
    fn new(limit: u32, max_keys: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            limit: (limit as usize).max(1),
            max_keys: max_keys.max(1),
        }
    }

    /// Seconds until `key` may try again, if it is at its limit now.
    fn blocked_for(&mut self, key: &K, now: u32, window: u32) -> Option<u32> {
        let failures = self.by_key.get_mut(key)?;
        failures.prune(now, window);
        if failures.0.len() < self.limit {
            return None;
        }
        // The block lifts when the oldest kept failure leaves the window.
        let oldest = failures.0[failures.0.len() - self.limit];
        Some((oldest + window).saturating_sub(now).max(1))
    }

    /// Counts a failure of `key` at `now`.
    fn record(&mut self, key: K, now: u32, window: u32) {
        if !self.by_key.contains_key(&key) && self.by_key.len() >= self.max_keys {
            self.make_room(now, window);
        }
        let limit = self.limit;
        let failures = match self.by_key.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Failures(Vec::with_capacity(1))),
        };
        failures.prune(now, window);
        if failures.0.len() >= limit {
            // Only the newest `limit` failures can ever matter.
            failures.0.remove(0);
        }
        if failures.0.len() == failures.0.capacity() {
            // Grow by doubling, but never past the limit.
            let more = failures.0.len().clamp(1, limit - failures.0.len());
            failures.0.reserve_exact(more);
        }
        failures.0.push(now);
    }

    /// Takes back one failure recorded at `at` (a login that succeeded).
    fn take_back(&mut self, key: &K, at: u32) {
        if let Some(failures) = self.by_key.get_mut(key) {
            if let Some(position) = failures.0.iter().rposition(|&t| t == at) {
                failures.0.remove(position);
            }
            if failures.0.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    fn forget(&mut self, key: &K) {
        self.by_key.remove(key);
    }

    /// Frees at least an eighth of the map: expired keys first, then the
    /// least telling ones (see the module documentation). One pass over
    /// the map per eighth of it, so inserting stays cheap on average.
    fn make_room(&mut self, now: u32, window: u32) {
        self.sweep(now, window);
        let target = self.max_keys - (self.max_keys / 8).max(1);
        if self.by_key.len() <= target {
            return;
        }
        let excess = self.by_key.len() - target;
        let mut ranks: Vec<(usize, u32)> = self.by_key.values().map(Failures::rank).collect();
        let (_, &mut threshold, _) = ranks.select_nth_unstable(excess - 1);
        let below = ranks.iter().filter(|&&rank| rank < threshold).count();
        let mut ties = excess - below;
        self.by_key.retain(|_, failures| {
            let rank = failures.rank();
            if rank < threshold {
                false
            } else if rank == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Drops keys whose failures have all left the window.
    fn sweep(&mut self, now: u32, window: u32) {
        self.by_key.retain(|_, failures| {
            failures.prune(now, window);
            !failures.0.is_empty()
        });
        if self.by_key.capacity() > 4 * self.by_key.len().max(16) {
            self.by_key.shrink_to_fit();
        }
    }
}

#[derive(Debug)]
struct Counts {
    emails: Counter<EmailKey>,
    clients: Counter<ClientKey>,
}

/// How many keys the throttle holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// E-mail addresses with failures in the window.
    pub emails: usize,
    /// Client addresses with failures in the window.
    pub clients: usize,
}

/// Counts failed logins and decides when to refuse.
pub struct LoginThrottle {
    window_secs: u32,
    started: Instant,
    email_hashers: [RandomState; 2],
    counts: Mutex<Counts>,
}

/// A login attempt counted against its e-mail address and client, until
/// the login succeeds. Dropping it (or [`Reservation::failed`]) leaves it
/// counted as a failure.
#[must_use = "an attempt counts as failed unless `succeeded` is called"]
pub struct Reservation<'a> {
    throttle: &'a LoginThrottle,
    email: EmailKey,
    client: Option<ClientKey>,
    at: u32,
}

impl Reservation<'_> {
    /// The login succeeded: clears the e-mail address's count and takes
    /// this attempt back from the client's (a success is no failure, but it
    /// does not clear failures the client made against other addresses).
    pub fn succeeded(self) {
        let mut counts = self.throttle.lock();
        counts.emails.forget(&self.email);
        if let Some(client) = &self.client {
            counts.clients.take_back(client, self.at);
        }
    }

    /// The login failed: the attempt stays counted.
    pub fn failed(self) {}
}

impl LoginThrottle {
    /// A throttle with no failures recorded.
    pub fn new(limits: Limits) -> Self {
        Self {
            window_secs: u32::try_from(limits.window.as_secs())
                .unwrap_or(u32::MAX)
                .max(1),
            started: Instant::now(),
            email_hashers: [RandomState::new(), RandomState::new()],
            counts: Mutex::new(Counts {
                emails: Counter::new(limits.per_email, limits.max_keys),
                clients: Counter::new(limits.per_client, limits.max_keys),
            }),
        }
    }

    /// Counts a login attempt for `email` (lower-cased) from `client`, or,
    /// if either is at its limit, says how long to wait. The attempt is a
    /// failure unless [`Reservation::succeeded`] is called.
    pub fn reserve(
        &self,
        email: &str,
        client: Option<ClientKey>,
    ) -> Result<Reservation<'_>, Duration> {
        self.reserve_at(email, client, self.now())
    }

    fn reserve_at(
        &self,
        email: &str,
        client: Option<ClientKey>,
        now: u32,
    ) -> Result<Reservation<'_>, Duration> {
        let email = self.email_key(email);
        let window = self.window_secs;
        let mut counts = self.lock();
        let by_email = counts.emails.blocked_for(&email, now, window);
        let by_client = client.and_then(|c| counts.clients.blocked_for(&c, now, window));
        if let Some(wait) = by_email.max(by_client) {
            return Err(Duration::from_secs(wait.into()));
        }
        counts.emails.record(email, now, window);
        if let Some(client) = client {
            counts.clients.record(client, now, window);
        }
        Ok(Reservation {
            throttle: self,
            email,
            client,
            at: now,
        })
    }

    /// Drops keys whose failures have all left the window.
    pub fn sweep(&self) {
        let now = self.now();
        let window = self.window_secs;
        let mut counts = self.lock();
        counts.emails.sweep(now, window);
        counts.clients.sweep(now, window);
    }

    /// How many keys are held now (never more than [`Limits::max_keys`] each).
    pub fn tracked(&self) -> Tracked {
        let counts = self.lock();
        Tracked {
            emails: counts.emails.by_key.len(),
            clients: counts.clients.by_key.len(),
        }
    }

    /// Whole seconds since the throttle started. A failure leaves the
    /// window when this has advanced by the window's length.
    fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn email_key(&self, email: &str) -> EmailKey {
        let [a, b] = &self.email_hashers;
        EmailKey([a.hash_one(email), b.hash_one(email)])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding the lock cannot leave the maps inconsistent.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u32 = 60;

    fn throttle(max_keys: usize) -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_email: 3,
            per_client: 5,
            window: Duration::from_secs(WINDOW.into()),
            max_keys,
        })
    }

    fn client(ip: &str) -> Option<ClientKey> {
        Some(ClientKey::from(ip.parse::<IpAddr>().unwrap()))
    }

    #[test]
    fn attempts_count_when_reserved_so_concurrent_ones_cannot_overrun_the_limit() {
        let t = throttle(100);
        // Three logins in flight at once, none resolved yet.
        let in_flight: Vec<_> = (0..3).map(|_| t.reserve("a@x.io", None).unwrap()).collect();
        let wait = t
            .reserve("a@x.io", None)
            .err()
            .expect("the fourth is refused");
        assert_eq!(wait, Duration::from_secs(WINDOW.into()));
        for reservation in in_flight {
            reservation.failed();
        }
        assert!(t.reserve("a@x.io", None).is_err());
        assert!(
            t.reserve("b@x.io", None).is_ok(),
            "other addresses are free"
        );
    }

    #[test]
    fn success_clears_the_email_count_and_is_no_failure_of_the_client() {
        let t = throttle(100);
        let ip = client("192.0.2.1");
        t.reserve("a@x.io", ip).unwrap().failed();
        t.reserve("a@x.io", ip).unwrap().failed();
        t.reserve("a@x.io", ip).unwrap().succeeded();
        // The e-mail starts again from zero; the client has 2 failures.
        for _ in 0..3 {
            t.reserve("a@x.io", ip).unwrap().failed();
        }
        assert!(t.reserve("a@x.io", None).is_err());
        // 5 client failures now: the success was not one of them.
        assert!(t.reserve("c@x.io", ip).is_err());
    }

    #[test]
    fn a_dropped_reservation_counts_as_a_failure() {
        let t = throttle(100);
        for _ in 0..3 {
            drop(t.reserve("a@x.io", None).unwrap());
        }
        assert!(t.reserve("a@x.io", None).is_err());
    }

    #[test]
    fn a_client_is_blocked_across_emails_and_others_are_not() {
        let t = throttle(100);
        for i in 0..5 {
            t.reserve(&format!("u{i}@x.io"), client("127.0.0.9"))
                .unwrap()
                .failed();
        }
        assert!(t.reserve("new@x.io", client("127.0.0.9")).is_err());
        assert!(t.reserve("new@x.io", client("127.0.0.10")).is_ok());
    }

    #[test]
    fn failures_leave_the_window_one_by_one() {
        let t = throttle(100);
        for at in [0, 10, 20] {
            t.reserve_at("a@x.io", None, at).unwrap().failed();
        }
        let wait = t.reserve_at("a@x.io", None, 30).err().unwrap();
        assert_eq!(wait, Duration::from_secs(30), "until the first one expires");
        assert!(t.reserve_at("a@x.io", None, WINDOW - 1).is_err());
        t.reserve_at("a@x.io", None, WINDOW).unwrap().failed();
        assert!(t.reserve_at("a@x.io", None, WINDOW + 9).is_err());
        assert!(t.reserve_at("a@x.io", None, WINDOW + 10).is_ok());
    }

    #[test]
    fn each_map_stays_within_its_key_limit() {
        let t = throttle(64);
        for i in 0..5_000 {
            let email = format!("{}{i}@example.com", "x".repeat(200));
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            drop(t.reserve(&email, Some(ClientKey::from(ip))));
            let tracked = t.tracked();
            assert!(tracked.emails <= 64 && tracked.clients <= 64, "{tracked:?}");
        }
        assert!(t.tracked().emails > 0);
    }

    #[test]
    fn a_flood_of_new_addresses_does_not_evict_a_blocked_one() {
        let t = throttle(64);
        for _ in 0..3 {
            t.reserve_at("victim@x.io", None, 0).unwrap().failed();
        }
        // Newer failures, but one per address.
        for i in 0..10_000 {
            t.reserve_at(&format!("flood{i}@x.io"), None, 1)
                .unwrap()
                .failed();
        }
        assert!(
            t.reserve_at("victim@x.io", None, 2).is_err(),
            "still blocked"
        );
        assert!(
            t.reserve_at("fresh@x.io", None, 2).is_ok(),
            "others may log in"
        );
    }

    #[test]
    fn a_full_map_drops_expired_keys_first() {
        let t = throttle(8);
        for i in 0..8 {
            // Two failures each, so they would outrank a one-failure key.
            for _ in 0..2 {
                t.reserve_at(&format!("old{i}@x.io"), None, 0)
                    .unwrap()
                    .failed();
            }
        }
        t.reserve_at("new@x.io", None, WINDOW).unwrap().failed();
        assert_eq!(t.tracked().emails, 1, "only the live key is left");
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |ip: &str| ClientKey::from(ip.parse::<IpAddr>().unwrap());
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}
