//! `RedisCoordinator` against a real `redis-server` (started per test; the tests fail if it is
//! not installed).

use std::time::{Duration, Instant};

use sop::{Coordinator, Error};
use sop_redis::testing::RedisServer;
use sop_redis::{RedisCoordinator, RedisOptions};

const TTL: Duration = Duration::from_secs(10);

fn connect(server: &RedisServer, db_id: &str) -> RedisCoordinator {
    RedisCoordinator::connect(&server.options(), db_id).expect("connect to the test redis-server")
}

fn is_timeout<T: std::fmt::Debug>(r: &sop::Result<T>) -> bool {
    matches!(r, Err(Error::Timeout(_)))
}

#[test]
fn lease_is_exclusive_across_coordinators_and_fences_grow() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");

    let la = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    let r = b.acquire_commit_lease(TTL, Duration::from_millis(50));
    assert!(is_timeout(&r), "held by a: {r:?}");
    let r = a.acquire_commit_lease(TTL, Duration::ZERO);
    assert!(is_timeout(&r), "a second grant to the same process: {r:?}");

    a.release_commit_lease(&la, 5).expect("release");
    assert_eq!(b.latest_seq_hint().expect("hint"), Some(5));
    let lb = b
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free after release");
    assert!(lb.fence > la.fence, "{} > {}", lb.fence, la.fence);
    assert_ne!(lb.token, la.token);
    b.release_commit_lease(&lb, 6).expect("release");

    let mut last = lb.fence;
    for _ in 0..5 {
        let l = a
            .acquire_commit_lease(TTL, Duration::ZERO)
            .expect("free lease");
        assert!(l.fence > last);
        last = l.fence;
        a.release_commit_lease(&l, 7).expect("release");
    }
}

#[test]
fn waiting_acquirer_gets_the_lease_when_released() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");
    let la = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| b.acquire_commit_lease(TTL, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(100));
        a.release_commit_lease(&la, 1).expect("release");
        let lb = waiter.join().expect("waiter thread").expect("granted");
        assert!(lb.fence > la.fence);
    });
}

#[test]
fn stale_owner_cannot_release_or_renew_the_new_owners_lease() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");
    let short = Duration::from_millis(150);

    let la = a
        .acquire_commit_lease(short, Duration::ZERO)
        .expect("free lease");
    assert!(
        a.renew_commit_lease(&la, short).expect("renew"),
        "a owns it"
    );
    // a's lease expires; b takes it within its wait.
    let lb = b
        .acquire_commit_lease(TTL, Duration::from_secs(3))
        .expect("granted after expiry");
    assert!(lb.fence > la.fence);

    assert!(
        !a.renew_commit_lease(&la, TTL).expect("renew"),
        "renew after expiry must report the loss"
    );
    // The stale release records its seq but leaves b's lease alone.
    a.release_commit_lease(&la, 9).expect("stale release");
    assert_eq!(b.latest_seq_hint().expect("hint"), Some(9));
    let r = a.acquire_commit_lease(TTL, Duration::from_millis(50));
    assert!(is_timeout(&r), "b still holds it: {r:?}");
    assert!(b.renew_commit_lease(&lb, TTL).expect("renew"), "b owns it");

    // The seq hint only grows.
    b.release_commit_lease(&lb, 4).expect("release");
    assert_eq!(a.latest_seq_hint().expect("hint"), Some(9));
    let l = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free after b's release");
    a.release_commit_lease(&l, u64::MAX).expect("release");
    assert_eq!(a.latest_seq_hint().expect("hint"), Some(u64::MAX));
}

#[test]
fn renew_after_expiry_returns_false() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");
    let l = a
        .acquire_commit_lease(Duration::from_millis(100), Duration::ZERO)
        .expect("free lease");
    assert!(
        a.renew_commit_lease(&l, Duration::from_millis(400))
            .expect("renew"),
        "owned"
    );
    // Past the first time to live: the renewal kept it.
    std::thread::sleep(Duration::from_millis(150));
    let r = b.acquire_commit_lease(TTL, Duration::ZERO);
    assert!(is_timeout(&r), "renewed: still held: {r:?}");
    assert!(
        a.renew_commit_lease(&l, Duration::from_millis(100))
            .expect("renew"),
        "still owned"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!a.renew_commit_lease(&l, TTL).expect("renew"), "expired");
    // Nobody owns it now; a failed renew did not take it back.
    let lb = b
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free after expiry");
    assert!(lb.fence > l.fence);
}

