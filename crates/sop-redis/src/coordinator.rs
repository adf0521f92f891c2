//! `RedisCoordinator`: the commit lease, the seq hint and the L2 cache on Redis.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{Client, Connection, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};
use sop::{Coordinator, Error, Lease, Result};

use crate::options::RedisOptions;

/// Lua shared by the scripts that look at the wait queue.
///
/// The queue is two sorted sets: `queue` (token -> arrival time in microseconds on Redis'
/// clock: first come, first served) and `live` (token -> the time in milliseconds until which
/// the waiter counts as alive; each of its attempts pushes it on). `clock()` is Redis' time in
/// milliseconds (and the raw `TIME` reply); `first_waiter(queue, live, now, me)` is the first
/// waiter in line that is alive (or is `me`, the caller, alive by definition) after dropping
/// the dead ones ahead of it (crashed, or gave up without leaving), and whether any was
/// dropped.
macro_rules! queue_lua {
    () => {
        r"
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t
end
local function first_waiter(queue, live, now, me)
  local dropped = false
  while true do
    local h = redis.call('ZRANGE', queue, 0, 0)[1]
    if not h or h == me then return h, dropped end
    local alive = redis.call('ZSCORE', live, h)
    if alive and tonumber(alive) >= now then return h, dropped end
    redis.call('ZREM', queue, h)
    redis.call('ZREM', live, h)
    dropped = true
  end
end
"
    };
}

/// Takes the lease if it is free and the caller is first in line (or already owns it: a
/// retried grant whose reply was lost), else (with `join`) queues the caller or renews its
/// liveness. Queuing again keeps the first arrival time (`ZADD NX`), and both sets expire when
/// no waiter touches them for a liveness period, so an abandoned queue disappears on its own.
///
/// KEYS: commit, fence, queue, live, the caller's wake list. ARGV: token, ttl in ms, the
/// largest fence the client has seen, join (1 to queue when not granted), liveness in ms.
/// Returns `{1, fence, 0, ''}` when granted, else `{0, pttl, rank, wake}`: the lease's
/// remaining time (-2 when it is free but another waiter is first in line), the caller's place
/// in the queue (0 = next; -1 when not queued), and the waiter to wake when dead ones ahead of
/// it were dropped while the lease is free ('' if none).
const ACQUIRE: &str = concat!(
    queue_lua!(),
    r"
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local me = ARGV[1]
local cur = redis.call('GET', KEYS[1])
if cur == me then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2])) or 0, 0, ''}
end
local now, t = clock()
local head, dropped = first_waiter(KEYS[3], KEYS[4], now, me)
if not cur and (not head or head == me) then
  redis.call('ZREM', KEYS[3], me)
  redis.call('ZREM', KEYS[4], me)
  redis.call('DEL', KEYS[5])
  local f = redis.call('GET', KEYS[2])
  if not f or gt(ARGV[3], f) then
    redis.call('SET', KEYS[2], ARGV[3])
  end
  redis.call('SET', KEYS[1], me, 'PX', ARGV[2])
  return {1, redis.call('INCR', KEYS[2]), 0, ''}
end
local rank = -1
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[3], 'NX', t[1] .. string.format('%06d', tonumber(t[2])), me)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), me)
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
  rank = redis.call('ZRANK', KEYS[3], me)
end
if cur then
  return {0, redis.call('PTTL', KEYS[1]), rank, ''}
end
local wake = ''
if dropped then wake = head end
return {0, -2, rank, wake}
"
);

/// Takes a waiter that gives up out of the queue. KEYS: queue, live, its wake list, commit.
/// ARGV: token. Returns the waiter to wake if the lease is free and someone else is now first
/// in line ('' if none): the one leaving may have been woken for it.
const LEAVE: &str = concat!(
    queue_lua!(),
    r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then
  return ''
end
return first_waiter(KEYS[1], KEYS[2], clock(), false) or ''
"
);

/// Wakes a waiter blocked on its wake list (one element at most), for a liveness period.
/// KEYS: its wake list. ARGV: liveness in ms.
const WAKE: &str = r"
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('RPUSH', KEYS[1], '1')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
";

