//! The log: node images, value blobs and commit records appended to segment files, the
//! checkpoint, and recovery.
//!
//! ```text
//! <db>/log/0000000001.seg   segment: 32-byte header, then 8-byte aligned records
//! <db>/checkpoint.sop       catalog + registry as of commit `seq`, and the log position after it
//! ```
//!
//! A commit appends its images and then its commit record in one write, and syncs once: the
//! commit record is the single commit point. Recovery loads the checkpoint and applies every
//! valid commit record after its position; the first invalid record of the last segment ends
//! the log (a torn tail from a crash during an unacknowledged commit) unless a commit of a
//! commit written after the bad bytes were known durable follows it, which proves real corruption and is reported as such.

mod checkpoint;
mod files;
pub mod record;
mod recovery;
mod writer;

pub use checkpoint::{
    Checkpoint, FORMAT as CHECKPOINT_FORMAT, peek_seq, read_checkpoint, write_checkpoint,
    write_checkpoint_via,
};
pub use files::{LogFiles, RecordBuf, SEGMENT_HEADER};
pub use recovery::{Recovered, recover};
pub use writer::LogWriter;
