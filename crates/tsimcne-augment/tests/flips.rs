//! Views that are the image or its mirror image (`AugmentConfig::flips_only`),
//! which the trainer may compute once per image and flip.

use tsimcne_augment::{
    AugmentConfig, Scratch, Shape, apply, plain, sample_params, two_views_of, view_flip,
    view_stream,
};

fn flips_only() -> AugmentConfig {
    AugmentConfig {
        crop_scale: (1.0, 1.0),
        jitter_p: 0.0,
        ..AugmentConfig::default()
    }
}

/// On square images of any size, every crop such a config draws is the
/// whole image, jitter and greyscale never happen, and the flip is the
/// one `view_flip` reports.
#[test]
fn square_images_get_whole_crops_and_the_reported_flip() {
    let cfg = flips_only();
    for side in [8, 13, 14, 28, 32, 64, 97] {
        for channels in [1, 3] {
            let shape = Shape {
                height: side,
                width: side,
                channels,
            };
            let cfg = AugmentConfig {
                grayscale_p: if channels == 3 { 0.0 } else { 0.2 },
                ..cfg.clone()
            };
            assert!(cfg.flips_only(shape));
            let mut flips = [0usize; 2];
            for id in 0..300 {
                for view in 0..2 {
                    let p = sample_params(&mut view_stream(7, 3, id, view), shape, &cfg);
                    assert_eq!(p.crop, (0, 0, side, side), "side {side}, id {id}");
                    assert!(p.jitter.is_none());
                    assert!(channels == 1 || !p.grayscale);
                    assert_eq!(p.flip, view_flip(7, 3, id, view, shape, &cfg));
                    flips[usize::from(p.flip)] += 1;
                }
            }
            assert!(flips[0] > 200 && flips[1] > 200, "{flips:?}");
        }
    }
}

/// The views `two_views_of` makes are then exactly the plain image or its
/// mirror image.
#[test]
fn views_are_the_image_or_its_mirror() {
    let shape = Shape {
        height: 14,
        width: 14,
        channels: 1,
    };
    let cfg = flips_only();
    let images: Vec<Vec<u8>> = (0..6u8)
        .map(|i| {
            (0..196u32)
                .map(|k| (k as u8).wrapping_mul(31).wrapping_add(i * 17))
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let ids: Vec<u64> = (0..6).collect();
    let mut out = vec![0f32; 12 * 196];
    two_views_of(&refs, &refs, &ids, shape, &cfg, 5, 2, 2, &mut out);
    for (k, view) in out.chunks_exact(196).enumerate() {
        let (v, i) = (k / 6, k % 6);
        let mut expected = vec![0f32; 196];
        plain(refs[i], shape, &cfg, &mut expected);
        if view_flip(5, 2, ids[i], v as u64, shape, &cfg) {
            for row in expected.chunks_exact_mut(14) {
                row.reverse();
            }
        }
        assert_eq!(view, &expected[..], "view {v} of image {i}");
        // The same through `apply`, as the trainer's cache makes them.
        let p = sample_params(&mut view_stream(5, 2, ids[i], v as u64), shape, &cfg);
        let mut again = vec![0f32; 196];
        apply(
            refs[i],
            shape,
            &p,
            &cfg,
            &mut Scratch::default(),
            &mut again,
        );
        assert_eq!(view, &again[..]);
    }
}

#[test]
fn other_settings_are_not_flips_only() {
    let square = Shape {
        height: 14,
        width: 14,
        channels: 3,
    };
    assert!(!AugmentConfig::default().flips_only(square));
    let cfg = flips_only();
    assert!(!cfg.flips_only(square), "colour images may still turn grey");
    let grey_off = AugmentConfig {
        grayscale_p: 0.0,
        ..cfg.clone()
    };
    assert!(grey_off.flips_only(square));
    let wide = Shape {
        height: 14,
        width: 20,
        channels: 1,
    };
    assert!(
        !cfg.flips_only(wide),
        "a wide image's fallback crop is not the whole image"
    );
    assert!(
        !AugmentConfig {
            jitter_p: 0.1,
            ..cfg.clone()
        }
        .flips_only(Shape {
            channels: 1,
            ..square
        })
    );
    assert!(
        !AugmentConfig {
            crop_ratio: (1.2, 1.5),
            ..cfg
        }
        .flips_only(Shape {
            channels: 1,
            ..square
        })
    );
}
