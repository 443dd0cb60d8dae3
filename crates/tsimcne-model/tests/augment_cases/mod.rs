//! The augmentation settings the GPU augmentation is checked with, on the
//! CPU's emulation (cuda_host.rs) and on a GPU (cuda_fast.rs).

use tsimcne_augment::AugmentConfig;

/// Every view jittered (each op in a drawn order), 30 % greyed.
pub fn jittery() -> AugmentConfig {
    AugmentConfig {
        jitter_p: 1.0,
        grayscale_p: 0.3,
        ..AugmentConfig::default()
    }
}

/// The recipe's views, then normalised per channel.
pub fn normalised() -> AugmentConfig {
    AugmentConfig {
        normalize: Some((vec![0.5, 0.4, 0.3], vec![0.25, 0.2, 0.3])),
        ..AugmentConfig::default()
    }
}
