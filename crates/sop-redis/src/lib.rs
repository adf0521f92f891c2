//! A [`sop::Coordinator`] on Redis for SOP's clustered mode: the fenced commit lease, the
//! latest-commit hint and the L2 cache.
//!
//! ```no_run
//! use std::time::Duration;
//! use sop::Coordinator;
//! use sop_redis::{RedisCoordinator, RedisOptions};
//!
//! let c = RedisCoordinator::connect(&RedisOptions::from_url("redis://127.0.0.1:6379"), "orders")?;
//! let lease = c.acquire_commit_lease(Duration::from_secs(5), Duration::from_secs(1))?;
//! // ... write the commit, create its marker ...
//! c.release_commit_lease(&lease, 42)?;
//! # Ok::<(), sop::Error>(())
//! ```
//!
//! # Redis holds no source of truth
//!
//! The order of commits is decided by the storage (a commit marker created only if absent),
//! never by Redis. The lease only makes committers of different processes take turns so that
//! they rarely race; the seq hint only tells a process that it is behind; the L2 cache only
//! holds copies of immutable node images. So Redis may restart, lose every key (`FLUSHALL`, no
//! persistence), expire a lease early or grant it twice: that costs a retry or a cache miss,
//! never a lost or torn commit. Redis can be run with `--save "" --appendonly no`.
//!
//! # Invariants
//!
//! - **Namespaced keys**: every key of a database is `sop:{<db_id>}:...` (the commit lease
//!   `...:commit`, the fencing counter `...:fence`, the seq hint `...:seq`, the wait queue
//!   `...:queue` and `...:live`, waiters' wake-up lists `...:wake:<token>`, cache entries
//!   `...:c:<key>`), so several databases share one Redis without interfering. The braces put
//!   a database's keys in one Redis Cluster hash slot, as the scripts need (they name every
//!   key they touch).
//! - **One owner at a time**: the lease is `SET commit <token> PX ttl` when free, with a
//!   random 128-bit owner token, in one Lua script with the fencing increment.
//! - **First come, first served**: a caller that finds the lease taken joins a wait queue
//!   (a sorted set by arrival time on Redis' clock); a free lease goes only to the first live
//!   waiter, so a process that has just released it cannot take it again ahead of the
//!   others, and a caller that will not wait (`wait` zero) cannot take it from them either.
//!   Waiters block on their own wake-up list (`BLPOP`, 100 ms at a time) and a release wakes
//!   the first in line at once; they poll instead (every 0.5 to 5 ms, the first in line most
//!   often) when their wait or the lease's time to live ends within 300 ms (Redis ends
//!   blocking waits late, on its `hz` timer), when `io_timeout` is under 500 ms, or once a
//!   blocking wait failed (Redis before 6.0). Each attempt renews the waiter's liveness
//!   (500 ms, by Redis' clock in `...:live`); a waiter whose liveness ran out (its process
//!   died) is dropped when it reaches the head, so it delays the others by at most about
//!   that much, and one that gives up leaves the queue. The queue is only an ordering hint:
//!   if Redis loses it (restart, `FLUSHALL`) the waiters simply queue again.
//! - **Compare the token**: renewing (`PEXPIRE`) and releasing (`DEL`) are Lua scripts that
//!   act only if the key still holds the caller's token, so a stale owner (its lease expired
//!   and was granted again) can neither extend nor free the new owner's lease.
//! - **Fencing numbers grow**: each grant increments `...:fence`; the coordinator also
//!   remembers the largest number it has seen and raises the counter above it if Redis lost
//!   it, so the numbers it hands out keep growing across a flush of Redis.
//! - **The seq hint only grows**: a release sets it to the maximum of its value and the
//!   released commit's seq, whether or not the caller still owned the lease.
//! - **Bounded waits**: connecting (with `PING`, which also checks the password) takes at most
//!   `connect_timeout`; each command at most `io_timeout`; acquiring the lease at most `wait`
//!   (then [`sop::Error::Timeout`], or [`sop::Error::Coordinator`] if Redis was unreachable
//!   until the end), retrying through connection failures such as a restart of Redis.
//! - **Transparent reconnection**: a connection that fails is dropped with the pool's idle
//!   ones and the command is run again on a new connection (every script is idempotent: a
//!   grant retried after a lost reply finds its own token and returns its own fence; queuing
//!   again keeps the first arrival time).
//!
//! The scripts read Redis' clock (`TIME`) and write, which needs Redis 5 or later (scripts
//! replicated by their effects); blocking waits need Redis 6.0 (on older ones waiters poll).
//! A blocked waiter holds a connection: a process with more waiting threads than
//! `pool_size` opens extra connections for them.

mod coordinator;
mod options;
#[cfg(feature = "testing")]
pub mod testing;

pub use coordinator::RedisCoordinator;
pub use options::RedisOptions;

use std::sync::Arc;

/// Opens the database in `opts.path` in clustered mode with Redis as the coordinator: the
/// usual way to run several processes on one database folder.
///
/// ```no_run
/// use sop::{ClusterOptions, DatabaseOptions, TransactionMode};
/// use sop_redis::RedisOptions;
///
/// let db = sop_redis::open(
///     DatabaseOptions::new("/shared/orders"),
///     ClusterOptions::default(),
///     &RedisOptions::from_url("redis://127.0.0.1:6379/0"),
/// )?;
/// let tx = db.begin(TransactionMode::ForWriting)?;
/// // ...
/// tx.commit()?;
/// # Ok::<(), sop::Error>(())
/// ```
///
/// # Errors
/// As [`sop::Database::open_clustered`]; [`sop::Error::Coordinator`] when Redis cannot be
/// reached or refuses the password (within `redis.connect_timeout`).
pub fn open(
    opts: sop::DatabaseOptions,
    cluster: sop::ClusterOptions,
    redis: &RedisOptions,
) -> sop::Result<sop::Database> {
    sop::Database::open_clustered(opts, cluster, |db_id| {
        let c: Arc<dyn sop::Coordinator> = Arc::new(RedisCoordinator::connect(redis, db_id)?);
        Ok(c)
    })
}
