//! Categorical colours: tab10 and tab20 for small class counts, and beyond
//! that a greedy maximin set in OKLab.

/// matplotlib's `tab10`.
const TAB10: [[u8; 3]; 10] = [
    [0x1f, 0x77, 0xb4],
    [0xff, 0x7f, 0x0e],
    [0x2c, 0xa0, 0x2c],
    [0xd6, 0x27, 0x28],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
    [0xe3, 0x77, 0xc2],
    [0x7f, 0x7f, 0x7f],
    [0xbc, 0xbd, 0x22],
    [0x17, 0xbe, 0xcf],
];

/// matplotlib's `tab20`: tab10's hues, each followed by a lighter one.
const TAB20: [[u8; 3]; 20] = [
    [0x1f, 0x77, 0xb4],
    [0xae, 0xc7, 0xe8],
    [0xff, 0x7f, 0x0e],
    [0xff, 0xbb, 0x78],
    [0x2c, 0xa0, 0x2c],
    [0x98, 0xdf, 0x8a],
    [0xd6, 0x27, 0x28],
    [0xff, 0x98, 0x96],
    [0x94, 0x67, 0xbd],
    [0xc5, 0xb0, 0xd5],
    [0x8c, 0x56, 0x4b],
    [0xc4, 0x9c, 0x94],
    [0xe3, 0x77, 0xc2],
    [0xf7, 0xb6, 0xd2],
    [0x7f, 0x7f, 0x7f],
    [0xc7, 0xc7, 0xc7],
    [0xbc, 0xbd, 0x22],
    [0xdb, 0xdb, 0x8d],
    [0x17, 0xbe, 0xcf],
    [0x9e, 0xda, 0xe5],
];

/// The colour of unlabelled points (and of their legend entry).
pub const UNLABELLED: [u8; 3] = [0xa8, 0xa8, 0xa8];

/// Lightness bounds (OKLab L) of the large palette: darker colours all look
/// alike under alpha, lighter ones vanish into the white background.
const L_MIN: f64 = 0.45;
const L_MAX: f64 = 0.82;
/// Minimum OKLab chroma of the large palette, so no class looks like the
/// grey of unlabelled points.
const C_MIN: f64 = 0.06;
/// Levels per sRGB channel of the candidate grid the large palette is
/// picked from.
const GRID: u32 = 24;

/// `n` distinct colours for `n` classes, in class order.
///
/// - `n ≤ 10`: matplotlib's `tab10` (its first `n` entries);
/// - `n ≤ 20`: matplotlib's `tab20`;
/// - more: a greedy maximin set in OKLab: from a grid of sRGB colours with
///   lightness 0.45 ≤ L ≤ 0.82 and chroma ≥ 0.06 (so nothing near white,
///   near black or grey), each next colour is the candidate farthest from
///   all colours already chosen and from the grey of unlabelled points.
///   The result is deterministic; beyond the 6,000-odd candidates, colours
///   repeat.
pub fn palette(n_classes: usize) -> Vec<[u8; 3]> {
    if n_classes <= 10 {
        return TAB10[..n_classes].to_vec();
    }
    if n_classes <= 20 {
        return TAB20[..n_classes].to_vec();
    }
    maximin(n_classes)
}

fn maximin(n: usize) -> Vec<[u8; 3]> {
    let mut candidates: Vec<([u8; 3], [f64; 3])> = Vec::new();
    for r in 0..=GRID {
        for g in 0..=GRID {
            for b in 0..=GRID {
                let rgb = [r, g, b].map(|v| ((v * 255 + GRID / 2) / GRID) as u8);
                let lab = oklab(rgb);
                let chroma = lab[1].hypot(lab[2]);
                if (L_MIN..=L_MAX).contains(&lab[0]) && chroma >= C_MIN {
                    candidates.push((rgb, lab));
                }
            }
        }
    }
    let grey = oklab(UNLABELLED);
    let mut nearest: Vec<f64> = candidates
        .iter()
        .map(|(_, lab)| dist2(lab, &grey))
        .collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // First index of the largest distance: ties break the same way
        // everywhere.
        let (best, &d) = nearest
            .iter()
            .enumerate()
            .fold(
                (0, &f64::NEG_INFINITY),
                |acc, x| if x.1 > acc.1 { x } else { acc },
            );
        if d <= 0.0 {
            // Every candidate is taken: repeat the colours chosen so far.
            let k = out.len();
            out.extend_from_within(..(n - k).min(k));
            continue;
        }
        let (rgb, lab) = candidates[best];
        out.push(rgb);
        for (near, (_, c)) in nearest.iter_mut().zip(&candidates) {
            *near = near.min(dist2(c, &lab));
        }
    }
    out
}