#[test]
fn expiry_lets_another_take_the_lease() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");
    let la = a
        .acquire_commit_lease(Duration::from_millis(300), Duration::ZERO)
        .expect("free lease");
    let start = Instant::now();
    let lb = b
        .acquire_commit_lease(TTL, Duration::from_secs(5))
        .expect("granted after expiry");
    let waited = start.elapsed();
    assert!(lb.fence > la.fence);
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "waited {waited:?} for a 300 ms lease"
    );
}

#[test]
fn two_database_ids_do_not_interfere() {
    let server = RedisServer::start();
    let x = connect(&server, "x");
    let y = connect(&server, "y");
    let lx = x
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("x's lease");
    let ly = y
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("y's lease, while x holds its own");
    assert_eq!(lx.fence, 1);
    assert_eq!(ly.fence, 1);

    x.release_commit_lease(&lx, 10).expect("release");
    assert_eq!(x.latest_seq_hint().expect("hint"), Some(10));
    assert_eq!(y.latest_seq_hint().expect("hint"), None);
    assert!(
        y.renew_commit_lease(&ly, TTL).expect("renew"),
        "y still owns"
    );
    // Releasing y's lease through x (wrong namespace) does nothing.
    x.release_commit_lease(&ly, 11).expect("release");
    assert!(
        y.renew_commit_lease(&ly, TTL).expect("renew"),
        "y still owns"
    );

    x.cache_put("k", b"from x", TTL).expect("put");
    assert_eq!(y.cache_get("k").expect("get"), None);
    assert_eq!(
        x.cache_get("k").expect("get").as_deref(),
        Some(&b"from x"[..])
    );

    let mut conn = server
        .connection(Duration::from_secs(2))
        .expect("plain connection");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    keys.sort();
    assert_eq!(
        keys,
        [
            "sop:{x}:c:k",
            "sop:{x}:fence",
            "sop:{x}:seq",
            "sop:{y}:commit",
            "sop:{y}:fence"
        ]
    );
}

#[test]
fn wait_bound_is_respected() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let _held = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    for wait in [
        Duration::ZERO,
        Duration::from_millis(200),
        Duration::from_secs(1),
    ] {
        let start = Instant::now();
        let r = a.acquire_commit_lease(TTL, wait);
        let took = start.elapsed();
        assert!(is_timeout(&r), "{r:?}");
        assert!(took >= wait, "gave up after {took:?} of {wait:?}");
        assert!(
            took < wait + Duration::from_millis(150),
            "took {took:?} for a {wait:?} wait"
        );
        assert!(r.expect_err("timeout").is_retryable());
    }
}

#[test]
fn unreachable_server_fails_at_connect_within_the_timeout() {
    // A port nothing listens on (picked and closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let timeout = Duration::from_millis(500);
    for address in [format!("127.0.0.1:{port}"), "192.0.2.1:6379".to_owned()] {
        let options = RedisOptions {
            address: address.clone(),
            connect_timeout: timeout,
            ..RedisOptions::default()
        };
        let start = Instant::now();
        let r = RedisCoordinator::connect(&options, "db");
        let took = start.elapsed();
        match r {
            Err(Error::Coordinator(msg)) => {
                assert!(msg.contains(&address), "names the address: {msg}");
            }
            other => panic!("{address}: expected Error::Coordinator, got {other:?}"),
        }
        assert!(
            took < timeout + Duration::from_millis(300),
            "{address}: took {took:?}"
        );
    }
}

#[test]
fn silent_server_fails_at_connect_within_the_timeout() {
    // Accepts connections (the kernel's backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let address = silent.local_addr().expect("address").to_string();
    let timeout = Duration::from_millis(400);
    let options = RedisOptions {
        address: address.clone(),
        connect_timeout: timeout,
        ..RedisOptions::default()
    };
    let start = Instant::now();
    let r = RedisCoordinator::connect(&options, "db");
    let took = start.elapsed();
    match r {
        Err(Error::Coordinator(msg)) => {
            assert!(msg.contains(&address) && msg.contains("in time"), "{msg}");
        }
        other => panic!("expected Error::Coordinator, got {other:?}"),
    }
    assert!(
        took >= timeout / 2 && took < timeout + Duration::from_millis(300),
        "took {took:?} for a {timeout:?} connect timeout"
    );
}

