//! A set of disjoint, merged half-open ranges of u64 (GFNs here). Every operation costs
//! O(log n + pieces touched), never O(length), so a 64 GiB conversion costs what a 2 MiB one does.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end, disjoint and non-adjacent.
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn contains(&self, x: u64) -> bool {
        self.map.range(..=x).next_back().is_some_and(|(_, &e)| x < e)
    }

    /// Whether every point of `[s, e)` is in the set.
    pub fn covers(&self, s: u64, e: u64) -> bool {
        s >= e || self.map.range(..=s).next_back().is_some_and(|(_, &end)| end >= e)
    }

    /// Whether any point of `[s, e)` is in the set.
    pub fn intersects(&self, s: u64, e: u64) -> bool {
        if s >= e {
            return false;
        }
        if self.contains(s) {
            return true;
        }
        self.map.range(s..e).next().is_some()
    }

    /// `Some(true)` if all of `[s, e)` is in the set, `Some(false)` if none is, `None` if mixed.
    pub fn uniform(&self, s: u64, e: u64) -> Option<bool> {
        if self.covers(s, e) {
            Some(true)
        } else if !self.intersects(s, e) {
            Some(false)
        } else {
            None
        }
    }

    /// The first point in `(s, e)` whose membership differs from `s`'s, or `e`.
    pub fn next_change(&self, s: u64, e: u64) -> u64 {
        if let Some((_, &end)) = self.map.range(..=s).next_back().filter(|(_, &end)| s < end) {
            return end.min(e);
        }
        self.map.range(s..e).next().map(|(&k, _)| k).unwrap_or(e)
    }

    pub fn insert(&mut self, mut s: u64, mut e: u64) {
        if s >= e {
            return;
        }
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
            }
        }
        let inside: Vec<u64> = self.map.range(s..=e).map(|(&k, _)| k).collect();
        for k in inside {
            let ke = self.map.remove(&k).expect("present");
            e = e.max(ke);
        }
        self.map.insert(s, e);
    }

    pub fn remove(&mut self, s: u64, e: u64) {
        if s >= e {
            return;
        }
        if let Some((&ps, &pe)) = self.map.range(..s).next_back() {
            if pe > s {
                self.map.insert(ps, s);
                if pe > e {
                    self.map.insert(e, pe);
                    return;
                }
            }
        }
        let inside: Vec<u64> = self.map.range(s..e).map(|(&k, _)| k).collect();
        for k in inside {
            let ke = self.map.remove(&k).expect("present");
            if ke > e {
                self.map.insert(e, ke);
            }
        }
    }

    pub fn set(&mut self, s: u64, e: u64, on: bool) {
        if on {
            self.insert(s, e)
        } else {
            self.remove(s, e)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_merge_and_split() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(20, 30);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 30)]);
        r.remove(15, 16);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 15), (16, 30)]);
        assert_eq!(r.uniform(10, 15), Some(true));
        assert_eq!(r.uniform(14, 17), None);
        assert_eq!(r.uniform(30, 40), Some(false));
        r.insert(0, 100);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(0, 100)]);
        r.remove(0, 100);
        assert!(r.is_empty());
    }
}

/// A run of equal-step items keyed by its first key: `span` keys in all, cut and joined only at
/// multiples of its step. Leaves, S-EPT entries, folios and reverse-map entries are kept as
/// runs, so an op over N contiguous, alike pages costs one piece, not N.
pub trait Run: Copy {
    /// Keys covered.
    fn span(&self) -> u64;
    /// Keys per item: a run is only cut at multiples of this.
    fn step(&self) -> u64;
    /// The first `off` keys.
    fn head(&self, off: u64) -> Self;
    /// What is left after the first `off` keys.
    fn tail(&self, off: u64) -> Self;
    /// Whether `next`, starting right where `self` ends, continues it.
    fn joins(&self, next: &Self) -> bool;
    fn join(&self, next: &Self) -> Self;
}