/// Extends the lease if the caller still owns it. KEYS: commit. ARGV: token, ttl in ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Raises the seq hint to `seq`, then deletes the lease if the caller still owns it.
/// KEYS: commit, seq, queue, live. ARGV: token, seq (decimal, compared as numbers without
/// float rounding). Returns `{released, wake}`: 1 if the caller owned the lease, and the
/// waiter to wake if the lease is free and someone waits for it ('' if none).
const RELEASE: &str = concat!(
    queue_lua!(),
    r"
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local s = redis.call('GET', KEYS[2])
if not s or gt(ARGV[2], s) then
  redis.call('SET', KEYS[2], ARGV[2])
end
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 0 then
  return {released, ''}
end
return {released, first_waiter(KEYS[3], KEYS[4], clock(), false) or ''}
"
);

/// Longest time to live sent to Redis (about 4,000 years; Redis rejects overflowing ones).
const MAX_TTL_MS: u64 = 1 << 47;
/// First and largest sleep between two attempts while Redis is unreachable.
const MIN_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(50);
/// A queued waiter blocks on its wake list (`BLPOP`) for `BLOCK` at a time: a release wakes
/// the first in line at once, the others wake to renew their liveness. Redis ends blocking
/// waits on its periodic timer (every 100 ms at the default `hz 10`), so one may last up to
/// `BLOCK_SLACK` longer: a waiter polls instead when its wait or the lease's time to live ends
/// sooner than `BLOCK + BLOCK_SLACK`, and a coordinator whose I/O timeout is below
/// `BLOCK + 2 * BLOCK_SLACK` always polls.
const BLOCK: Duration = Duration::from_millis(100);
const BLOCK_SLACK: Duration = Duration::from_millis(200);
/// When polling, the first waiter in line polls every `HEAD_POLL_MIN`, the interval growing
/// by a tenth per attempt up to `HEAD_POLL_MAX` (a long commit is not polled thousands of
/// times a second); the waiter at place `n` behind it polls about every
/// `(n + 1) * HEAD_POLL_MIN`, at most `POLL_MAX`. Every interval is jittered by ±25%.
const HEAD_POLL_MIN: Duration = Duration::from_micros(500);
const HEAD_POLL_MAX: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(5);
/// How long a waiter stays in line without an attempt (it crashed, or gave up and could not
/// say so) before the others skip it: above `BLOCK + BLOCK_SLACK`, with room for a waiter
/// descheduled for a while to keep its place.
const WAITER_LIVENESS: Duration = Duration::from_millis(500);

/// The keys of one database: `sop:{<db_id>}:...` (one hash slot per database, so the scripts
/// also run on Redis Cluster).
#[derive(Debug)]
struct Keys {
    commit: String,
    fence: String,
    seq: String,
    queue: String,
    live: String,
    wake_prefix: String,
    cache_prefix: String,
}

impl Keys {
    fn new(db_id: &str) -> Self {
        let p = format!("sop:{{{db_id}}}:");
        Self {
            commit: format!("{p}commit"),
            fence: format!("{p}fence"),
            seq: format!("{p}seq"),
            queue: format!("{p}queue"),
            live: format!("{p}live"),
            wake_prefix: format!("{p}wake:"),
            cache_prefix: format!("{p}c:"),
        }
    }

    /// The wake list of the waiter with token `hex`.
    fn wake(&self, hex: &str) -> String {
        format!("{}{hex}", self.wake_prefix)
    }
}

