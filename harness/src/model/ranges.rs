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
