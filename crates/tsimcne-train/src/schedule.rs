//! The learning-rate schedule of the reference: linear warm-up, then cosine
//! decay, changing once per epoch.
//!
//! For a stage of `E` epochs with `W` warm-up epochs the reference builds
//! `[linspace(0, base, W); base·½·(1 + cos(π·t/(E+1−W))) for t = 0..=E−W]`
//! and epoch `e` uses entry `e`. With warm-up the first epoch therefore runs
//! at lr 0; that quirk is kept so runs match the reference.

/// The base learning rate for a batch of `batch_images` images: 0.03·batch/256.
pub fn base_lr(batch_images: usize) -> f64 {
    0.03 * batch_images as f64 / 256.0
}

/// The learning rate of every epoch `0..epochs`.
pub fn lr_schedule(base: f64, epochs: usize, warmup: usize) -> Vec<f64> {
    let warmup = warmup.min(epochs);
    let mut out: Vec<f64> = (0..warmup)
        .map(|i| {
            if warmup == 1 {
                0.0
            } else {
                base * i as f64 / (warmup - 1) as f64
            }
        })
        .collect();
    let anneal = epochs + 1 - warmup;
    out.extend(
        (0..anneal)
            .map(|t| base * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / anneal as f64).cos())),
    );
    out.truncate(epochs);
    out
}