/// A [`Coordinator`] on Redis: see the crate documentation for what it keeps and why nothing
/// in it is a source of truth.
///
/// Thread-safe; commands run on a small pool of connections, and a connection that fails
/// (Redis restarted, network cut, timeout) is dropped and replaced by a new one on the next
/// call, so a restart of Redis costs callers at most one failed call (none for
/// [`Coordinator::acquire_commit_lease`], which retries until its wait runs out).
pub struct RedisCoordinator {
    client: Client,
    target: String,
    db_id: String,
    keys: Keys,
    connect_timeout: Duration,
    io_timeout: Duration,
    pool_size: usize,
    idle: Mutex<Vec<Connection>>,
    /// The largest fencing number this coordinator has been granted or seen: a Redis that
    /// lost its data (restart without persistence, `FLUSHALL`) resumes counting above it.
    max_fence: AtomicU64,
    /// Whether waiters block on their wake list (else they poll): off when the I/O timeout is
    /// too short, or once a blocking wait failed other than by a lost connection (Redis
    /// before 6.0 takes no fractional timeout) or timed out (Redis ends them late).
    blocking: AtomicBool,
    acquire: Script,
    leave: Script,
    wake: Script,
    renew: Script,
    release: Script,
}

impl fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCoordinator")
            .field("target", &self.target)
            .field("db_id", &self.db_id)
            .field("idle_connections", &self.pool().len())
            .finish_non_exhaustive()
    }
}

impl RedisCoordinator {
    /// Connects to Redis for the database `db_id` (its keys are `sop:{<db_id>}:...`), and
    /// checks the connection with `PING`, all within `options.connect_timeout`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty `db_id` or one with `{`, `}` or whitespace;
    /// [`Error::InvalidOption`] for a malformed URL or address; [`Error::Coordinator`] when
    /// the server cannot be reached or refuses the password.
    pub fn connect(options: &RedisOptions, db_id: &str) -> Result<Self> {
        if db_id.is_empty()
            || db_id
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(Error::InvalidArgument(format!(
                "database id {db_id:?} for Redis keys: must be non-empty, without braces or \
                 whitespace"
            )));
        }
        let info = options.connection_info()?;
        let client = Client::open(info).map_err(|e| {
            Error::InvalidOption(format!("Redis settings for {}: {e}", options.target()))
        })?;
        let this = Self {
            client,
            target: options.target(),
            db_id: db_id.to_owned(),
            keys: Keys::new(db_id),
            connect_timeout: nonzero(options.connect_timeout),
            io_timeout: nonzero(options.io_timeout),
            pool_size: options.pool_size,
            idle: Mutex::new(Vec::new()),
            max_fence: AtomicU64::new(0),
            blocking: AtomicBool::new(nonzero(options.io_timeout) >= BLOCK + 2 * BLOCK_SLACK),
            acquire: Script::new(ACQUIRE),
            leave: Script::new(LEAVE),
            wake: Script::new(WAKE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        };
        let start = Instant::now();
        let mut conn = this
            .open(this.connect_timeout)
            .map_err(|e| this.failure("connecting", &e))?;
        // The handshake may not have authenticated (no password given): PING tells, within
        // what is left of the connect timeout.
        let left = nonzero(this.connect_timeout.saturating_sub(start.elapsed()));
        let ping = conn
            .set_read_timeout(Some(left))
            .and_then(|()| conn.set_write_timeout(Some(left)))
            .and_then(|()| redis::cmd("PING").query::<String>(&mut conn))
            .and_then(|pong| {
                conn.set_read_timeout(Some(this.io_timeout))?;
                conn.set_write_timeout(Some(this.io_timeout))?;
                Ok(pong)
            })
            .map_err(|e| this.failure("checking the connection (PING)", &e))?;
        if ping != "PONG" {
            return Err(Error::Coordinator(format!(
                "Redis at {} answered PING with {ping:?}",
                this.target
            )));
        }
        this.checkin(conn);
        Ok(this)
    }

    /// The database id that namespaces this coordinator's keys.
    #[must_use]
    pub fn db_id(&self) -> &str {
        &self.db_id
    }

    /// The prefix of every key of this database (`sop:{<db_id>}:`).
    #[must_use]
    pub fn key_prefix(&self) -> String {
        format!("sop:{{{}}}:", self.db_id)
    }

    fn pool(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The pool is only pushed to and popped from: a panic cannot leave it inconsistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection with the I/O timeouts set.
    fn open(&self, connect_timeout: Duration) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(connect_timeout)?;
        conn.set_read_timeout(Some(self.io_timeout))?;
        conn.set_write_timeout(Some(self.io_timeout))?;
        Ok(conn)
    }

