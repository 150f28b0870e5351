//! The adapter between the proxy's live atomics and `tandem-balance` selection.
//!
//! Owns: [`View`] (a [`LiveView`] over a backend's [`ServerState`]s, read lock-free) and
//! [`Tried`] (the per-request `exclude` list, on the stack).
//! Does not own: the algorithms, health hysteresis or slow-start arithmetic (all in
//! `tandem-balance`), reserving slots or queueing (`queue`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tandem_balance::{Live, LiveView};

use crate::live::ServerState;

pub use tandem_balance::Pick;

/// A backend's servers as `tandem_balance::Backend::pick` reads them.
pub struct View<'a>(pub &'a [Arc<ServerState>]);

impl LiveView for View<'_> {
    fn live(&self, index: usize) -> Live {
        let s = &self.0[index];
        Live {
            status: s.status(),
            active: s.active.load(Ordering::SeqCst),
            up_since: s.up_since(),
        }
    }

    fn weight(&self, index: usize) -> Option<u32> {
        self.0[index].runtime_weight()
    }
}

/// Most servers remembered as tried by one request; further ones are not excluded (the
/// retry count bounds the attempts anyway).
const MAX_TRIED: usize = 16;

/// Server indexes already tried by one request, without allocating.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried {
    buf: [usize; MAX_TRIED],
    len: usize,
}

impl Tried {
    /// Records server `i` as tried.
    pub fn insert(&mut self, i: usize) {
        if self.len < MAX_TRIED && !self.as_slice().contains(&i) {
            self.buf[self.len] = i;
            self.len += 1;
        }
    }

    /// The tried indexes.
    pub fn as_slice(&self) -> &[usize] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_is_a_small_set() {
        let mut t = Tried::default();
        t.insert(3);
        t.insert(3);
        t.insert(1);
        assert_eq!(t.as_slice(), &[3, 1]);
        for i in 0..40 {
            t.insert(i);
        }
        assert_eq!(t.as_slice().len(), MAX_TRIED);
    }
}
