//! The seeded, stratified hold-out split of the paper's protocol.
//!
//! **Invariant:** a split depends only on the labels, the test size, the
//! seed and the repeat number (our own SplitMix64, not the thread count).

use tsimcne_rng::{SplitMix64, stratum_quotas};

/// The default hold-out size: 10,000 points, or 20% of a smaller set.
pub fn default_test_size(labelled: usize) -> usize {
    10_000.min(labelled / 5)
}

/// Splits `rows` (with `labels[row]` ≥ 0) into (train, test), with each
/// class contributing to the test set in proportion to its size (largest
/// remainders round up, ties to the earlier class; [`stratum_quotas`]).
/// Both lists ascend.
pub fn stratified(
    rows: &[u32],
    labels: &[i32],
    test_size: usize,
    seed: u64,
    repeat: u64,
) -> (Vec<u32>, Vec<u32>) {
    let classes = rows
        .iter()
        .map(|&r| labels[r as usize])
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); classes];
    for &r in rows {
        members[labels[r as usize] as usize].push(r);
    }
    let n = rows.len();
    let sizes: Vec<usize> = members.iter().map(Vec::len).collect();
    let take = stratum_quotas(&sizes, test_size);
    let (mut train, mut test) = (
        Vec::with_capacity(n - test_size),
        Vec::with_capacity(test_size),
    );
    for (c, m) in members.iter_mut().enumerate() {
        // The first take[c] become the test points.
        SplitMix64::keyed(&[0x686f6c64, seed, repeat, c as u64]).partial_shuffle(m, take[c]);
        test.extend_from_slice(&m[..take[c]]);
        train.extend_from_slice(&m[take[c]..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// A seeded sample of `size` of `rows`, ascending.
pub fn sample(rows: usize, size: usize, seed: u64) -> Vec<u32> {
    let mut all: Vec<u32> = (0..rows as u32).collect();
    SplitMix64::keyed(&[0x73616d70, seed]).partial_shuffle(&mut all, size);
    all.truncate(size.min(rows));
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_split_is_proportional_disjoint_and_seeded() {
        // Classes of 50, 30 and 20 points; a 10-point test set takes 5/3/2.
        let labels: Vec<i32> = (0..100)
            .map(|i| {
                if i < 50 {
                    0
                } else if i < 80 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let rows: Vec<u32> = (0..100).collect();
        let (train, test) = stratified(&rows, &labels, 10, 7, 0);
        assert_eq!(test.len(), 10);
        assert_eq!(train.len(), 90);
        let count = |c| test.iter().filter(|&&r| labels[r as usize] == c).count();
        assert_eq!((count(0), count(1), count(2)), (5, 3, 2));
        let mut all: Vec<u32> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, rows);
        assert_eq!(
            stratified(&rows, &labels, 10, 7, 0),
            (train.clone(), test.clone())
        );
        assert_ne!(stratified(&rows, &labels, 10, 7, 1).1, test);
        // Remainders: 7 test points of 50/30/20 → 3.5, 2.1, 1.4 → 4, 2, 1.
        let (_, t) = stratified(&rows, &labels, 7, 0, 0);
        let c = |c| t.iter().filter(|&&r| labels[r as usize] == c).count();
        assert_eq!((c(0), c(1), c(2)), (4, 2, 1));
    }

    #[test]
    fn default_test_size_follows_the_protocol() {
        assert_eq!(default_test_size(70_000), 10_000);
        assert_eq!(default_test_size(10_000), 2_000);
    }

    #[test]
    fn sample_is_seeded_and_distinct() {
        let s = sample(1000, 100, 3);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s, sample(1000, 100, 3));
        assert_ne!(s, sample(1000, 100, 4));
        assert_eq!(sample(5, 10, 0), vec![0, 1, 2, 3, 4]);
    }
}