    fn checkin(&self, conn: Connection) {
        let mut idle = self.pool();
        if idle.len() < self.pool_size {
            idle.push(conn);
        }
    }

    /// Runs `op` on a connection of the pool (or a new one, connecting within
    /// `connect_timeout`). A connection that fails at the connection level is dropped with
    /// every idle one (after a restart of Redis they are all dead); if it came from the pool,
    /// `op` runs once more on a new connection. Every script and command run here is
    /// idempotent, so running it twice is harmless.
    fn run<T>(
        &self,
        connect_timeout: Duration,
        mut op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut retried = false;
        loop {
            let pooled = self.pool().pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.open(connect_timeout)?,
            };
            match op(&mut conn) {
                Ok(v) => {
                    self.checkin(conn);
                    return Ok(v);
                }
                Err(e) if is_connection_failure(&e) => {
                    drop(conn);
                    self.pool().clear();
                    if reused && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => {
                    self.checkin(conn);
                    return Err(e);
                }
            }
        }
    }

    /// Takes a waiter that gives up out of the queue, so that the others need not wait for
    /// its entry to expire, and wakes the next in line if the lease is free. Best effort: a
    /// failure only costs the others that wait.
    fn leave_queue(&self, hex: &str) {
        let next = self.run(self.connect_timeout, |c| {
            self.leave
                .key(&self.keys.queue)
                .key(&self.keys.live)
                .key(self.keys.wake(hex))
                .key(&self.keys.commit)
                .arg(hex)
                .invoke::<String>(c)
        });
        if let Ok(next) = next {
            self.wake_waiter(&next);
        }
    }

    /// Wakes the waiter with token `hex` (none if empty) from its blocking wait. Best effort:
    /// a waiter that is not woken tries again within `BLOCK + BLOCK_SLACK`.
    fn wake_waiter(&self, hex: &str) {
        if hex.is_empty() {
            return;
        }
        let _ = self.run(self.connect_timeout, |c| {
            self.wake
                .key(self.keys.wake(hex))
                .arg(millis(WAITER_LIVENESS))
                .invoke::<i64>(c)
        });
    }

