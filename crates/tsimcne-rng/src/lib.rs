//! Random numbers whose every bit is specified here, so a seed gives the same
//! subset, the same initial weights and the same augmentations on every
//! platform and with every dependency version.
//!
//! **Invariant:** nothing in this crate may change its output for a given
//! seed; tests pin reference values computed by an independent
//! implementation.
//!
//! Substreams are keyed, not sequential: [`SplitMix64::keyed`] derives the
//! stream for e.g. (seed, epoch, image id, view) directly, so a value never
//! depends on how many numbers other threads or earlier epochs drew.

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast and fully specified.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

/// The SplitMix64 output function: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The stream for a tuple of keys, e.g. `[seed, epoch, id, view]`.
    /// Keys are folded through the mixer one by one, so distinct tuples give
    /// unrelated streams.
    pub fn keyed(keys: &[u64]) -> Self {
        let mut state = 0x6A09_E667_F3BC_C909; // frac(sqrt(2)), a nothing-up-my-sleeve start
        for &k in keys {
            state = mix64(state ^ mix64(k.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        }
        Self(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// A number in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³²
    /// for any n that fits in memory).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit_f64()
    }

    /// Standard normal, by the Box–Muller transform (one value per call; the
    /// second is discarded so a call always consumes two draws).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit_f64(); // (0, 1]: ln is finite
        let u2 = self.unit_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit_f64() < p
    }

    /// Partial Fisher–Yates: the first `k` items become a uniform random
    /// sample of `items`, in random order (one draw per item taken; `k` is
    /// capped at the length).
    pub fn partial_shuffle<T>(&mut self, items: &mut [T], k: usize) {
        for i in 0..k.min(items.len()) {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
    }
}

/// How many of each group a stratified sample of `pick` of the groups'
/// members takes: each group's exact share floored, then one more for the
/// groups with the largest remainders until `pick` is reached (ties to the
/// earlier group). No randomness: the same sizes give the same quotas.
/// `pick` is capped at the number of members.
pub fn stratum_quotas(sizes: &[usize], pick: usize) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    let pick = pick.min(n);
    if n == 0 {
        return vec![0; sizes.len()];
    }
    let mut quotas: Vec<usize> = sizes.iter().map(|&m| m * pick / n).collect();
    // Remainders compared exactly, as (size·pick mod n); a stable sort keeps
    // ties in group order.
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(sizes[g] * pick % n));
    let short = pick - quotas.iter().sum::<usize>();
    // Each of the `short` largest remainders is non-zero (the fractional
    // shares sum to `short`, each below one), so no quota passes its size.
    for &g in order.iter().take(short) {
        quotas[g] += 1;
    }
    quotas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567, from an independent Python
        // implementation of the published algorithm.
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn keyed_streams_are_pinned_and_distinct() {
        let a = SplitMix64::keyed(&[1, 2, 3]).next_u64();
        assert_eq!(a, SplitMix64::keyed(&[1, 2, 3]).next_u64());
        assert_ne!(a, SplitMix64::keyed(&[1, 3, 2]).next_u64());
        assert_ne!(a, SplitMix64::keyed(&[1, 2]).next_u64());
        assert_eq!(a, KEYED_1_2_3);
    }

    /// Pinned so an accidental change to `keyed` fails loudly (it would
    /// change every augmentation of every run).
    const KEYED_1_2_3: u64 = 427_342_582_112_958_327; // independent Python implementation

    #[test]
    fn stratum_quotas_are_proportional_and_add_up() {
        assert_eq!(stratum_quotas(&[5, 3, 2], 5), vec![3, 1, 1]); // 2.5, 1.5, 1.0
        assert_eq!(stratum_quotas(&[1, 1, 1], 2), vec![1, 1, 0]); // ties to the earlier
        assert_eq!(stratum_quotas(&[4, 6], 10), vec![4, 6]);
        assert_eq!(stratum_quotas(&[4, 6], 99), vec![4, 6]);
        assert_eq!(stratum_quotas(&[], 3), Vec::<usize>::new());
        for (sizes, pick) in [(&[7usize, 0, 13, 1][..], 9), (&[3, 3, 3, 3, 3][..], 7)] {
            let q = stratum_quotas(sizes, pick);
            assert_eq!(q.iter().sum::<usize>(), pick);
            let n: usize = sizes.iter().sum();
            for (&m, &q) in sizes.iter().zip(&q) {
                let floor = m * pick / n;
                assert!(q <= m && (q == floor || q == floor + 1), "{sizes:?} {q}");
            }
        }
    }

    #[test]
    fn partial_shuffle_is_a_seeded_sample() {
        let mut a: Vec<u32> = (0..10).collect();
        SplitMix64::new(3).partial_shuffle(&mut a, 4);
        let mut b: Vec<u32> = (0..10).collect();
        SplitMix64::new(3).partial_shuffle(&mut b, 4);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "a permutation");
        let mut c: Vec<u32> = (0..3).collect();
        SplitMix64::new(3).partial_shuffle(&mut c, 9); // capped
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut r = SplitMix64::new(42);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let x = r.normal();
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((s2 / n as f64 - 1.0).abs() < 0.01);
        let u: f64 = (0..n).map(|_| r.uniform(2.0, 4.0)).sum::<f64>() / n as f64;
        assert!((u - 3.0).abs() < 0.01, "{u}");
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