#[test]
fn wrong_or_missing_password_fails_at_connect() {
    let server = RedisServer::start_with_password("s3cret");
    let good = connect(&server, "db");
    good.cache_put("k", b"v", TTL).expect("authenticated");

    for password in [Some("not-the-password-42".to_owned()), None] {
        let options = RedisOptions {
            password: password.clone(),
            connect_timeout: Duration::from_secs(1),
            ..server.options()
        };
        let start = Instant::now();
        match RedisCoordinator::connect(&options, "db") {
            Err(Error::Coordinator(msg)) => {
                assert!(msg.contains("authentication"), "{password:?}: {msg}");
                assert!(
                    !msg.contains("s3cret") && !msg.contains("not-the-password"),
                    "{msg}"
                );
            }
            other => panic!("{password:?}: expected Error::Coordinator, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    // The URL form works too.
    let by_url = RedisCoordinator::connect(&RedisOptions::from_url(server.url()), "db")
        .expect("connect by URL");
    assert_eq!(
        by_url.cache_get("k").expect("get").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn reconnects_after_a_restart_and_a_flush_frees_the_lease() {
    let mut server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");
    let la = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    a.cache_put("k", b"v", TTL).expect("put");

    server.restart();
    // Every pooled connection is dead; calls reconnect transparently. Redis lost its data
    // (no persistence): the lease is free, the hint unknown, the cache empty.
    assert_eq!(b.latest_seq_hint().expect("hint after restart"), None);
    assert_eq!(a.cache_get("k").expect("get after restart"), None);
    assert!(!a.renew_commit_lease(&la, TTL).expect("renew after restart"));
    let lb = b
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("lease free after restart");
    // b never saw a fence before the restart: the counter starts again from 1 for it.
    assert!(lb.fence >= 1);
    b.release_commit_lease(&lb, 3).expect("release");

    // a remembers the largest fence it saw: its grants keep growing across a flush.
    let l1 = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    assert!(l1.fence > la.fence);
    server.flushall();
    let r = b.acquire_commit_lease(TTL, Duration::ZERO);
    let l2 = r.expect("after FLUSHALL the lease is simply free");
    assert!(!a.renew_commit_lease(&l1, TTL).expect("renew"), "forgotten");
    b.release_commit_lease(&l2, 4).expect("release");
    let l3 = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    assert!(l3.fence > l1.fence, "{} > {}", l3.fence, l1.fence);
    a.release_commit_lease(&l3, 5).expect("release");
}

#[test]
fn acquire_waits_through_a_redis_outage() {
    let mut server = RedisServer::start();
    let a = connect(&server, "db");
    a.latest_seq_hint().expect("warm the pool");
    server.stop();

    // Down for the whole wait: a clear coordinator error, within the bound.
    let start = Instant::now();
    let r = a.acquire_commit_lease(TTL, Duration::from_millis(300));
    let took = start.elapsed();
    match r {
        Err(Error::Coordinator(msg)) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("expected Error::Coordinator, got {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(matches!(a.latest_seq_hint(), Err(Error::Coordinator(_))));

    // Back during the wait: granted.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| a.acquire_commit_lease(TTL, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        waiter
            .join()
            .expect("waiter thread")
            .expect("granted once Redis is back");
    });
}

#[test]
fn cache_put_get_and_expiry() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");
    assert_eq!(a.cache_get("missing").expect("get"), None);

    let value: Vec<u8> = (0..=255).collect();
    a.cache_put("node/1", &value, TTL).expect("put");
    assert_eq!(b.cache_get("node/1").expect("get"), Some(value.clone()));
    a.cache_put("node/1", b"", TTL).expect("overwrite");
    assert_eq!(b.cache_get("node/1").expect("get"), Some(Vec::new()));

    a.cache_put("short", b"x", Duration::from_millis(100))
        .expect("put");
    assert!(a.cache_get("short").expect("get").is_some());
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(a.cache_get("short").expect("get"), None, "expired");

    a.cache_put("zero", b"x", Duration::ZERO).expect("put");
    assert_eq!(a.cache_get("zero").expect("get"), None, "ttl 0: not cached");
}

#[test]
fn pool_serves_concurrent_callers() {
    let server = RedisServer::start();
    let c = RedisCoordinator::connect(
        &RedisOptions {
            pool_size: 2,
            ..server.options()
        },
        "db",
    )
    .expect("connect");
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let c = &c;
            s.spawn(move || {
                for i in 0..20u64 {
                    let l = c
                        .acquire_commit_lease(TTL, Duration::from_secs(10))
                        .expect("granted in turn");
                    c.cache_put(&format!("{t}/{i}"), &i.to_le_bytes(), TTL)
                        .expect("put");
                    c.release_commit_lease(&l, t * 100 + i).expect("release");
                }
            });
        }
    });
    assert_eq!(c.latest_seq_hint().expect("hint"), Some(719));
    let l = c
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    assert_eq!(l.fence, 161, "160 grants before this one");
}

#[test]
fn lease_is_shared_fairly_between_busy_coordinators() {
    share_the_lease_between_busy_coordinators(Duration::from_secs(2));
}

#[test]
fn lease_is_shared_fairly_between_busy_coordinators_that_poll() {
    // An I/O timeout too short for blocking waits: the waiters poll.
    share_the_lease_between_busy_coordinators(Duration::from_millis(400));
}

fn share_the_lease_between_busy_coordinators(io_timeout: Duration) {
    let server = RedisServer::start();
    let options = RedisOptions {
        io_timeout,
        ..server.options()
    };
    let coordinators: Vec<RedisCoordinator> = (0..3)
        .map(|_| RedisCoordinator::connect(&options, "db").expect("connect"))
        .collect();
    let run_for = Duration::from_secs(2);
    let start = Instant::now();
    // (grants, longest wait) per coordinator, each hammering the lease from its own thread:
    // acquire, hold about 1 ms, release, at once acquire again.
    let results: Vec<(u64, Duration)> = std::thread::scope(|s| {
        let threads: Vec<_> = coordinators
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let (mut grants, mut longest) = (0u64, Duration::ZERO);
                    while start.elapsed() < run_for {
                        let asked = Instant::now();
                        let l = c
                            .acquire_commit_lease(TTL, Duration::from_secs(10))
                            .expect("granted in turn");
                        longest = longest.max(asked.elapsed());
                        grants += 1;
                        std::thread::sleep(Duration::from_millis(1));
                        c.release_commit_lease(&l, grants).expect("release");
                    }
                    (grants, longest)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("worker thread"))
            .collect()
    });
    let total: u64 = results.iter().map(|r| r.0).sum();
    assert!(
        total >= 30,
        "only {total} grants in {run_for:?}: {results:?}"
    );
    for (grants, longest) in &results {
        assert!(
            *grants * 5 >= total,
            "unfair: {grants} of {total} grants ({results:?})"
        );
        assert!(
            *longest < Duration::from_secs(1),
            "waited {longest:?} ({results:?})"
        );
    }
}

