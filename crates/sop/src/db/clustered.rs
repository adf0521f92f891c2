//! Clustered mode on the database handle: opening (alone or joining), catching up with other
//! processes' commits, the commit point, id allocation, checkpoints.
//!
//! Invariants (see `docs/adr/0004-clustered-commit-protocol.md`):
//! - every process holds `sop.lock` shared; a standalone owner holds it exclusively, so the two
//!   modes never run on a folder at once; opening and closing are serialized by `open.lock`;
//! - a process that finds itself alone (the exclusive lock is free) recovers, writes a
//!   clustered checkpoint (segment 0) and only then deletes markers, claims and empty
//!   segments: nothing another process could need;
//! - the state moves forward only by applying commit `seq + 1` named by its marker, whether
//!   this process or another wrote it;
//! - a commit is acknowledged only after its record is durable, its marker created (the
//!   decision) and the marker folder synced.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{
    CommitCtx, Database, LOCK_FILE, LOG_DIR, OPEN_LOCK, Shared, Space, load_options, lock_error,
    lock_with_wait, prepare_folder,
};
use crate::cluster::{self, Cluster, ClusterOptions, Coordinator, Lease, claims, markers, procs};
use crate::error::{Error, Result};
use crate::log::{self, Checkpoint, LogFiles, LogWriter, SEGMENT_HEADER};
use crate::options::{DatabaseOptions, DatabaseType};
use crate::registry::Location;
use crate::state::DbState;
use crate::storage::{FileStorage, Storage};
use crate::txn::{HistEntry, StoreWrites};

/// Applies every commit named by a marker after `state.seq`; returns how many.
fn replay(files: &LogFiles, markers_dir: &std::path::Path, state: &mut DbState) -> Result<u64> {
    let mut n = 0;
    while let Some(rec) = cluster::next_commit(files, markers_dir, state.seq)? {
        state.apply(&rec);
        n += 1;
    }
    Ok(n)
}

fn checkpoint_tmp(instance: u64) -> String {
    format!("checkpoint.{instance:016x}.tmp")
}

/// Standalone open of a folder last used in clustered mode: replays the markers after the
/// clustered checkpoint, starts a log of its own after every existing segment, and writes a
/// standalone checkpoint there; then the markers and claims are dropped.
pub(super) fn leave_cluster(
    files: &Arc<LogFiles>,
    dir: &std::path::Path,
    ckpt: Option<Checkpoint>,
) -> Result<(log::Recovered, Option<(u64, u32)>)> {
    let storage = Arc::clone(files.storage());
    let Some(c) = ckpt else {
        return Err(Error::InvalidArgument("no checkpoint to leave".into()));
    };
    let mut state = c.state;
    let mdir = dir.join(markers::DIR);
    replay(files, &mdir, &mut state)?;
    let last = files.list()?.last().copied().unwrap_or(0);
    let (seg, _) = files.create_next(last)?;
    log::write_checkpoint(&*storage, dir, &state, seg, SEGMENT_HEADER, &c.in_doubt)?;
    markers::remove_upto(&*storage, &mdir, u64::MAX)?;
    claims::remove_all(&*storage, &dir.join(claims::DIR))?;
    // The clustered processes are all gone (this open holds the folder exclusively).
    procs::live(&*storage, &dir.join(procs::DIR))?;
    let info = Some((state.seq, seg));
    Ok((
        log::Recovered {
            state,
            seg,
            end: SEGMENT_HEADER,
            replayed: 0,
            truncated: 0,
            in_doubt: c.in_doubt,
        },
        info,
    ))
}

