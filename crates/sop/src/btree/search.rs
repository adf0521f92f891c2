//! The search every node lookup ends in: the first position in a sorted run where a
//! monotone predicate turns false, written out by the macro [`first_not!`] in its caller.
//!
//! Invariant: the predicate is true on a prefix of `0..n` and false on the rest; the macro
//! returns the length of that prefix, probing each index at most once per round and never
//! outside `0..n`.

/// The first index in `0..n` where `$below` (an expression of the index `$i`) is false
/// (`$below` is true, then false): a search written out in its caller, comparisons included
/// (a closure here was not always inlined, costing a call per probe).
///
/// Each round probes three points that split the range in four, and narrows to one quarter
/// with selects, not branches (the outcome of a comparison is a coin flip for the
/// predictor). The three probes of a round do not depend on each other, so their loads
/// overlap: a node of 64 keys costs three rounds of loads where halving costs six, and a
/// search is bound by that chain of loads (node keys are rarely all in L1).
macro_rules! first_not {
    ($n:expr, |$i:ident| $below:expr) => {{
        let n: usize = $n;
        if n == 0 {
            0
        } else {
            // The answer lies in base..=base + size, and every index below base is below.
            let (mut base, mut size) = (0usize, n);
            while size > 3 {
                let q = size / 4;
                let b1 = {
                    let $i = base + q;
                    $below
                };
                let b2 = {
                    let $i = base + 2 * q;
                    $below
                };
                let b3 = {
                    let $i = base + 3 * q;
                    $below
                };
                // Below is monotone: the count of probes below is the quarter to keep.
                let k = usize::from(b1) + usize::from(b2) + usize::from(b3);
                base += k * q;
                size = std::hint::select_unpredictable(b3, size - 3 * q, q);
            }
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
