//! Clustered mode: several processes (each with its own `Database` handle) on one folder.
//!
//! See `docs/adr/0004-clustered-commit-protocol.md`. In short: every process appends to log
//! segments it created itself (segment numbers are claimed by exclusive file creation), and the
//! order of commits is decided by *commit markers*: `commits/<seq>` is a symbolic link naming
//! the location of commit `seq`'s record, created only if absent, so for every `seq` exactly
//! one process wins, whatever the coordinator says. Processes catch up by following the
//! markers. The coordinator (Redis) serializes committers with a fenced lease so they rarely
//! race, and keeps the L2 cache; it holds no source of truth.

mod coordinator;

pub use coordinator::{Coordinator, Lease, LocalCoordinator};