impl Database {
    /// Opens the database in `opts.path` in clustered mode: several processes (each with its
    /// own handle) may open the folder at once and run transactions on it concurrently, with
    /// the same validation and merge rules as between threads. `connect` is called with the
    /// database id (a random id kept in the folder) and returns the coordinator, namespaced by
    /// that id (see the `sop-redis` crate for Redis).
    ///
    /// The folder is the same as in standalone mode: a database can be reopened in either
    /// mode, but not in both at once ([`Error::Locked`]).
    ///
    /// # Errors
    /// As [`Database::open`]; [`Error::Coordinator`] or [`Error::Timeout`] when the coordinator
    /// cannot be reached; [`Error::InvalidArgument`] when in-doubt two-phase transactions must
    /// first be resolved in standalone mode.
    pub fn open_clustered(
        opts: DatabaseOptions,
        cluster: ClusterOptions,
        connect: impl FnOnce(&str) -> Result<Arc<dyn Coordinator>>,
    ) -> Result<Database> {
        let storage: Arc<dyn Storage> = if opts.direct_io {
            Arc::new(FileStorage::direct())
        } else {
            Arc::new(FileStorage::new())
        };
        let mut opts = opts;
        opts.db_type = DatabaseType::Clustered;
        opts.validate()?;
        let dir = opts.path.clone();
        prepare_folder(&opts, &*storage)?;
        let open_lock = lock_with_wait(&*storage, &dir.join(OPEN_LOCK), cluster.open_wait)?;
        let log_dir = dir.join(LOG_DIR);
        let mdir = dir.join(markers::DIR);
        let files = Arc::new(LogFiles::new(Arc::clone(&storage), log_dir.clone()));
        let instance = fastrand::u64(..);
        let pdir = dir.join(procs::DIR);
        let registration;
        let (effective, state, lock) = match storage.lock_exclusive(&dir.join(LOCK_FILE)) {
            Ok(exclusive) => {
                let effective = load_options(&opts, &*storage, true)?;
                for d in [&log_dir, &mdir] {
                    storage.create_dir_all(d).map_err(|e| Error::io(d, e))?;
                }
                storage.sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
                let state = recover_alone(&files, &dir, instance)?;
                registration = Some(procs::register(&*storage, &pdir, instance)?);
                drop(exclusive);
                let shared = storage
                    .lock_shared(&dir.join(LOCK_FILE))
                    .map_err(|e| lock_error(&dir, e))?;
                (effective, state, shared)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let shared = storage
                    .lock_shared(&dir.join(LOCK_FILE))
                    .map_err(|e| lock_error(&dir, e))?;
                let effective = load_options(&opts, &*storage, false)?;
                // Registered (horizon 0) before reading the checkpoint: nothing this process
                // may need can be reclaimed from now on.
                registration = Some(procs::register(&*storage, &pdir, instance)?);
                let ckpt = log::read_checkpoint(&*storage, &dir)?;
                let mut state = match ckpt {
                    Some(c) if c.seg == 0 => c.state,
                    _ => {
                        return Err(Error::corruption(
                            dir.join("checkpoint.sop"),
                            0,
                            "other processes have the database open in clustered mode, \
                             but its checkpoint is not a clustered one",
                        ));
                    }
                };
                replay(&files, &mdir, &mut state)?;
                (effective, state, shared)
            }
            Err(e) => return Err(Error::io(dir.join(LOCK_FILE), e)),
        };
        let db_id = cluster::database_id(&*storage, &dir, false)?;
        let coordinator = connect(&db_id)?;
        let last = files.list()?.last().copied().unwrap_or(0);
        let (seg, file) = files.create_next(last)?;
        let info = procs::Info {
            horizon: state.seq,
            writer: seg,
        };
        procs::publish(&*storage, &pdir, instance, info)?;
        drop(open_lock);
        let writer = LogWriter::new(
            Arc::clone(&files),
            seg,
            file,
            SEGMENT_HEADER,
            effective.segment_bytes,
            effective.durability,
            state.seq,
        )
        .with_shared_namespace();
        let mut space = Space::rebuild(&files, &state, None)?;
        space.set_clustered();
        let c = Cluster {
            coordinator,
            opts: cluster,
            db_id,
            instance,
            markers: mdir,
            claims: dir.join(claims::DIR),
            ids: Mutex::new(Default::default()),
            procs: pdir,
            registration: Mutex::new(registration),
            published: Mutex::new((info, std::time::Instant::now())),
            markers_unsynced: std::sync::atomic::AtomicBool::new(false),
        };
        let rec = log::Recovered {
            state,
            seg,
            end: SEGMENT_HEADER,
            replayed: 0,
            truncated: 0,
            in_doubt: BTreeMap::new(),
        };
        Database::assemble(effective, storage, files, rec, writer, space, Some(c), lock)
    }

    /// The database id used as the coordinator namespace (clustered mode), if any.
    #[must_use]
    pub fn cluster_id(&self) -> Option<&str> {
        self.shared.cluster.as_ref().map(|c| c.db_id.as_str())
    }
}

