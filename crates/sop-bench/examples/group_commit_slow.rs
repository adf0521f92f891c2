//! Group commit on a slower device (ADR 0012): W4c's pattern (threads committing one insert
//! per durable transaction, disjoint keys) on a storage backend whose every sync takes D µs
//! longer than this machine's, as a SATA SSD's or a network disk's flush does.
//!
//! ```text
//! cargo run --release -p sop-bench --example group_commit_slow -- [DELAY_US] [THREADS] [COMMITS]
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use sop::storage::{FileStorage, OpenMode, Storage, StorageFile};
use sop::{Database, DatabaseOptions, StoreOptions, TransactionMode};

/// [`FileStorage`] whose syncs of files take `delay` longer.
#[derive(Debug)]
struct SlowSync {
    inner: FileStorage,
    delay: Duration,
}

#[derive(Debug)]
struct SlowFile {
    inner: Arc<dyn StorageFile>,
    delay: Duration,
}

impl Storage for SlowSync {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.open(path, mode)?,
            delay: self.delay,
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + std::fmt::Debug>> {
        self.inner.lock_exclusive(path)
    }
}

impl StorageFile for SlowFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()?;
        std::thread::sleep(self.delay);
        Ok(())
    }
    fn start_sync(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.start_sync(offset, len)
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

fn main() -> Result<()> {
    let arg = |i: usize, default: u64| -> Result<u64> {
        Ok(std::env::args().nth(i).map_or(Ok(default), |s| s.parse())?)
    };
    let delay = Duration::from_micros(arg(1, 1000)?);
    let threads = arg(2, 8)?;
    let commits = arg(3, 2000)?;
    let dir = tempfile::tempdir_in(".")?;
    let storage = Arc::new(SlowSync {
        inner: FileStorage::new(),
        delay,
    });
    let db = Database::open_with_storage(DatabaseOptions::new(dir.path()), storage)?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    tx.new_btree::<u64, Vec<u8>>("s", StoreOptions::default())?;
    tx.commit()?;
    let started = Instant::now();
    let per = commits / threads;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..per {
                    let tx = db.begin(TransactionMode::ForWriting)?;
                    let s = tx.open_btree::<u64, Vec<u8>>("s")?;
                    s.add(&(i * threads + t), &vec![7u8; 100])?;
                    tx.commit()?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a committer panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sync +{} µs, {threads} threads: {:.1}k commits/s",
        delay.as_micros(),
        (per * threads) as f64 / secs / 1e3
    );
    Ok(())
}