/// Waits until `n` waiters are queued for the lease of database `db`.
fn wait_for_waiters(conn: &mut redis::Connection, n: usize) {
    let start = Instant::now();
    loop {
        let queued: usize = redis::cmd("ZCARD")
            .arg("sop:{db}:queue")
            .query(conn)
            .expect("ZCARD");
        if queued >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{queued} waiters queued, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn waiters_are_served_in_arrival_order_and_the_releaser_does_not_jump_the_queue() {
    let server = RedisServer::start();
    let [a, b, c] = ["a", "b", "c"].map(|_| connect(&server, "db"));
    let order = std::sync::Mutex::new(Vec::new());
    let mut conn = server
        .connection(Duration::from_secs(2))
        .expect("plain connection");
    let la = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    let take = |name: &'static str, c: &RedisCoordinator| {
        let l = c
            .acquire_commit_lease(TTL, Duration::from_secs(10))
            .expect("granted in turn");
        order.lock().expect("order").push(name);
        std::thread::sleep(Duration::from_millis(20));
        c.release_commit_lease(&l, 1).expect("release");
    };
    std::thread::scope(|s| {
        let tb = s.spawn(|| take("b", &b));
        wait_for_waiters(&mut conn, 1);
        let tc = s.spawn(|| take("c", &c));
        wait_for_waiters(&mut conn, 2);
        a.release_commit_lease(&la, 1).expect("release");
        // b and c are waiting: a caller that will not wait gets nothing, even right after
        // the release, and one that waits comes after them.
        let r = a.acquire_commit_lease(TTL, Duration::ZERO);
        assert!(is_timeout(&r), "a jumped the queue: {r:?}");
        take("a", &a);
        tb.join().expect("b");
        tc.join().expect("c");
    });
    assert_eq!(*order.lock().expect("order"), ["b", "c", "a"]);
}

#[test]
fn a_dead_waiter_at_the_head_of_the_queue_is_skipped_after_its_liveness_runs_out() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let b = connect(&server, "db");
    let la = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    // A waiter that queued first, counted as alive for 300 ms more, then stopped polling
    // (its process died): written the way the acquire script queues a waiter.
    let mut conn = server
        .connection(Duration::from_secs(2))
        .expect("plain connection");
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).expect("TIME");
    let now_ms = secs * 1000 + micros / 1000;
    redis::cmd("ZADD")
        .arg("sop:{db}:queue")
        .arg(0)
        .arg("dead")
        .query::<()>(&mut conn)
        .expect("ZADD");
    redis::cmd("ZADD")
        .arg("sop:{db}:live")
        .arg(now_ms + 300)
        .arg("dead")
        .query::<()>(&mut conn)
        .expect("ZADD");
    a.release_commit_lease(&la, 1).expect("release");

    let start = Instant::now();
    let lb = b
        .acquire_commit_lease(TTL, Duration::from_secs(10))
        .expect("granted once the dead waiter is skipped");
    let waited = start.elapsed();
    assert!(lb.fence > la.fence);
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "waited {waited:?} behind a waiter alive for 300 ms"
    );

    // A waiter that gives up leaves the queue: nothing is left of it once b releases.
    let r = a.acquire_commit_lease(TTL, Duration::from_millis(100));
    assert!(is_timeout(&r), "b holds it: {r:?}");
    b.release_commit_lease(&lb, 2).expect("release");
    let la = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("nobody waits: free at once");
    a.release_commit_lease(&la, 3).expect("release");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    keys.sort();
    // The dead waiter was woken by a's release: its wake list expires on its own.
    let (wake, rest): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|k| k.starts_with("sop:{db}:wake:"));
    assert_eq!(rest, ["sop:{db}:fence", "sop:{db}:seq"]);
    for k in wake {
        let pttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut conn).expect("PTTL");
        assert!((1..=1000).contains(&pttl), "{k} expires in {pttl} ms");
    }
}

