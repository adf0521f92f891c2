//! The coordinator: what clustered mode asks of the shared service (Redis in `sop-redis`).
//!
//! A coordinator hands out the *commit lease* (a lock with an owner token, a time to live and a
//! fencing number) and keeps the L2 cache. It holds no source of truth: the commit decision is
//! taken by the storage (a commit marker created only if absent, see `cluster::markers`), so a
//! coordinator that loses its state (restart, flush) or grants the lease twice costs a retry,
//! never a lost or torn commit.
//!
//! Invariants an implementation keeps:
//! - a lease is granted to one owner at a time while its time to live runs (best effort: the
//!   engine stays correct without it);
//! - `renew` and `release` act only if the caller still owns the lease (compare the token);
//! - every grant carries a fencing number larger than every earlier grant it knows of;
//! - keys are namespaced by the database id, so several databases share one service.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A granted commit lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Random owner token (compare-and-delete unlock, compare-and-renew).
    pub token: u128,
    /// Fencing number: larger than every earlier grant.
    pub fence: u64,
    /// When it was granted (local clock).
    pub granted: Instant,
    /// Its time to live.
    pub ttl: Duration,
}

impl Lease {
    /// True while the time to live (less a safety margin of a tenth) has not run out on the
    /// local clock.
    #[must_use]
    pub fn is_fresh(&self) -> bool {
        self.granted.elapsed() < self.ttl - self.ttl / 10
    }
}

/// The shared service of clustered mode.
pub trait Coordinator: Send + Sync + fmt::Debug {
    /// Takes the database's commit lease for `ttl`, waiting at most `wait` for its holder to
    /// release it or for it to expire.
    ///
    /// # Errors
    /// [`Error::Timeout`] when `wait` runs out; [`Error::Coordinator`] when the service fails.
    fn acquire_commit_lease(&self, ttl: Duration, wait: Duration) -> Result<Lease>;

    /// Extends a lease the caller still owns to `ttl` from now. `Ok(false)` when it was lost
    /// (expired, taken over, or the service forgot it).
    ///
    /// # Errors
    /// [`Error::Coordinator`] when the service fails.
    fn renew_commit_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool>;

    /// Releases a lease the caller still owns (compare-and-delete) and records `seq` as the
    /// newest commit (a hint for other processes; the commit markers are the truth).
    ///
    /// # Errors
    /// [`Error::Coordinator`] when the service fails.
    fn release_commit_lease(&self, lease: &Lease, seq: u64) -> Result<()>;

    /// The newest commit seq recorded by [`Coordinator::release_commit_lease`], if known.
    ///
    /// # Errors
    /// [`Error::Coordinator`] when the service fails.
    fn latest_seq_hint(&self) -> Result<Option<u64>>;

    /// Reads an L2 cache entry.
    ///
    /// # Errors
    /// [`Error::Coordinator`] when the service fails.
    fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Writes an L2 cache entry that expires after `ttl`.
    ///
    /// # Errors
    /// [`Error::Coordinator`] when the service fails.
    fn cache_put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;
}

/// A coordinator for several `Database` handles of one process (tests, and clustered mode
/// without a service when every user of the folder lives in one process), with an in-memory
/// L2 cache.
#[derive(Debug, Default)]
pub struct LocalCoordinator {
    lease: Mutex<LocalLease>,
    cv: Condvar,
    cache: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

#[derive(Debug, Default)]
struct LocalLease {
    holder: Option<(u128, Instant)>,
    fence: u64,
    seq: Option<u64>,
}

fn poisoned<T>(_: T) -> Error {
    Error::Poisoned("a thread panicked while holding the local coordinator".into())
}

impl LocalCoordinator {
    /// A coordinator with no lease granted.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Coordinator for LocalCoordinator {
    fn acquire_commit_lease(&self, ttl: Duration, wait: Duration) -> Result<Lease> {
        let deadline = Instant::now() + wait;
        let mut l = self.lease.lock().map_err(poisoned)?;
        loop {
            let now = Instant::now();
            let free = l.holder.is_none_or(|(_, until)| until <= now);
            if free {
                let token = fastrand::u128(..);
                l.fence += 1;
                l.holder = Some((token, now + ttl));
                return Ok(Lease {
                    token,
                    fence: l.fence,
                    granted: now,
                    ttl,
                });
            }
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "the commit lease was not free within {wait:?}"
                )));
            }
            let until = l.holder.map_or(deadline, |(_, u)| u.min(deadline));
            let (g, _) = self
                .cv
                .wait_timeout(l, until.saturating_duration_since(now))
                .map_err(poisoned)?;
            l = g;
        }
    }

    fn renew_commit_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut l = self.lease.lock().map_err(poisoned)?;
        let now = Instant::now();
        match l.holder {
            Some((t, until)) if t == lease.token && until > now => {
                l.holder = Some((t, now + ttl));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn release_commit_lease(&self, lease: &Lease, seq: u64) -> Result<()> {
        let mut l = self.lease.lock().map_err(poisoned)?;
        l.seq = Some(l.seq.map_or(seq, |s| s.max(seq)));
        if l.holder.is_some_and(|(t, _)| t == lease.token) {
            l.holder = None;
            self.cv.notify_all();
        }
        Ok(())
    }

    fn latest_seq_hint(&self) -> Result<Option<u64>> {
        Ok(self.lease.lock().map_err(poisoned)?.seq)
    }

    fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let c = self.cache.lock().map_err(poisoned)?;
        Ok(c.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone()))
    }

    fn cache_put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Ok(());
        }
        let mut c = self.cache.lock().map_err(poisoned)?;
        let now = Instant::now();
        if c.len() >= 100_000 {
            c.retain(|_, (_, until)| *until > now);
        }
        c.insert(key.to_owned(), (value.to_vec(), now + ttl));
        Ok(())
    }
}

impl LocalCoordinator {
    /// Overwrites every L2 cache entry with `value` (tests: a damaged cache must not be
    /// believed). Returns how many entries there were.
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn damage_cache(&self, value: &[u8]) -> Result<usize> {
        let mut c = self.cache.lock().map_err(poisoned)?;
        for (v, _) in c.values_mut() {
            *v = value.to_vec();
        }
        Ok(c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_exclusive_until_released_or_expired() {
        let c = LocalCoordinator::new();
        let ttl = Duration::from_millis(200);
        let a = c
            .acquire_commit_lease(ttl, Duration::ZERO)
            .expect("free lease");
        assert!(matches!(
            c.acquire_commit_lease(ttl, Duration::from_millis(10)),
            Err(Error::Timeout(_))
        ));
        c.release_commit_lease(&a, 7).expect("release");
        assert_eq!(c.latest_seq_hint().expect("hint"), Some(7));
        let b = c.acquire_commit_lease(ttl, Duration::ZERO).expect("free");
        assert!(b.fence > a.fence);
        assert!(!c.renew_commit_lease(&a, ttl).expect("renew"), "a lost it");
        // b expires; c takes over and b can no longer renew or release it.
        let d = c
            .acquire_commit_lease(ttl, Duration::from_secs(2))
            .expect("after expiry");
        assert!(d.fence > b.fence);
        assert!(!c.renew_commit_lease(&b, ttl).expect("renew"));
        c.release_commit_lease(&b, 8).expect("no-op release");
        assert!(matches!(
            c.acquire_commit_lease(ttl, Duration::from_millis(10)),
            Err(Error::Timeout(_))
        ));
    }
}
