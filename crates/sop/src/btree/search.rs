//! The search every node lookup ends in: the first position in a sorted run where a
//! monotone predicate turns false, written out by the macro [`first_not!`] in its caller.
//!
//! Invariant: the predicate is true on a prefix of `0..n` and false on the rest; the macro
//! returns the length of that prefix, probing each index at most once and never
//! outside `0..n`.

/// The first index in `0..n` where `$below` (an expression of the index `$i`) is false
/// (`$below` is true, then false): a binary search written out in its caller, comparisons
/// included (a closure here was not always inlined, costing a call per probe). The loop
/// narrows by halves with a select, not a branch on the comparison (whose outcome is a coin
/// flip for the predictor).
///
/// A four-way variant (three independent probes a round, so their loads overlap) was
/// measured too: more instructions per search and no faster on W1, so halving it is.
macro_rules! first_not {
    ($n:expr, |$i:ident| $below:expr) => {{
        let n: usize = $n;
        if n == 0 {
            0
        } else {
            // The answer lies in base..=base + size.
            let (mut base, mut size) = (0usize, n);
            while size > 1 {
                let half = size / 2;
                let mid = base + half;
                let below = {
                    let $i = mid;
                    $below
                };
                base = std::hint::select_unpredictable(below, mid, base);
                size -= half;
            }
            let $i = base;
            base + usize::from($below)
        }
    }};
}
