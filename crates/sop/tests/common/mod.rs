//! Helpers shared by the integration tests that run threads against one database.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long a test's threads may take (seconds of work at most, even unoptimized).
pub const STALLED: Duration = Duration::from_secs(180);

/// Joins `threads` and returns their results (a thread's panic goes on in the caller),
/// failing the test when they have not all finished within [`STALLED`]: a commit parked for a
/// sync that no thread makes (a lost wakeup in group commit) would otherwise hang the test
/// run, up to CI's limit, instead of failing it.
pub fn join_all<T: Send + 'static>(threads: Vec<thread::JoinHandle<T>>) -> Vec<T> {
    let (done, joined) = mpsc::channel();
    thread::spawn(move || {
        let results: Vec<_> = threads.into_iter().map(|h| h.join()).collect();
        let _ = done.send(results);
    });
    joined
        .recv_timeout(STALLED)
        .unwrap_or_else(|_| {
            panic!(
                "threads still running after {STALLED:?}: a commit waits for a sync no thread makes"
            )
        })
        .into_iter()
        .map(|r| r.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .collect()
}