    /// Blocks on the wake list `key` for `BLOCK` (or until woken); false if that failed. On a
    /// failure other than a lost connection, waiters of this coordinator poll from then on.
    fn wait_for_wake(&self, key: &str, connect_timeout: Duration) -> bool {
        let timeout = format!("{:.3}", BLOCK.as_secs_f64());
        let r = self.run(connect_timeout, |c| {
            redis::cmd("BLPOP")
                .arg(key)
                .arg(&timeout)
                .query::<redis::Value>(c)
        });
        match r {
            Ok(_) => true,
            Err(e) => {
                if !is_connection_failure(&e) || e.is_timeout() {
                    self.blocking.store(false, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// The error for a failed `what`.
    fn failure(&self, what: &str, e: &RedisError) -> Error {
        let target = &self.target;
        if is_auth_failure(e) {
            Error::Coordinator(format!(
                "{what}: Redis at {target} refused authentication (check the password): {e}"
            ))
        } else if e.is_timeout() {
            Error::Coordinator(format!(
                "{what}: Redis at {target} did not answer in time: {e}"
            ))
        } else if is_connection_failure(e) {
            Error::Coordinator(format!("{what}: Redis at {target} is unreachable: {e}"))
        } else {
            Error::Coordinator(format!("{what}: Redis at {target} failed: {e}"))
        }
    }
}

impl Coordinator for RedisCoordinator {
    fn acquire_commit_lease(&self, ttl: Duration, wait: Duration) -> Result<Lease> {
        let start = Instant::now();
        let deadline = start + wait;
        let token = fastrand::u128(..);
        let hex = format!("{token:032x}");
        let wake_key = self.keys.wake(&hex);
        let ttl_ms = millis(ttl);
        let liveness_ms = millis(WAITER_LIVENESS);
        // A caller that will not wait does not queue (it would only be in the others' way).
        let join = u8::from(!wait.is_zero());
        let mut backoff = MIN_BACKOFF;
        let mut head_poll = HEAD_POLL_MIN;
        let mut queued = false;
        let mut first = true;
        loop {
            // The first attempt may take the whole connect timeout; later ones what is left.
            let connect_timeout = if std::mem::take(&mut first) {
                self.connect_timeout
            } else {
                nonzero(
                    self.connect_timeout
                        .min(deadline.saturating_duration_since(Instant::now())),
                )
            };
            let granted = Instant::now();
            let min_fence = self.max_fence.load(Ordering::Acquire);
            let reply = self.run(connect_timeout, |c| {
                self.acquire
                    .key(&self.keys.commit)
                    .key(&self.keys.fence)
                    .key(&self.keys.queue)
                    .key(&self.keys.live)
                    .key(&wake_key)
                    .arg(&hex)
                    .arg(ttl_ms)
                    .arg(min_fence)
                    .arg(join)
                    .arg(liveness_ms)
                    .invoke::<(i64, i64, i64, String)>(c)
            });
            // What to wait for before the next attempt: a wake-up (at most until the lease
            // expires), or a pause.
            let (pause, lease_left, failure) = match reply {
                Ok((1, fence, _, _)) => {
                    let fence = u64::try_from(fence).map_err(|_| {
                        Error::Coordinator(format!(
                            "Redis at {} returned a negative fencing number {fence} (key {})",
                            self.target, self.keys.fence
                        ))
                    })?;
                    self.max_fence.fetch_max(fence, Ordering::AcqRel);
                    return Ok(Lease {
                        token,
                        fence,
                        granted,
                        ttl,
                    });
                }
                Ok((_, pttl, rank, next)) => {
                    // Dead waiters were dropped from the head of a free lease's queue: the
                    // new first in line was not woken by a release.
                    self.wake_waiter(&next);
                    queued |= rank >= 0;
                    backoff = MIN_BACKOFF;
                    // Next in line: poll often, the lease is handed on as soon as it is free.
                    // Further back: one's turn is at least a commit per waiter ahead away.
                    let poll = match u32::try_from(rank) {
                        Ok(n) if n > 0 => {
                            head_poll = HEAD_POLL_MIN;
                            (HEAD_POLL_MIN * (n + 1)).min(POLL_MAX)
                        }
                        _ => {
                            let p = head_poll;
                            head_poll = head_poll.mul_f64(1.1).min(HEAD_POLL_MAX);
                            p
                        }
                    };
                    let poll = jitter(poll);
                    // pttl < 0: free (another waiter is next), held without expiry (set by
                    // hand) or expired just now.
                    match u64::try_from(pttl) {
                        Ok(ms) if ms > 0 => {
                            let left = Duration::from_millis(ms);
                            (left.min(poll), Some(left), None)
                        }
                        _ => (poll, None, None),
                    }
                }
                Err(e) if is_connection_failure(&e) => {
                    let pause = jitter(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    (pause, None, Some(e))
                }
                Err(e) => {
                    if queued {
                        self.leave_queue(&hex);
                    }
                    return Err(self.failure("acquiring the commit lease", &e));
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match failure {
                    // Redis is unreachable: it cannot be told, and the entry expires anyway.
                    Some(e) => self.failure(
                        &format!("acquiring the commit lease (retried for {wait:?})"),
                        &e,
                    ),
                    None => {
                        if queued {
                            self.leave_queue(&hex);
                        }
                        Error::Timeout(format!(
                            "the commit lease of database {:?} was not free within {wait:?} \
                             (held, or other waiters were first in line)",
                            self.db_id
                        ))
                    }
                });
            }
            // Block until woken when the wait may run over (Redis ends blocking waits late)
            // without missing the end of this one or the lease's expiry.
            let far = BLOCK + BLOCK_SLACK;
            if queued
                && failure.is_none()
                && left >= far
                && lease_left.is_none_or(|l| l >= far)
                && self.blocking.load(Ordering::Relaxed)
                && self.wait_for_wake(&wake_key, connect_timeout)
            {
                continue;
            }
            std::thread::sleep(pause.min(left));
        }
    }

    fn renew_commit_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let hex = format!("{:032x}", lease.token);
        let ttl_ms = millis(ttl);
        let owned = self
            .run(self.connect_timeout, |c| {
                self.renew
                    .key(&self.keys.commit)
                    .arg(&hex)
                    .arg(ttl_ms)
                    .invoke::<i64>(c)
            })
            .map_err(|e| self.failure("renewing the commit lease", &e))?;
        Ok(owned == 1)
    }

    fn release_commit_lease(&self, lease: &Lease, seq: u64) -> Result<()> {
        let hex = format!("{:032x}", lease.token);
        let (_, next) = self
            .run(self.connect_timeout, |c| {
                self.release
                    .key(&self.keys.commit)
                    .key(&self.keys.seq)
                    .key(&self.keys.queue)
                    .key(&self.keys.live)
                    .arg(&hex)
                    .arg(seq)
                    .invoke::<(i64, String)>(c)
            })
            .map_err(|e| self.failure("releasing the commit lease", &e))?;
        self.wake_waiter(&next);
        Ok(())
    }

    fn latest_seq_hint(&self) -> Result<Option<u64>> {
        let hint = self
            .run(self.connect_timeout, |c| {
                redis::cmd("GET")
                    .arg(&self.keys.seq)
                    .query::<Option<String>>(c)
            })
            .map_err(|e| self.failure("reading the seq hint", &e))?;
        hint.map(|s| {
            s.parse::<u64>().map_err(|_| {
                Error::Coordinator(format!(
                    "Redis at {} holds {s:?} under {}, not a sequence number",
                    self.target, self.keys.seq
                ))
            })
        })
        .transpose()
    }

    fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let k = format!("{}{key}", self.keys.cache_prefix);
        self.run(self.connect_timeout, |c| {
            redis::cmd("GET").arg(&k).query::<Option<Vec<u8>>>(c)
        })
        .map_err(|e| self.failure("reading the L2 cache", &e))
    }

    fn cache_put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Ok(());
        }
        let k = format!("{}{key}", self.keys.cache_prefix);
        let ttl_ms = millis(ttl);
        self.run(self.connect_timeout, |c| {
            redis::cmd("SET")
                .arg(&k)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms)
                .query::<()>(c)
        })
        .map_err(|e| self.failure("writing the L2 cache", &e))
    }
}

/// True when the connection is unusable or in an unknown state (dropped, timed out, a reply
/// that did not parse), or Redis is not ready yet (loading): drop it and retry on a new one.
fn is_connection_failure(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Parse
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                )
        )
}

