//! Places bounded per key and in all: what the server hands out so that
//! one user (or one client address) cannot take everybody's share —
//! connections per client (`listener`), CSV transfers per user
//! (`api::subscribers_csv`), live-progress streams per user (`web`). A
//! place is given back when its guard drops.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

pub struct Quota<K> {
    per_key: usize,
    total: usize,
    open: Mutex<Open<K>>,
}

struct Open<K> {
    total: usize,
    by_key: HashMap<K, usize>,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The key holds its share (how many it holds).
    Key(usize),
    /// Every place is taken.
    Total,
}

/// A place held; given back on drop.
pub struct Place<K: Hash + Eq> {
    quota: Arc<Quota<K>>,
    /// `None`: a place not counted against any key.
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Quota<K> {
    pub fn new(per_key: usize, total: usize) -> Arc<Quota<K>> {
        Arc::new(Quota {
            per_key,
            total,
            open: Mutex::new(Open {
                total: 0,
                by_key: HashMap::new(),
            }),
        })
    }

    /// A place for `key`, or why there is none.
    pub fn take(self: &Arc<Self>, key: K) -> Result<Place<K>, Full> {
        let mut open = self.open.lock().expect("quota lock");
        let mine = open.by_key.get(&key).copied().unwrap_or(0);
        if mine >= self.per_key {
            return Err(Full::Key(mine));
        }
        if open.total >= self.total {
            return Err(Full::Total);
        }
        *open.by_key.entry(key.clone()).or_default() += 1;
        open.total += 1;
        Ok(Place {
            quota: self.clone(),
            key: Some(key),
        })
    }

    /// A place counted in the total only (a trusted proxy carrying many
    /// clients), or `None` when every place is taken.
    pub fn take_shared(self: &Arc<Self>) -> Option<Place<K>> {
        let mut open = self.open.lock().expect("quota lock");
        if open.total >= self.total {
            return None;
        }
        open.total += 1;
        Some(Place {
            quota: self.clone(),
            key: None,
        })
    }

    /// Places held now, in all.
    pub fn held(&self) -> usize {
        self.open.lock().expect("quota lock").total
    }
}

impl<K: Hash + Eq> Drop for Place<K> {
    fn drop(&mut self) {
        let mut open = self.quota.open.lock().expect("quota lock");
        open.total -= 1;
        if let Some(key) = &self.key
            && let Some(n) = open.by_key.get_mut(key)
        {
            *n -= 1;
            if *n == 0 {
                open.by_key.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_key_then_in_all() {
        let q = Quota::new(2, 3);
        let a1 = q.take("a").unwrap();
        let _a2 = q.take("a").unwrap();
        assert_eq!(q.take("a").err(), Some(Full::Key(2)));
        let _b1 = q.take("b").unwrap();
        assert_eq!(q.take("b").err(), Some(Full::Total));
        assert!(q.take_shared().is_none());
        drop(a1);
        let _b2 = q.take("b").expect("a place given back is free again");
        assert_eq!(q.held(), 3);
    }

    #[test]
    fn shared_places_count_only_in_all() {
        let q: Arc<Quota<&str>> = Quota::new(1, 10);
        let shared: Vec<_> = (0..5).map(|_| q.take_shared().unwrap()).collect();
        assert!(q.take("a").is_ok());
        drop(shared);
        assert_eq!(q.held(), 0);
    }
}