#[test]
fn a_flush_while_waiting_does_not_strand_the_waiters() {
    let server = RedisServer::start();
    let a = connect(&server, "db");
    let waiters: Vec<RedisCoordinator> = (0..3).map(|_| connect(&server, "db")).collect();
    let la = a
        .acquire_commit_lease(TTL, Duration::ZERO)
        .expect("free lease");
    let fences: Vec<u64> = std::thread::scope(|s| {
        let threads: Vec<_> = waiters
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let start = Instant::now();
                    let l = c
                        .acquire_commit_lease(TTL, Duration::from_secs(10))
                        .expect("granted after the flush");
                    let waited = start.elapsed();
                    std::thread::sleep(Duration::from_millis(5));
                    c.release_commit_lease(&l, 1).expect("release");
                    (l.fence, waited)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // The lease, the fencing counter and the wait queue are all gone.
        server.flushall();
        threads
            .into_iter()
            .map(|t| {
                let (fence, waited) = t.join().expect("waiter thread");
                assert!(waited < Duration::from_secs(3), "waited {waited:?}");
                fence
            })
            .collect()
    });
    let mut sorted = fences.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        3,
        "one grant each, distinct fences: {fences:?}"
    );
    // The old holder cannot free anyone's lease, and a fresh grant still works.
    a.release_commit_lease(&la, 2).expect("stale release");
    let l = a
        .acquire_commit_lease(TTL, Duration::from_secs(1))
        .expect("free lease");
    assert!(l.fence > la.fence, "{} > {}", l.fence, la.fence);
}
