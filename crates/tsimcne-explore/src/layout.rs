//! What the page shows between the points: thumbnails at the density peaks,
//! level by level, and places for the class names, coarse to fine.

/// Representative images, coarse to fine: at level `l`, no two of the
/// images of levels `0..=l` are closer than `radii[l]` in the map, and every
/// point is within `radii[l]` of one of them. Denser points are chosen
/// first, so each representative sits at a local density peak.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Representatives {
    /// Map distance per level, halving from a sixth of the map's extent.
    pub radii: Vec<f32>,
    /// The representatives, in the order they were chosen.
    pub ids: Vec<u32>,
    /// Each representative's level (the coarsest where it is one).
    pub levels: Vec<u8>,
}

/// Levels of representatives.
pub(crate) const LEVELS: usize = 6;

/// Chooses the representatives of `coords` (`[n, 2]`), densest first by
/// `sparsity` (any per-point measure, smaller is denser, e.g. the distance
/// to the k-th neighbour).
pub(crate) fn representatives(coords: &[f32], sparsity: &[f32]) -> Representatives {
    let n = sparsity.len();
    if n == 0 {
        return Representatives::default();
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in coords.chunks(2) {
        (x0, x1, y0, y1) = (x0.min(p[0]), x1.max(p[0]), y0.min(p[1]), y1.max(p[1]));
    }
    let extent = (x1 - x0).max(y1 - y0).max(f32::MIN_POSITIVE);
    let mut by_density: Vec<u32> = (0..n as u32).collect();
    by_density.sort_by(|&a, &b| {
        sparsity[a as usize]
            .total_cmp(&sparsity[b as usize])
            .then(a.cmp(&b))
    });
    let mut out = Representatives::default();
    let mut is_rep = vec![false; n];
    for level in 0..LEVELS {
        let r = extent / 6.0 / (1u32 << level) as f32;
        let grid = Grid::new(r, x0, y0);
        let mut cells: std::collections::HashMap<(i64, i64), Vec<u32>> = Default::default();
        for &i in &out.ids {
            cells.entry(grid.cell(coords, i)).or_default().push(i);
        }
        for &i in &by_density {
            if is_rep[i as usize] {
                continue;
            }
            let (cx, cy) = grid.cell(coords, i);
            let near = (cx - 1..=cx + 1).any(|x| {
                (cy - 1..=cy + 1).any(|y| {
                    cells
                        .get(&(x, y))
                        .is_some_and(|v| v.iter().any(|&j| dist2(coords, i, j) < r * r))
                })
            });
            if !near {
                is_rep[i as usize] = true;
                out.ids.push(i);
                out.levels.push(level as u8);
                cells.entry((cx, cy)).or_default().push(i);
            }
        }
        out.radii.push(r);
    }
    out
}

/// A class name's place on the map: the point it is written at, and the
/// coarsest zoom level it is written at (an index into the
/// representatives' `radii`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassLabel {
    pub point: u32,
    pub class: u32,
    pub level: u8,
}

/// Levels of class names: the whole class, then islands at the first
/// `LABEL_LEVELS - 1` finer radii.
pub(crate) const LABEL_LEVELS: usize = 4;

/// A place gets a name of its own at level 1 only with at least this share
/// of its class's points (half that at each finer level), and at least
/// [`PLACE_MIN_POINTS`].
const PLACE_MIN_SHARE: f64 = 0.02;
const PLACE_MIN_POINTS: usize = 5;

