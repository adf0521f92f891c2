//! `verify`: read every structure and check every checksum and B-tree invariant.

use std::cmp::Ordering;
use std::collections::HashSet;

use super::Shared;
use crate::btree::{Node, Order, ValueRef};
use crate::error::{Error, Result};
use crate::log::SEGMENT_HEADER;
use crate::log::record::{self, Kind};
use crate::registry::LogicalId;
use crate::state::{DbState, StoreMeta};
use crate::txn::load_node;

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Stores checked.
    pub stores: usize,
    /// Items found in all stores.
    pub items: u64,
    /// Nodes read.
    pub nodes: u64,
    /// Value blobs read.
    pub blobs: u64,
    /// Log segments scanned.
    pub segments: usize,
    /// Records scanned in them.
    pub records: u64,
    /// Every problem, with the file and offset where known. Empty when all is well.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(super) fn verify(shared: &Shared) -> Result<VerifyReport> {
    // Hold the commit lock so the log does not move while it is scanned.
    let ctx = shared.commit_lock()?;
    let (wseg, wend) = ctx.writer.position();
    let state = shared.state()?;
    let mut r = VerifyReport::default();
    scan_segments(shared, wseg, wend, &mut r)?;
    drop(ctx);
    let mut reached = HashSet::new();
    for meta in state.stores.values() {
        r.stores += 1;
        let order = Order {
            custom: match &meta.options.comparator {
                Some(name) => match shared.comparator(name) {
                    Ok(c) => Some(c),
                    Err(_) => {
                        r.problems.push(format!(
                            "store {}: comparator {name:?} not registered; order not checked",
                            meta.name
                        ));
                        None
                    }
                },
                None => None,
            },
            unique: meta.options.is_unique,
        };
        let mut items = 0;
        if meta.root != 0 {
            let mut w = Walk {
                shared,
                state: &state,
                meta,
                order,
                report: &mut r,
                reached: &mut reached,
                leaf_depth: None,
                items: &mut items,
            };
            w.node(meta.root, 0, None, None);
        }
        if items != meta.count {
            r.problems.push(format!(
                "store {}: catalog count {} but {} items found",
                meta.name, meta.count, items
            ));
        }
        r.items += items;
    }
    for (id, e) in state.registry.iter() {
        if !reached.contains(&id) {
            r.problems.push(format!(
                "registry entry {id} (store {}, {}@{}) is not reachable from any store",
                e.store,
                shared.files.path(e.loc.seg).display(),
                e.loc.off
            ));
        }
    }
    if let Some(e) = shared.background_error() {
        r.problems
            .push(format!("housekeeping after a commit failed: {e}"));
    }
    Ok(r)
}

fn scan_segments(shared: &Shared, wseg: u32, wend: u64, r: &mut VerifyReport) -> Result<()> {
    for seg in shared.files.list()? {
        r.segments += 1;
        let path = shared.files.path(seg);
        let f = shared.files.file(seg)?;
        let len = f.len().map_err(|e| Error::io(&path, e))?;
        let len = if seg == wseg { wend.min(len) } else { len };
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        f.read_at(&mut buf, 0).map_err(|e| Error::io(&path, e))?;
        if let Err(e) = shared.files.check_header(seg, &buf) {
            r.problems.push(e.to_string());
            continue;
        }
        let mut pos = SEGMENT_HEADER as usize;
        while pos < buf.len() {
            match record::check(&buf[pos..]) {
                Ok(_) => {
                    r.records += 1;
                    pos += record::framed_len(record::header(&buf[pos..]).map_or(0, |h| h.len));
                }
                Err(why) => {
                    r.problems.push(format!(
                        "corruption in {} at offset {pos}: {why}",
                        path.display()
                    ));
                    break;
                }
            }
        }
    }
    Ok(())
}

type Bound<'a> = Option<(&'a [u8], u128)>;

struct Walk<'a> {
    shared: &'a Shared,
    state: &'a DbState,
    meta: &'a StoreMeta,
    order: Order,
    report: &'a mut VerifyReport,
    reached: &'a mut HashSet<LogicalId>,
    leaf_depth: Option<usize>,
    items: &'a mut u64,
}

impl Walk<'_> {
    fn problem(&mut self, id: LogicalId, what: String) {
        self.report
            .problems
            .push(format!("store {} node {id}: {what}", self.meta.name));
    }

    fn in_bounds(&self, k: &[u8], i: u128, lo: Bound<'_>, hi: Bound<'_>) -> bool {
        lo.is_none_or(|(lk, li)| self.order.full(k, i, lk, li) != Ordering::Less)
            && hi.is_none_or(|(hk, hi)| self.order.full(k, i, hk, hi) == Ordering::Less)
    }

    fn node(&mut self, id: LogicalId, depth: usize, lo: Bound<'_>, hi: Bound<'_>) {
        if !self.reached.insert(id) {
            self.problem(id, "reached twice".into());
            return;
        }
        let node = match load_node(self.shared, self.state, self.meta.id, id) {
            Ok((n, _, _)) => n,
            Err(e) => {
                self.problem(id, e.to_string());
                return;
            }
        };
        self.report.nodes += 1;
        if node.len() > self.meta.options.slot_length {
            self.problem(
                id,
                format!("holds {} entries, more than slot_length", node.len()),
            );
        }
        match &*node {
            Node::Leaf(items) => {
                match self.leaf_depth {
                    Some(d) if d != depth => {
                        self.problem(id, format!("leaf at depth {depth}, others at {d}"))
                    }
                    _ => self.leaf_depth = Some(depth),
                }
                if items.is_empty() && depth > 0 {
                    self.problem(id, "empty leaf below the root".into());
                }
                for (i, it) in items.iter().enumerate() {
                    if !self.in_bounds(&it.key, it.id, lo, hi) {
                        self.problem(id, format!("item {i} lies outside its parent's separators"));
                    }
                    if let Some(prev) = i.checked_sub(1).and_then(|p| items.get(p))
                        && self.order.full(&prev.key, prev.id, &it.key, it.id) != Ordering::Less
                    {
                        self.problem(id, format!("items {} and {i} are out of order", i - 1));
                    }
                    if let ValueRef::Blob { id: bid, len } = &it.value {
                        self.blob(*bid, *len);
                    }
                }
                *self.items += items.len() as u64;
            }
            Node::Internal { seps, children } => {
                for (i, child) in children.iter().enumerate() {
                    let clo = if i == 0 {
                        lo
                    } else {
                        seps.get(i - 1).map(|s| (&*s.key, s.id))
                    };
                    let chi = seps.get(i).map(|s| (&*s.key, s.id)).or(hi);
                    self.node(*child, depth + 1, clo, chi);
                }
            }
        }
    }

    fn blob(&mut self, id: LogicalId, len: u64) {
        self.reached.insert(id);
        self.report.blobs += 1;
        let Some(e) = self.state.registry.get(id).copied() else {
            self.problem(id, "value blob missing from the registry".into());
            return;
        };
        match self.shared.files.read(e.loc) {
            Ok(rec) => {
                let ok = rec.kind == Kind::Blob
                    && record::parse_image(rec.payload())
                        .is_ok_and(|(img, body)| img.logical == id && body.len() as u64 == len);
                if !ok {
                    self.problem(id, "value blob does not match its reference".into());
                }
            }
            Err(e) => self.problem(id, e.to_string()),
        }
    }
}