/// Recovery by the only process using the folder: rebuild the state (from a clustered
/// checkpoint and the markers, or from a standalone checkpoint and log), make it the
/// clustered checkpoint, then drop what no process can need any more.
fn recover_alone(files: &Arc<LogFiles>, dir: &std::path::Path, instance: u64) -> Result<DbState> {
    let storage = Arc::clone(files.storage());
    let mdir = dir.join(markers::DIR);
    let ckpt = log::read_checkpoint(&*storage, dir)?;
    let (state, in_doubt) = match ckpt {
        Some(c) if c.seg == 0 => {
            let mut state = c.state;
            replay(files, &mdir, &mut state)?;
            (state, c.in_doubt)
        }
        other => {
            let rec = log::recover(files, other)?;
            (rec.state, rec.in_doubt)
        }
    };
    if !in_doubt.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the database has {} in-doubt two-phase transaction(s); open it in standalone mode \
             and resolve them (Database::in_doubt / resolve_in_doubt) before clustered mode",
            in_doubt.len()
        )));
    }
    cluster::database_id(&*storage, dir, true)?;
    settle_alone(files, dir, &state, instance)?;
    Ok(state)
}

/// Work only a process holding the folder alone may do: make `state` the clustered
/// checkpoint, then delete the markers and claims it covers and the segments it does not
/// reference (dead processes' unpublished tails, garbage).
fn settle_alone(
    files: &Arc<LogFiles>,
    dir: &std::path::Path,
    state: &DbState,
    instance: u64,
) -> Result<()> {
    let storage = Arc::clone(files.storage());
    log::write_checkpoint_via(
        &*storage,
        dir,
        &checkpoint_tmp(instance),
        state,
        0,
        0,
        &BTreeMap::new(),
    )?;
    markers::remove_upto(&*storage, &dir.join(markers::DIR), u64::MAX)?;
    claims::remove_all(&*storage, &dir.join(claims::DIR))?;
    // Every other process is gone: their registrations are stale.
    let _ = procs::live(&*storage, &dir.join(procs::DIR))?;
    let mut live: BTreeMap<u32, u64> = BTreeMap::new();
    for (_, e) in state.registry.iter() {
        for loc in e.records() {
            *live.entry(loc.seg).or_default() += 1;
        }
    }
    let mut removed = false;
    let segs = files.list()?;
    // The highest segment stays, so segment numbers (and the cache keys made of them) are
    // never reused.
    let keep = segs.last().copied();
    for seg in segs {
        if !live.contains_key(&seg) && Some(seg) != keep {
            files.remove(seg)?;
            removed = true;
        }
    }
    if removed {
        storage
            .sync_dir(files.dir())
            .map_err(|e| Error::io(files.dir(), e))?;
    }
    Ok(())
}

/// A clean close of a clustered handle: if no other process has the folder open, settle it
/// (checkpoint, drop markers, claims and unreferenced segments) so the next open replays
/// nothing. Best effort: the markers already hold every commit.
pub(super) fn close(shared: &Shared) -> Result<()> {
    let Some(c) = &shared.cluster else {
        return Ok(());
    };
    let dir = &shared.opts.path;
    let storage = &*shared.storage;
    let _open = lock_with_wait(storage, &dir.join(OPEN_LOCK), c.opts.open_wait)?;
    let mut lock = shared.lock.lock().map_err(super::poisoned)?;
    // Give up the shared lock to learn whether anyone else holds it.
    drop(lock.take());
    let Ok(_alone) = storage.lock_exclusive(&dir.join(LOCK_FILE)) else {
        return Ok(());
    };
    let mut ctx = shared.commit_lock()?;
    catch_up(shared, &mut ctx, true)?;
    ctx.writer.sync_always()?;
    drop(c.registration.lock().map_err(super::poisoned)?.take());
    settle_alone(&shared.files, dir, &ctx.latest, c.instance)
}