fn is_auth_failure(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
        || e.detail().is_some_and(|d| d.contains("NOAUTH"))
}

/// A time to live in whole milliseconds for `PX`: at least 1, at most [`MAX_TTL_MS`].
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// `d` scaled by a random factor in [0.75, 1.25): waiters that started together drift apart.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() / 2.0)
}

/// Socket timeouts must not be zero (that means "none" to some and an error to others).
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced() {
        let k = Keys::new("db-1");
        assert_eq!(k.commit, "sop:{db-1}:commit");
        assert_eq!(k.fence, "sop:{db-1}:fence");
        assert_eq!(k.seq, "sop:{db-1}:seq");
        assert_eq!(k.queue, "sop:{db-1}:queue");
        assert_eq!(k.live, "sop:{db-1}:live");
        assert_eq!(k.wake("ab12"), "sop:{db-1}:wake:ab12");
        assert_eq!(k.cache_prefix, "sop:{db-1}:c:");
    }

    #[test]
    fn ttls_are_clamped() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::from_secs(3)), 3000);
        assert_eq!(millis(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn bad_db_ids_are_refused() {
        for id in ["", "a{b", "a}b", "a b", "a\nb"] {
            assert!(
                matches!(
                    RedisCoordinator::connect(&RedisOptions::default(), id),
                    Err(Error::InvalidArgument(_))
                ),
                "{id:?}"
            );
        }
    }
}
