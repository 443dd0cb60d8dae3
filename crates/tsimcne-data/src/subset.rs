//! Seeded stratified subsets (`prep --limit N --seed S`).
//!
//! **Invariant:** the chosen rows depend only on (splits, labels, limit,
//! seed), never on the platform or a library version: the random stream is
//! our own `tsimcne_rng::SplitMix64`.

use std::collections::BTreeMap;

use tsimcne_format::Split;
use tsimcne_rng::{SplitMix64, stratum_quotas};

/// Picks `limit` of the rows, stratified by (split, label): every stratum
/// keeps its share, rounded by largest remainder. Returns sorted row indices.
/// A `limit` of at least the number of rows keeps every row.
pub fn stratified_subset(
    splits: &[Split],
    labels: &[Option<i32>],
    limit: usize,
    seed: u64,
) -> Vec<usize> {
    let n = splits.len();
    if limit >= n {
        return (0..n).collect();
    }
    let mut strata: BTreeMap<(Split, Option<i32>), Vec<usize>> = BTreeMap::new();
    for (i, key) in splits
        .iter()
        .copied()
        .zip(labels.iter().copied())
        .enumerate()
    {
        strata.entry(key).or_default().push(i);
    }
    let sizes: Vec<usize> = strata.values().map(Vec::len).collect();
    let quotas = stratum_quotas(&sizes, limit);
    let mut rng = SplitMix64::new(seed);
    let mut chosen = Vec::with_capacity(limit);
    for (rows, &q) in strata.values().zip(&quotas) {
        let mut rows = rows.clone();
        rng.partial_shuffle(&mut rows, q);
        chosen.extend_from_slice(&rows[..q]);
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_proportions_and_is_seeded() {
        let splits: Vec<Split> = (0..1000)
            .map(|i| if i < 800 { Split::Train } else { Split::Test })
            .collect();
        let labels: Vec<Option<i32>> = (0..1000).map(|i| Some(i % 10)).collect();
        let a = stratified_subset(&splits, &labels, 100, 1);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a.iter().filter(|&&i| i >= 800).count(), 20);
        for c in 0..10 {
            assert_eq!(a.iter().filter(|&&i| i % 10 == c).count(), 10);
        }
        assert_eq!(a, stratified_subset(&splits, &labels, 100, 1));
        assert_ne!(a, stratified_subset(&splits, &labels, 100, 2));
    }

    #[test]
    fn uneven_strata_sum_to_the_limit() {
        let splits = vec![Split::Train; 10];
        let labels: Vec<Option<i32>> = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
            .iter()
            .map(|&l| Some(l))
            .collect();
        for limit in 0..=10 {
            assert_eq!(stratified_subset(&splits, &labels, limit, 9).len(), limit);
        }
        assert_eq!(stratified_subset(&splits, &labels, 50, 9).len(), 10);
    }
}