/// Hands out the next id of `space` from this handle's claimed range, claiming a new chunk
/// (above the committed high-water mark) when it is used up.
pub(super) fn allocate(shared: &Shared, space: claims::Space) -> Result<u64> {
    let Some(c) = &shared.cluster else {
        return Err(Error::InvalidArgument("not clustered".into()));
    };
    let mut ids = c.ids.lock().map_err(super::poisoned)?;
    let r = match space {
        claims::Space::Logical => &mut ids.0,
        claims::Space::Store => &mut ids.1,
    };
    if r.next >= r.end {
        let st = shared.state()?;
        let floor = match space {
            claims::Space::Logical => st.next_logical,
            claims::Space::Store => u64::from(st.next_store),
        };
        *r = claims::claim(&*shared.storage, &c.claims, space, floor)?;
    }
    let id = r.next;
    r.next += 1;
    Ok(id)
}

/// Applies the commits other processes made after `ctx.latest` (in marker order) and
/// publishes the result. With `sync`, the markers found are made durable first (for readers:
/// nothing they see can vanish in a power cut); a committer passes `false`, because its own
/// sync of the marker folder, before it acknowledges, covers every marker before its own.
pub(crate) fn catch_up(shared: &Shared, ctx: &mut CommitCtx, sync: bool) -> Result<()> {
    let Some(c) = &shared.cluster else {
        return Ok(());
    };
    let mut next: Option<DbState> = None;
    loop {
        let after = next.as_ref().map_or(ctx.latest.seq, |s| s.seq);
        let Some(rec) = cluster::next_commit(&shared.files, &c.markers, after)? else {
            break;
        };
        if next.is_none() {
            c.markers_unsynced.store(true, Ordering::Relaxed);
        }
        let st = next.get_or_insert_with(|| (*ctx.latest).clone());
        let replaced = st.apply(&rec);
        shared.cache.forget_replaced(&replaced, &rec.updates);
        ctx.space
            .on_commit(&replaced, &rec.updates, rec.seq, ctx.writer.position().0);
        if !rec.writes.is_empty() {
            ctx.history.push_back(HistEntry {
                seq: rec.seq,
                stores: rec
                    .writes
                    .iter()
                    .map(|w| {
                        StoreWrites::sorted(
                            w.store,
                            w.keys
                                .iter()
                                .map(|k| crate::btree::KeyBuf::new(k))
                                .collect(),
                            w.count_changed,
                        )
                    })
                    .collect(),
            });
        }
    }
    if sync && ctx.writer.is_durable() && c.markers_unsynced.swap(false, Ordering::Relaxed) {
        // Readers see other processes' commits only once their markers are durable.
        if let Err(e) = shared.storage.sync_dir(&c.markers) {
            c.markers_unsynced.store(true, Ordering::Relaxed);
            return Err(Error::io(&c.markers, e));
        }
    }
    if let Some(st) = next {
        let st = Arc::new(st);
        ctx.latest = Arc::clone(&st);
        shared.mark_synced(st)?;
        crate::txn::trim_history(shared, ctx);
    }
    Ok(())
}

/// The commit point of a clustered commit whose record (commit `seq`, at `loc`) was just
/// written: make it durable, check the lease is still held, create the marker, sync it.
pub(crate) fn commit_point(
    shared: &Shared,
    ctx: &mut CommitCtx,
    lease: &Lease,
    seq: u64,
    loc: Location,
) -> Result<()> {
    let Some(c) = &shared.cluster else {
        return Err(Error::InvalidArgument("not clustered".into()));
    };
    ctx.writer.sync(seq)?;
    // Fencing, first line: a committer that lost its lease does not go on. (The marker below
    // is the real guard: it is created only if absent.) A lease younger than a quarter of its
    // time to live is trusted on the local clock (saves a round trip); an older one is
    // renewed; when the coordinator cannot answer, it is trusted while its time to live has
    // not run out on the local clock.
    let held = if lease.granted.elapsed() < lease.ttl / 4 {
        true
    } else {
        match c.coordinator.renew_commit_lease(lease, c.opts.lease_ttl) {
            Ok(held) => held,
            Err(_) => lease.is_fresh(),
        }
    };
    if !held {
        return Err(Error::Conflict(format!(
            "the commit lease expired before commit {seq} reached its commit point; retry"
        )));
    }
    stall_for_tests("SOP_TEST_STALL_BEFORE_MARKER");
    if loc.seg != c.published.lock().map_err(super::poisoned)?.0.writer {
        // A new segment: others must know it is being written before anything in it can
        // become garbage in their eyes.
        publish_info(shared, ctx, true)?;
    }
    if !markers::create(&*shared.storage, &c.markers, seq, loc)? {
        return Err(Error::Conflict(format!(
            "commit {seq} was decided by another process first; retry"
        )));
    }
    stall_for_tests("SOP_TEST_STALL_AFTER_MARKER");
    Ok(())
}

