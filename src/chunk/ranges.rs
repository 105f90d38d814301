//! A set of chunk indices kept as sorted, disjoint, half-open ranges. Acknowledgements of one
//! file arrive almost in order, so a file of 40,000 chunks is typically one or two ranges:
//! small in memory and small in a state file, however large the file.

use serde::{Deserialize, Serialize};

/// Chunk indices (0-based) as sorted, disjoint, non-adjacent `[start, end)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one index.
    pub fn insert(&mut self, index: u64) {
        self.insert_range(index, index + 1);
    }

    /// Adds `[start, end)`, merging with overlapping or adjacent ranges.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Fast path for in-order acknowledgements: extend the last range.
        if let Some(last) = self.ranges.last_mut() {
            if start >= last.0 && start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
        }
        // First range that ends at or after `start` (could touch it).
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        // Ranges from `first` that begin at or before `end` merge with it.
        let mut last = first;
        let (mut s, mut e) = (start, end);
        while last < self.ranges.len() && self.ranges[last].0 <= end {
            s = s.min(self.ranges[last].0);
            e = e.max(self.ranges[last].1);
            last += 1;
        }
        self.ranges.splice(first..last, [(s, e)]);
    }

    /// Adds every index of `other`.
    pub fn union(&mut self, other: &RangeSet) {
        for &(s, e) in &other.ranges {
            self.insert_range(s, e);
        }
    }

    /// True when `index` is in the set.
    pub fn contains(&self, index: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, e)| e <= index);
        self.ranges.get(i).is_some_and(|&(s, _)| s <= index)
    }

    /// Number of indices in the set.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges (what memory and state size depend on).
    pub fn n_ranges(&self) -> usize {
        self.ranges.len()
    }

    /// The `[start, end)` ranges of `0..n` that are NOT in the set, in order.
    pub fn missing(&self, n: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.ranges {
            if s >= n {
                break;
            }
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < n {
            out.push((at, n));
        }
        out
    }

    /// True when the stored ranges are well formed (sorted, disjoint, non-adjacent,
    /// non-empty): a state file read back from disk is checked with this.
    pub fn is_valid(&self) -> bool {
        self.ranges.iter().all(|&(s, e)| s < e) && self.ranges.windows(2).all(|w| w[0].1 < w[1].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_any_order_and_reports_gaps() {
        let mut set = RangeSet::new();
        for i in [0, 1, 2, 5, 7, 6, 10, 3] {
            set.insert(i);
        }
        assert_eq!(set.ranges, [(0, 4), (5, 8), (10, 11)]);
        assert!(set.contains(3) && set.contains(7) && !set.contains(4) && !set.contains(9));
        assert_eq!(set.count(), 8);
        assert_eq!(set.missing(12), [(4, 5), (8, 10), (11, 12)]);
        set.insert(4);
        set.insert_range(8, 10);
        assert_eq!(set.ranges, [(0, 11)]);
        assert_eq!(set.missing(11), []);
        assert_eq!(RangeSet::new().missing(3), [(0, 3)]);
        assert!(set.is_valid());
    }

    #[test]
    fn forty_thousand_in_order_acks_are_one_range_and_round_trip() {
        let mut set = RangeSet::new();
        for i in 0..40_000 {
            set.insert(i);
        }
        assert_eq!(set.n_ranges(), 1);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[[0,40000]]");
        let back: RangeSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        let bad: RangeSet = serde_json::from_str("[[5,3]]").unwrap();
        assert!(!bad.is_valid());
    }
}