fn dist2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// sRGB (8 bits per channel) to OKLab (Ottosson 2020).
pub(crate) fn oklab(rgb: [u8; 3]) -> [f64; 3] {
    let [r, g, b] = rgb.map(|v| {
        let c = f64::from(v) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    });
    let l = (0.412_221_470_8 * r + 0.536_332_536_3 * g + 0.051_445_992_9 * b).cbrt();
    let m = (0.211_903_498_2 * r + 0.680_699_545_1 * g + 0.107_396_956_6 * b).cbrt();
    let s = (0.088_302_461_9 * r + 0.281_718_837_6 * g + 0.629_978_700_5 * b).cbrt();
    [
        0.210_454_255_3 * l + 0.793_617_785_0 * m - 0.004_072_046_8 * s,
        1.977_998_495_1 * l - 2.428_592_205_0 * m + 0.450_593_709_9 * s,
        0.025_904_037_1 * l + 0.782_771_766_2 * m - 0.808_675_766_0 * s,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min_pairwise(colours: &[[u8; 3]]) -> f64 {
        let labs: Vec<_> = colours.iter().map(|&c| oklab(c)).collect();
        let mut min = f64::INFINITY;
        for i in 0..labs.len() {
            for j in i + 1..labs.len() {
                min = min.min(dist2(&labs[i], &labs[j]).sqrt());
            }
        }
        min
    }

    #[test]
    fn oklab_reference_values() {
        // White is L = 1, a = b = 0; pure red per Ottosson's table.
        let w = oklab([255, 255, 255]);
        assert!((w[0] - 1.0).abs() < 1e-4 && w[1].abs() < 1e-4 && w[2].abs() < 1e-4);
        let r = oklab([255, 0, 0]);
        assert!((r[0] - 0.627_955).abs() < 1e-3, "{r:?}");
        assert!((r[1] - 0.224_863).abs() < 1e-3, "{r:?}");
        assert!((r[2] - 0.125_846).abs() < 1e-3, "{r:?}");
    }

    /// Minimum pairwise OKLab distance (a just-noticeable difference is
    /// about 0.02): tab10 ≥ 0.11 (actual 0.113), tab20 ≥ 0.05 (0.054, its
    /// paired light/dark hues), the maximin set ≥ 0.13 for 21 classes
    /// (0.141), ≥ 0.09 for 50 (0.094), ≥ 0.065 for 100 (0.070); and no
    /// colour near white (OKLab L ≤ 0.9; white is 1).
    #[test]
    fn palettes_are_distinct_and_not_near_white() {
        for (n, threshold) in [(10, 0.11), (20, 0.05), (21, 0.13), (50, 0.09), (100, 0.065)] {
            let p = palette(n);
            assert_eq!(p.len(), n);
            let d = min_pairwise(&p);
            assert!(
                d >= threshold,
                "{n} classes: min distance {d:.4} < {threshold}"
            );
            for c in &p {
                assert!(oklab(*c)[0] <= 0.9, "{n} classes: {c:?} is near white");
                assert_ne!(*c, UNLABELLED);
            }
        }
    }

    #[test]
    fn palette_prefixes_and_degenerate_sizes() {
        assert!(palette(0).is_empty());
        assert_eq!(palette(3), TAB10[..3]);
        assert_eq!(palette(100)[..30], palette(30)[..]);
        assert_eq!(palette(100), palette(100));
        // Far more classes than candidates: colours repeat, sizes hold.
        let huge = palette(20_000);
        assert_eq!(huge.len(), 20_000);
    }
}