/// Where the page writes class names, in the order it places them (each
/// only where it collides with none placed before). Level 0: each class's
/// medoid, largest class first. Level `l` ≥ 1: the map in square cells of
/// side `2 · radii[l]`; in each, the medoid of a class's points there when
/// they are enough of the class (see [`PLACE_MIN_SHARE`]) and no name of
/// the class is within `radii[l]` of it already; most points first. So a
/// class in several far islands is named on each, and a large class zoomed
/// into is named where it is. Medoids are exact over an even sample of at
/// most [`MEDOID_SAMPLE`] points.
pub(crate) fn class_labels(
    coords: &[f32],
    classes: &[Option<usize>],
    count: usize,
    radii: &[f32],
) -> Vec<ClassLabel> {
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); count];
    for (i, c) in classes.iter().enumerate() {
        if let Some(c) = *c
            && c < count
        {
            members[c].push(i as u32);
        }
    }
    let (mut x0, mut y0) = (f32::MAX, f32::MAX);
    for p in coords.chunks(2) {
        (x0, y0) = (x0.min(p[0]), y0.min(p[1]));
    }
    let mut out = Vec::new();
    // [class] → the points named so far.
    let mut named: Vec<Vec<u32>> = vec![Vec::new(); count];
    let mut level0: Vec<(usize, u32, u32)> = Vec::new(); // (size, class, point)
    for (c, m) in members.iter().enumerate() {
        if let Some(p) = medoid(coords, m) {
            level0.push((m.len(), c as u32, p));
            named[c].push(p);
        }
    }
    level0.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    out.extend(level0.iter().map(|&(_, class, point)| ClassLabel {
        point,
        class,
        level: 0,
    }));
    for (level, &r) in radii.iter().enumerate().take(LABEL_LEVELS).skip(1) {
        let share = PLACE_MIN_SHARE / f64::from(1u32 << (level - 1));
        let grid = Grid::new(2.0 * r, x0, y0);
        let mut found: Vec<(usize, u32, u32)> = Vec::new(); // (points, class, point)
        for (c, m) in members.iter().enumerate() {
            let least = PLACE_MIN_POINTS.max((share * m.len() as f64).ceil() as usize);
            let mut cells: std::collections::BTreeMap<(i64, i64), Vec<u32>> = Default::default();
            for &p in m {
                cells.entry(grid.cell(coords, p)).or_default().push(p);
            }
            for here in cells.values().filter(|v| v.len() >= least) {
                let Some(p) = medoid(coords, here) else {
                    continue;
                };
                if named[c].iter().all(|&q| dist2(coords, p, q) >= r * r) {
                    found.push((here.len(), c as u32, p));
                }
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for &(_, class, point) in &found {
            named[class as usize].push(point);
            out.push(ClassLabel {
                point,
                class,
                level: level as u8,
            });
        }
    }
    out
}

/// The medoid of `points` in the map: exact over an even sample of at most
/// [`MEDOID_SAMPLE`] of them; `None` for no points.
fn medoid(coords: &[f32], points: &[u32]) -> Option<u32> {
    let step = points.len().div_ceil(MEDOID_SAMPLE).max(1);
    let sample: Vec<u32> = points.iter().step_by(step).copied().collect();
    sample
        .iter()
        .map(|&i| {
            let sum: f64 = sample
                .iter()
                .map(|&j| f64::from(dist2(coords, i, j)).sqrt())
                .sum();
            (sum, i)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, i)| i)
}

/// Each point's density rank (by `sparsity`, smaller is denser; ties by
/// index) scaled to 0 (sparsest) – 254 (densest).
pub(crate) fn density_ranks(sparsity: &[f32]) -> Vec<u8> {
    let n = sparsity.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| {
        sparsity[b as usize]
            .total_cmp(&sparsity[a as usize])
            .then(a.cmp(&b))
    });
    let mut out = vec![127u8; n];
    if n > 1 {
        for (rank, &i) in order.iter().enumerate() {
            out[i as usize] = (rank * 254 / (n - 1)) as u8;
        }
    }
    out
}

/// The kNN-label disagreement of each point: the share of its labelled
/// neighbours (rows of `k` in `nb`) whose label differs from its own,
/// scaled to 0–254; 255 where it is unlabelled or has no labelled
/// neighbour.
pub(crate) fn disagreement(labels: &[Option<i32>], nb: &[u32], k: usize) -> Vec<u8> {
    if k == 0 {
        return vec![255; labels.len()];
    }
    labels
        .iter()
        .zip(nb.chunks(k))
        .map(|(own, row)| {
            let Some(own) = own else { return 255 };
            let seen: Vec<i32> = row.iter().filter_map(|&j| labels[j as usize]).collect();
            if seen.is_empty() {
                return 255;
            }
            let other = seen.iter().filter(|&&l| l != *own).count();
            (other * 254 / seen.len()) as u8
        })
        .collect()
}

/// Points of a class a medoid is chosen among.
const MEDOID_SAMPLE: usize = 500;

fn dist2(coords: &[f32], i: u32, j: u32) -> f32 {
    let (i, j) = (i as usize, j as usize);
    let dx = coords[2 * i] - coords[2 * j];
    let dy = coords[2 * i + 1] - coords[2 * j + 1];
    dx * dx + dy * dy
}

/// Square cells of side `r` from `(x0, y0)`.
struct Grid {
    r: f32,
    x0: f32,
    y0: f32,
}

impl Grid {
    fn new(r: f32, x0: f32, y0: f32) -> Self {
        Self { r, x0, y0 }
    }