/// Tests that kill a process in the middle of a commit (feature `testing`): with the named
/// environment variable set, the committing thread stops here for good, holding the lease.
#[cfg(feature = "testing")]
fn stall_for_tests(var: &str) {
    if std::env::var_os(var).is_some() {
        eprintln!("sop: stalled at {var}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

#[cfg(not(feature = "testing"))]
fn stall_for_tests(_var: &str) {}

/// Makes the markers created so far durable (after the lease is released: a process that
/// builds on them syncs the folder first). A failure poisons the handle: the commit's outcome
/// is unknown.
pub(crate) fn sync_markers(shared: &Shared, ctx: &mut CommitCtx) -> Result<()> {
    let Some(c) = &shared.cluster else {
        return Ok(());
    };
    if !ctx.writer.is_durable() {
        return Ok(());
    }
    if let Err(e) = shared.storage.sync_dir(&c.markers) {
        let err = Error::io(&c.markers, e);
        ctx.writer.poison_with(&err);
        return Err(err);
    }
    c.markers_unsynced.store(false, Ordering::Relaxed);
    Ok(())
}

/// Writes a clustered checkpoint of the latest state (segment 0: recovery follows markers).
pub(crate) fn checkpoint(shared: &Shared, ctx: &mut CommitCtx) -> Result<()> {
    let Some(c) = &shared.cluster else {
        return Err(Error::InvalidArgument("not clustered".into()));
    };
    ctx.writer.sync_always()?;
    let dir = &shared.opts.path;
    // Checkpoints only move forward (segment reclamation relies on the one on disk), so
    // writers take turns and an older state never replaces a newer one.
    let _turn = lock_with_wait(
        &*shared.storage,
        &dir.join(CHECKPOINT_LOCK),
        c.opts.open_wait,
    )?;
    if log::peek_seq(&*shared.storage, dir)?.is_none_or(|s| s < ctx.latest.seq) {
        log::write_checkpoint_via(
            &*shared.storage,
            dir,
            &checkpoint_tmp(c.instance),
            &ctx.latest,
            0,
            0,
            &BTreeMap::new(),
        )?;
    }
    ctx.writer.since_checkpoint = 0;
    Ok(())
}

/// Taken while a clustered checkpoint is written.
const CHECKPOINT_LOCK: &str = "checkpoint.lock";

/// Publishes this process's horizon and writer segment (at most once a second unless
/// `force`).
pub(crate) fn publish_info(shared: &Shared, ctx: &CommitCtx, force: bool) -> Result<()> {
    let Some(c) = &shared.cluster else {
        return Ok(());
    };
    let mut p = c.published.lock().map_err(super::poisoned)?;
    if !force && p.1.elapsed() < std::time::Duration::from_secs(1) {
        return Ok(());
    }
    let published = shared.published_seq();
    let info = procs::Info {
        horizon: shared.oldest_snapshot().unwrap_or(u64::MAX).min(published),
        writer: ctx.writer.position().0,
    };
    procs::publish(&*shared.storage, &c.procs, c.instance, info)?;
    *p = (info, std::time::Instant::now());
    ctx.space.forget_garbage(&shared.files, info.writer)
}

/// Reclaims the segments that every live process has moved past and the checkpoint on disk
/// no longer references (run after a clustered checkpoint).
pub(crate) fn collect(shared: &Shared, ctx: &mut CommitCtx) -> Result<usize> {
    let Some(c) = &shared.cluster else {
        return Ok(0);
    };
    publish_info(shared, ctx, true)?;
    let mut upto = log::peek_seq(&*shared.storage, &shared.opts.path)?.unwrap_or(0);
    let mut keep = vec![ctx.writer.position().0];
    for info in procs::live(&*shared.storage, &c.procs)? {
        let Some(info) = info else {
            // A live process whose horizon cannot be read: reclaim nothing.
            return Ok(0);
        };
        upto = upto.min(info.horizon);
        keep.push(info.writer);
    }
    ctx.space.collect_clustered(&shared.files, upto, &keep)
}