/// [`Run`] for a run of `count` items of one level (`$level`, a [`crate::seq::Level`] field),
/// whose address field `$addr` (a frame or a GFN) advances with the offset; two runs join where
/// the level and the `$same` fields agree and the second starts where the first ends.
macro_rules! leveled_run {
    ($t:ident, $level:ident, $addr:ident $(, $same:ident)*) => {
        impl $crate::model::ranges::Run for $t {
            fn span(&self) -> u64 {
                self.$level.pages() * self.count
            }
            fn step(&self) -> u64 {
                self.$level.pages()
            }
            fn head(&self, off: u64) -> Self {
                $t { count: off / self.$level.pages(), ..*self }
            }
            fn tail(&self, off: u64) -> Self {
                $t { $addr: self.$addr + off, count: self.count - off / self.$level.pages(), ..*self }
            }
            fn joins(&self, n: &Self) -> bool {
                n.$level == self.$level $(&& n.$same == self.$same)* && n.$addr == self.$addr + self.span()
            }
            fn join(&self, n: &Self) -> Self {
                $t { count: self.count + n.count, ..*self }
            }
        }
    };
}
pub(crate) use leveled_run;

#[derive(Clone, Debug)]
pub struct RunMap<R> {
    map: BTreeMap<u64, R>,
}

impl<R> Default for RunMap<R> {
    fn default() -> Self {
        RunMap { map: BTreeMap::new() }
    }
}

impl<R: Run> RunMap<R> {
    /// The run containing `k`, with its first key.
    pub fn get(&self, k: u64) -> Option<(u64, R)> {
        let (&s, &r) = self.map.range(..=k).next_back()?;
        (k - s < r.span()).then_some((s, r))
    }

    /// The item containing `k`: its first key and the one-item run.
    pub fn item(&self, k: u64) -> Option<(u64, R)> {
        let (s, r) = self.get(k)?;
        let off = (k - s) / r.step() * r.step();
        Some((s + off, r.tail(off).head(r.step())))
    }

    /// Runs overlapping `[s, e)`, uncut, in order.
    pub fn overlapping(&self, s: u64, e: u64) -> Vec<(u64, R)> {
        let mut v = Vec::new();
        if let Some(x) = self.get(s) {
            if x.0 < s {
                v.push(x);
            }
        }
        v.extend(self.map.range(s..e).map(|(&k, &r)| (k, r)));
        v
    }

    pub fn has_any(&self, s: u64, e: u64) -> bool {
        self.get(s).is_some() || self.map.range(s..e).next().is_some()
    }

    /// Cut the run containing `k` so that a run starts at `k`, rounding `k` down to an item
    /// boundary. Returns where the cut is.
    fn cut(&mut self, k: u64) -> u64 {
        let Some((s, r)) = self.get(k) else { return k };
        let off = (k - s) / r.step() * r.step();
        if off == 0 {
            return s;
        }
        self.map.insert(s, r.head(off));
        self.map.insert(s + off, r.tail(off));
        s + off
    }

    /// Remove every item overlapping `[s, e)` (items that straddle an end are removed whole).
    /// Returns the removed runs.
    pub fn remove_range(&mut self, s: u64, e: u64) -> Vec<(u64, R)> {
        if s >= e {
            return Vec::new();
        }
        let s = self.cut(s);
        // Round the end up to the end of the item containing e - 1.
        let e = match self.get(e - 1) {
            Some((rs, r)) => {
                let off = (e - 1 - rs) / r.step() * r.step() + r.step();
                self.cut(rs + off.min(r.span()));
                (rs + off).max(e)
            }
            None => e,
        };
        let keys: Vec<u64> = self.map.range(s..e).map(|(&k, _)| k).collect();
        keys.into_iter().map(|k| (k, self.map.remove(&k).expect("present"))).collect()
    }

    /// Add a run over keys that hold nothing, joining it with its neighbours where they continue.
    pub fn insert(&mut self, mut start: u64, mut r: R) {
        debug_assert!(!self.has_any(start, start + r.span()));
        if let Some((&ps, &pr)) = self.map.range(..start).next_back() {
            if ps + pr.span() == start && pr.joins(&r) {
                self.map.remove(&ps);
                r = pr.join(&r);
                start = ps;
            }
        }
        if let Some(&nr) = self.map.get(&(start + r.span())) {
            if r.joins(&nr) {
                self.map.remove(&(start + r.span()));
                r = r.join(&nr);
            }
        }
        self.map.insert(start, r);
    }
}