    fn cell(&self, coords: &[f32], i: u32) -> (i64, i64) {
        let i = i as usize;
        (
            ((coords[2 * i] - self.x0) / self.r).floor() as i64,
            ((coords[2 * i + 1] - self.y0) / self.r).floor() as i64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsimcne_rng::SplitMix64;

    fn cloud(n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut rng = SplitMix64::new(3);
        let coords: Vec<f32> = (0..2 * n)
            .map(|i| (rng.normal() + if i % 4 < 2 { 4.0 } else { -4.0 }) as f32)
            .collect();
        // Sparsity: the distance from the centre of the point's cluster.
        let sparsity = coords
            .chunks(2)
            .map(|p| (p[0].abs() - 4.0).hypot(p[1].abs() - 4.0))
            .collect();
        (coords, sparsity)
    }

    /// At each level the representatives so far are `radii[l]` apart and
    /// cover every point within `radii[l]`; the densest point comes first.
    #[test]
    fn representatives_are_spread_and_cover_every_point() {
        let (coords, sparsity) = cloud(3000);
        let reps = representatives(&coords, &sparsity);
        assert_eq!(reps.radii.len(), LEVELS);
        assert_eq!(reps.ids.len(), reps.levels.len());
        let densest = (0..3000)
            .min_by(|&a, &b| sparsity[a].total_cmp(&sparsity[b]))
            .unwrap();
        assert_eq!(reps.ids[0], densest as u32);
        for (l, &r) in reps.radii.iter().enumerate() {
            let at: Vec<u32> = reps
                .ids
                .iter()
                .zip(&reps.levels)
                .filter(|(_, lv)| usize::from(**lv) <= l)
                .map(|(&i, _)| i)
                .collect();
            for (a, &i) in at.iter().enumerate() {
                for &j in &at[a + 1..] {
                    assert!(dist2(&coords, i, j) >= r * r, "level {l}: {i} and {j}");
                }
            }
            for p in 0..3000u32 {
                assert!(
                    at.iter().any(|&i| dist2(&coords, p, i) < r * r),
                    "level {l}: point {p} uncovered"
                );
            }
        }
        assert!(reps.levels.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn density_and_disagreement_scores() {
        assert_eq!(density_ranks(&[3.0, 1.0, 2.0]), vec![0, 254, 127]);
        assert_eq!(density_ranks(&[1.0]), vec![127]);
        // Point 0 (label 1): neighbours 1 (label 1) and 2 (label 2): half
        // disagree. Point 1: neighbours 0 and 3 (unlabelled): none. Point
        // 3 is unlabelled.
        let labels = [Some(1), Some(1), Some(2), None];
        let nb = [1, 2, 0, 3, 0, 1, 0, 1];
        assert_eq!(disagreement(&labels, &nb, 2), vec![127, 0, 254, 255]);
    }

    #[test]
    fn a_medoid_minimises_the_distance_sum_of_its_class() {
        // Class 0 on a line at 0, 1, 2, 10: the medoid is 1 or 2 (sum 11);
        // the smaller index wins. Class 1 alone; class 2 empty.
        let coords = [0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 10.0, 0.0, 5.0, 5.0];
        let classes = [Some(0), Some(0), Some(0), Some(0), Some(1)];
        let labels = class_labels(&coords, &classes, 3, &[100.0]);
        let at = |point, class| ClassLabel {
            point,
            class,
            level: 0,
        };
        // The larger class first.
        assert_eq!(labels, vec![at(1, 0), at(4, 1)]);
    }

    /// A class in two far islands gets a second name at the finer level
    /// (the island without its medoid), a third island too small for one
    /// gets none, and a class in one island gets none beyond its first.
    #[test]
    fn islands_of_a_class_get_names_at_finer_levels() {
        let mut coords = Vec::new();
        let mut classes = Vec::new();
        let mut rng = SplitMix64::new(5);
        // Class 0: 60 points near (0, 0), 40 near (50, 0), 2 near (0, 50).
        // Class 1: 80 points near (50, 50).
        for (n, cx, cy, c) in [
            (60, 0.0, 0.0, 0),
            (40, 50.0, 0.0, 0),
            (2, 0.0, 50.0, 0),
            (80, 50.0, 50.0, 1),
        ] {
            for _ in 0..n {
                coords.push(cx + rng.normal() as f32);
                coords.push(cy + rng.normal() as f32);
                classes.push(Some(c));
            }
        }
        let labels = class_labels(&coords, &classes, 2, &[100.0, 10.0, 5.0]);
        let level0: Vec<_> = labels.iter().filter(|l| l.level == 0).collect();
        assert_eq!(
            level0.iter().map(|l| l.class).collect::<Vec<_>>(),
            vec![0, 1]
        );
        // Class 0's medoid is in its big island (points 0..60).
        assert!(level0[0].point < 60, "{labels:?}");
        let finer: Vec<_> = labels.iter().filter(|l| l.level > 0).collect();
        assert_eq!(finer.len(), 1, "{labels:?}");
        assert_eq!((finer[0].class, finer[0].level), (0, 1));
        assert!((60..100).contains(&finer[0].point), "{labels:?}");
    }
}
