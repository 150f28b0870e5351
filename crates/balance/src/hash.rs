//! Deterministic hashing and the seeded random source used by selection.
//!
//! Owns: the key hash (FNV-1a 64 followed by the murmur3 `fmix64` finalizer), the pair hash used
//! by rendezvous scoring, and a lock-free SplitMix64 generator. Must not use `std`'s
//! `DefaultHasher` (SipHash keys and algorithm are only stable within one Rust release) nor any
//! global RNG: both nodes of the pair, and every firmware version, must map the same key to the
//! same server.
//!
//! Why not a crate: FNV-1a is eight lines and its weak low-bit avalanche is repaired by `fmix64`,
//! a bijective finalizer with full avalanche. The keys here are short (an IP, a path, a header
//! value), are not attacker-controlled in a way that matters (a collision only co-locates two
//! clients on one server), and speed per byte is irrelevant next to a TCP connect.

use std::sync::atomic::{AtomicU64, Ordering};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64-bit hash of `bytes`, continuing from `state`.
const fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        state ^= bytes[i] as u64;
        state = state.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    state
}

/// murmur3's 64-bit finalizer: a bijection with full avalanche.
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Stable 64-bit hash of a byte string.
pub(crate) const fn hash_bytes(bytes: &[u8]) -> u64 {
    mix64(fnv1a(FNV_OFFSET, bytes))
}

/// Stable 64-bit hash of several byte strings, each length-prefixed so `("ab","c")` and
/// `("a","bc")` differ.
pub(crate) fn hash_parts(parts: &[&[u8]]) -> u64 {
    let mut state = FNV_OFFSET;
    for part in parts {
        state = fnv1a(state, &(part.len() as u64).to_le_bytes());
        state = fnv1a(state, part);
    }
    mix64(state)
}

/// Rendezvous score input: a uniform value in the open interval (0, 1) for the pair
/// (key, server). `server` must already be well mixed (it is a [`hash_bytes`] output).
pub(crate) fn unit_interval(key: u64, server: u64) -> f64 {
    // Mixing the xor again decorrelates the per-server values of one key.
    let h = mix64(key ^ server);
    // The top 52 bits plus a half step need 53 significant bits, so the value is exact and lies
    // in [2^-53, 1 - 2^-53]: never 0 or 1, so `ln` below is finite and non-zero.
    ((h >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

/// Weighted rendezvous (highest random weight) score of `server` for `key`.
///
/// `-weight / ln(u)` with `u` uniform in (0, 1): the server with the highest score wins, and it
/// is server `i` with probability `w_i / sum(w)` exactly (this is the exponential race
/// `Exp(w_i)` minimum in disguise). Higher is better.
pub(crate) fn rendezvous_score(key: u64, server: u64, weight: u32) -> f64 {
    debug_assert!(weight > 0, "zero-weight servers are never scored");
    -(weight as f64) / unit_interval(key, server).ln()
}

/// SplitMix64 over an atomic counter: lock-free, deterministic for a seed when used from one
/// thread, and still well distributed (though interleaved) when shared between threads.
#[derive(Debug)]
pub(crate) struct SplitMix64 {
    state: AtomicU64,
}

impl SplitMix64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// Next pseudo-random value.
    pub(crate) fn next_u64(&self) -> u64 {
        // Relaxed is enough: each caller only needs a distinct counter value, not ordering
        // with other memory.
        let z = self
            .state
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hashes_are_pinned() {
        // Pinned so a change of algorithm (which would remap every client) is a visible diff.
        assert_eq!(hash_bytes(b""), mix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0xb456_bcfc_34c2_cb2c);
        assert_ne!(hash_parts(&[b"ab", b"c"]), hash_parts(&[b"a", b"bc"]));
    }

    #[test]
    fn unit_interval_is_open() {
        for k in 0..10_000u64 {
            let u = unit_interval(k, 0);
            assert!(u > 0.0 && u < 1.0);
        }
        // The extremes of the 52-bit range stay strictly inside (0, 1).
        let lo = ((0u64 >> 12) as f64 + 0.5) / (1u64 << 52) as f64;
        let hi = ((u64::MAX >> 12) as f64 + 0.5) / (1u64 << 52) as f64;
        assert!(lo > 0.0 && lo.ln().is_finite());
        assert!(hi < 1.0 && hi.ln() < 0.0);
    }

    #[test]
    fn splitmix_is_deterministic_for_a_seed() {
        let a = SplitMix64::new(7);
        let b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }
}
