//! Rendering through the public API: PNG decodes with the right size and
//! colours, SVG is well formed with one circle per point, bad input is
//! refused, output is deterministic.

use tsimcne_plot::{Map, PlotError, Style, Thumbnail, palette, render_png, render_svg};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class {i}")).collect()
}

/// `per` points in a tight ring around each of `centres`, labelled by
/// centre.
fn clusters(centres: &[[f32; 2]], per: usize) -> (Vec<[f32; 2]>, Vec<Option<u32>>) {
    let mut points = Vec::new();
    let mut labels = Vec::new();
    for (c, centre) in centres.iter().enumerate() {
        for i in 0..per {
            let a = i as f32 * 2.4;
            let r = 0.3 * (i as f32 / per as f32).sqrt();
            points.push([centre[0] + r * a.cos(), centre[1] + r * a.sin()]);
            labels.push(Some(c as u32));
        }
    }
    (points, labels)
}

fn map<'a>(
    points: &'a [[f32; 2]],
    labels: &'a [Option<u32>],
    class_names: &'a [String],
) -> Map<'a> {
    Map {
        points,
        labels,
        class_names,
        title: None,
        thumbnails: &[],
    }
}

const SMALL: Style = Style {
    width: 640,
    height: 480,
    seed: 7,
};

/// Pixels of `rgb` whose channels are all within `tol` of `colour`.
fn pixels_near(rgb: &image::RgbImage, colour: [u8; 3], tol: i32) -> Vec<(u32, u32)> {
    rgb.enumerate_pixels()
        .filter(|(_, _, p)| (0..3).all(|c| (i32::from(p[c]) - i32::from(colour[c])).abs() <= tol))
        .map(|(x, y, _)| (x, y))
        .collect()
}

fn centroid(px: &[(u32, u32)]) -> (f64, f64) {
    let n = px.len() as f64;
    (
        px.iter().map(|p| f64::from(p.0)).sum::<f64>() / n,
        px.iter().map(|p| f64::from(p.1)).sum::<f64>() / n,
    )
}

#[test]
fn png_decodes_with_the_requested_size_and_class_colours_where_the_points_are() {
    // Class 0 on the left, class 1 on the right, class 2 at the top.
    let (points, labels) = clusters(&[[0.0, 0.0], [10.0, 0.0], [5.0, 8.0]], 40);
    let class_names = names(3);
    let png = render_png(&map(&points, &labels, &class_names), &SMALL).unwrap();
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    let colours = palette(3);
    let found: Vec<Vec<(u32, u32)>> = colours.iter().map(|&c| pixels_near(&img, c, 12)).collect();
    for (c, px) in found.iter().enumerate() {
        // The cluster's core (legend swatch aside, which has a few dozen).
        assert!(
            px.len() > 60,
            "class {c}: only {} pixels of its colour",
            px.len()
        );
    }
    // Centroids of the map pixels (left of the legend, which starts right
    // of the frame's right edge) follow the data.
    let frame_right = (0..640)
        .filter(|&x| img.get_pixel(x, 240).0 == [0x55; 3])
        .max()
        .unwrap();
    assert!(frame_right > 320, "{frame_right}");
    let frame_only = |px: &Vec<(u32, u32)>| {
        px.iter()
            .copied()
            .filter(|p| p.0 < frame_right)
            .collect::<Vec<_>>()
    };
    let (c0, c1, c2) = (
        centroid(&frame_only(&found[0])),
        centroid(&frame_only(&found[1])),
        centroid(&frame_only(&found[2])),
    );
    assert!(c0.0 + 100.0 < c1.0, "{c0:?} {c1:?}");
    assert!(c2.1 + 100.0 < c0.1 && c2.1 + 100.0 < c1.1, "{c2:?} {c0:?}");
    assert!((c2.0 - (c0.0 + c1.0) / 2.0).abs() < 10.0, "{c2:?}");
    // Equal aspect: the x distance 10 and the y distance 8 keep their ratio.
    let ratio = (c0.1 - c2.1) / (c1.0 - c0.0);
    assert!((ratio - 0.8).abs() < 0.05, "{ratio}");
    // White away from the points.
    assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
    let (mx, my) = ((c0.0 + c2.0) / 2.0, (c0.1 + c2.1) / 2.0);
    assert_eq!(img.get_pixel(mx as u32, my as u32).0, [255, 255, 255]);
}

#[test]
fn png_and_svg_are_deterministic_for_a_seed() {
    // Overlapping classes, so the drawing order shows.
    let (points, labels) = clusters(&[[0.0, 0.0], [0.05, 0.0], [0.0, 0.05], [9.0, 9.0]], 500);
    let class_names = names(4);
    let m = map(&points, &labels, &class_names);
    assert_eq!(
        render_png(&m, &SMALL).unwrap(),
        render_png(&m, &SMALL).unwrap()
    );
    assert_eq!(
        render_svg(&m, &SMALL).unwrap(),
        render_svg(&m, &SMALL).unwrap()
    );
    let other = Style { seed: 8, ..SMALL };
    assert_ne!(
        render_png(&m, &SMALL).unwrap(),
        render_png(&m, &other).unwrap()
    );
    assert_ne!(
        render_svg(&m, &SMALL).unwrap(),
        render_svg(&m, &other).unwrap()
    );
}

/// The `class="…"` of every circle, in document order.
fn circle_classes(svg: &str) -> Vec<&str> {
    svg.split("<circle class=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect()
}

/// Values of attribute `name` on elements starting with `tag`.
fn attr_values(svg: &str, tag: &str, name: &str) -> Vec<f64> {
    let key = format!(" {name}=\"");
    svg.split(tag)
        .skip(1)
        .map(|s| {
            let s = &s[..s.find('>').unwrap()];
            let v = &s[s.find(&key).unwrap() + key.len()..];
            v[..v.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

#[test]
fn svg_has_one_circle_per_point_in_shuffled_order_and_escaped_text() {
    let (points, labels) = clusters(&[[0.0, 0.0], [3.0, 0.0]], 500);
    let class_names = vec!["a<b&c".to_owned(), "plain \"quoted\"".to_owned()];
    let m = Map {
        title: Some("finetune \u{b7} kNN@15 <0.812>"),
        ..map(&points, &labels, &class_names)
    };
    let svg = render_svg(&m, &SMALL).unwrap();
    well_formed(&svg);
    assert_eq!(svg.matches("<circle").count(), points.len());
    assert!(
        svg.contains(">a&lt;b&amp;c</text>"),
        "{}",
        &svg[svg.len() - 800..]
    );
    assert!(svg.contains(">plain &quot;quoted&quot;</text>"));
    assert!(svg.contains(">finetune \u{b7} kNN@15 &lt;0.812&gt;</text>"));
    assert!(!svg.contains("a<b"));
    // Drawn in a shuffled order, not class by class.
    let classes = circle_classes(&svg);
    let switches = classes.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches > 300, "{switches} class switches");
    assert!(svg.contains(".c0{fill:#1f77b4}"));
    // Coordinates carry at most one decimal.
    for v in svg
        .split(" cx=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
    {
        assert!(v.split('.').nth(1).is_none_or(|d| d.len() == 1), "{v}");
    }
}

#[test]
fn unlabelled_points_are_grey_underneath_and_in_the_legend() {
    let (points, mut labels) = clusters(&[[0.0, 0.0], [3.0, 0.0]], 100);
    for l in labels.iter_mut().step_by(2) {
        *l = None;
    }
    let svg = render_svg(&map(&points, &labels, &names(2)), &SMALL).unwrap();
    well_formed(&svg);
    let classes = circle_classes(&svg);
    assert!(classes[..100].iter().all(|&c| c == "u") && classes[100..].iter().all(|&c| c != "u"));
    assert!(svg.contains(">unlabelled</text>"));

    // No labels at all: no legend, just the points.
    let none = vec![None; points.len()];
    let svg = render_svg(&map(&points, &none, &[]), &SMALL).unwrap();
    assert_eq!(svg.matches("<text").count(), 0);
    assert_eq!(svg.matches("<circle").count(), points.len());
    render_png(&map(&points, &none, &[]), &SMALL).unwrap();
}

#[test]
fn without_class_names_the_legend_shows_the_labels_present() {
    let (points, mut labels) = clusters(&[[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], 20);
    for l in labels.iter_mut() {
        *l = l.map(|l| [7, 4_000_000_000, 12][l as usize]);
    }
    let svg = render_svg(&map(&points, &labels, &[]), &SMALL).unwrap();
    well_formed(&svg);
    let texts: Vec<&str> = svg
        .split("\">")
        .skip(1)
        .filter_map(|s| s.split_once("</text>").map(|t| t.0))
        .collect();
    assert_eq!(texts, ["7", "12", "4000000000"]);
    assert_eq!(svg.matches("<ellipse").count(), 3);
}

#[test]
fn thumbnails_are_drawn_framed_in_both_formats() {
    let (points, labels) = clusters(&[[0.0, 0.0], [3.0, 3.0]], 50);
    let red = Thumbnail {
        point: 10,
        height: 8,
        width: 12,
        channels: 3,
        pixels: [250, 0, 0].repeat(96),
    };
    let grey = Thumbnail {
        point: 70,
        height: 16,
        width: 16,
        channels: 1,
        pixels: vec![40; 256],
    };
    let thumbnails = [red, grey];
    let class_names = names(2);
    let m = Map {
        thumbnails: &thumbnails,
        ..map(&points, &labels, &class_names)
    };
    let img = image::load_from_memory(&render_png(&m, &SMALL).unwrap())
        .unwrap()
        .to_rgb8();
    let reds = pixels_near(&img, [250, 0, 0], 0);
    let greys = pixels_near(&img, [40, 40, 40], 0);
    // Shown about 5 % of the frame across, enlarged by a whole factor (so
    // a whole number of copies of each pixel): 12×8 twice, 16×16 once.
    assert_eq!(reds.len(), 96 * 4);
    assert_eq!(greys.len(), 256);
    assert!(centroid(&reds).0 < centroid(&greys).0);

    let svg = render_svg(&m, &SMALL).unwrap();
    well_formed(&svg);
    assert_eq!(svg.matches("<image").count(), 2);
    let uri = "href=\"data:image/png;base64,";
    let first = svg.split(uri).nth(1).unwrap();
    let png = base64_decode(&first[..first.find('"').unwrap()]);
    let thumb = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(thumb.dimensions(), (12, 8));
    assert_eq!(thumb.get_pixel(5, 5).0, [250, 0, 0]);
    assert_eq!(svg.matches("<circle").count(), points.len());
}

#[test]
fn a_wild_outlier_does_not_shrink_the_map() {
    let (mut points, mut labels) = clusters(&[[0.0, 0.0], [3.0, 0.0]], 1000);
    points.push([1e6, -1e6]);
    labels.push(Some(0));
    let svg = render_svg(&map(&points, &labels, &names(2)), &SMALL).unwrap();
    let cx = attr_values(&svg, "<circle", "cx");
    let (lo, hi) = cx
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            if x.abs() < 1e5 {
                (a.min(x), b.max(x))
            } else {
                (a, b)
            }
        });
    assert!(hi - lo > 300.0, "the clusters span only {:.0} px", hi - lo);
}

#[test]
fn layout_holds_at_odd_sizes_with_many_classes_and_long_text() {
    let centres: Vec<[f32; 2]> = (0..100)
        .map(|i| [(i % 10) as f32, (i / 10) as f32])
        .collect();
    let (points, labels) = clusters(&centres, 30);
    let class_names: Vec<String> = (0..100)
        .map(|i| format!("a rather long class name number {i}"))
        .collect();
    let title = "t".repeat(500);
    for (width, height) in [(1600, 1200), (64, 64), (4000, 300), (300, 4000), (800, 600)] {
        let style = Style {
            width,
            height,
            seed: 1,
        };
        let m = Map {
            title: Some(&title),
            ..map(&points, &labels, &class_names)
        };
        let img = image::load_from_memory(&render_png(&m, &style).unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (width, height));
        let svg = render_svg(&m, &style).unwrap();
        well_formed(&svg);
        assert_eq!(svg.matches("<circle").count(), points.len());
        // All text starts inside the picture.
        let xs = attr_values(&svg, "<text", "x");
        assert!(
            xs.iter().all(|&x| x >= 0.0 && x < f64::from(width)),
            "{width}x{height}: {xs:?}"
        );
        let ys = attr_values(&svg, "<text", "y");
        assert!(
            ys.iter().all(|&y| y > 0.0 && y <= f64::from(height)),
            "{width}x{height}"
        );
    }
}

#[test]
fn identical_points_and_a_single_point_render() {
    for n in [1, 5] {
        let points = vec![[2.0, 3.0]; n];
        let labels = vec![Some(0); n];
        let class_names = names(1);
        let m = map(&points, &labels, &class_names);
        let img = image::load_from_memory(&render_png(&m, &SMALL).unwrap())
            .unwrap()
            .to_rgb8();
        assert!(!pixels_near(&img, palette(1)[0], 30).is_empty());
        assert_eq!(
            render_svg(&m, &SMALL).unwrap().matches("<circle").count(),
            n
        );
    }
}

#[test]
fn bad_input_is_refused() {
    let points = [[0.0, 0.0], [1.0, 1.0]];
    let labels = [Some(0), Some(1)];
    let class_names = names(2);
    let ok = map(&points, &labels, &class_names);
    let check = |m: &Map<'_>, style: &Style, expected: &str| {
        let png = render_png(m, style).unwrap_err();
        let svg = render_svg(m, style).unwrap_err();
        assert_eq!(png.to_string(), svg.to_string());
        assert_eq!(png.to_string(), expected);
        png
    };

    let e = check(&map(&[], &[], &class_names), &SMALL, "no points to plot");
    assert!(matches!(e, PlotError::Empty));
    let e = check(
        &map(&points, &labels[..1], &class_names),
        &SMALL,
        "1 labels for 2 points",
    );
    assert!(matches!(
        e,
        PlotError::LabelCount {
            points: 2,
            labels: 1
        }
    ));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let points = [[0.0, 0.0], [1.0, bad]];
        let e = check(
            &map(&points, &labels, &class_names),
            &SMALL,
            &format!("point 1 has a non-finite coordinate (1, {bad})"),
        );
        assert!(matches!(e, PlotError::NonFinite { index: 1, .. }));
    }
    let e = check(
        &map(&points, &[Some(0), Some(2)], &class_names),
        &SMALL,
        "point 1 has label 2 but there are only 2 class names",
    );
    assert!(matches!(
        e,
        PlotError::LabelOutOfRange {
            index: 1,
            label: 2,
            classes: 2
        }
    ));
    for (width, height) in [(63, 480), (640, 0), (8193, 480)] {
        let e = check(
            &ok,
            &Style {
                width,
                height,
                seed: 0,
            },
            &format!("picture size {width}x{height} is outside 64..=8192 per side"),
        );
        assert!(matches!(e, PlotError::BadSize { .. }));
    }
    let thumb = |point, height, width, channels, len| Thumbnail {
        point,
        height,
        width,
        channels,
        pixels: vec![0; len],
    };
    for (t, message) in [
        (
            thumb(2, 2, 2, 1, 4),
            "thumbnail 1: point 2 is not among the 2 points",
        ),
        (
            thumb(0, 2, 2, 4, 16),
            "thumbnail 1: 4 channels, expected 1 or 3",
        ),
        (thumb(0, 0, 2, 1, 0), "thumbnail 1: empty image 0x2"),
        (
            thumb(0, 2, 2, 3, 11),
            "thumbnail 1: 11 bytes for a 2x2x3 image",
        ),
        (
            thumb(0, 5000, 1, 1, 5000),
            "thumbnail 1: image 5000x1 is larger than 4096x4096",
        ),
    ] {
        let thumbnails = [thumb(0, 2, 2, 1, 4), t];
        let e = check(
            &Map {
                thumbnails: &thumbnails,
                ..ok
            },
            &SMALL,
            message,
        );
        assert!(matches!(e, PlotError::BadThumbnail { index: 1, .. }));
    }
    // Labels need no names; any label is fine then.
    render_png(&map(&points, &[Some(9), None], &[]), &SMALL).unwrap();
}

/// A small checker of the XML this crate writes: balanced tags, one root,
/// quoted attributes, no raw `<` or stray `&` in text or attribute values.
fn well_formed(xml: &str) {
    let entity_ok = |s: &str| {
        s.match_indices('&').all(|(i, _)| {
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| s[i..].starts_with(e))
        })
    };
    let mut rest = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("xml declaration");
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        assert!(entity_ok(text), "bad text {text:?}");
        assert!(
            !stack.is_empty() || text.trim().is_empty(),
            "text outside the root: {text:?}"
        );
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "bad name {name:?}"
        );
        while !attrs.trim().is_empty() {
            let (key, after) = attrs
                .trim_start()
                .split_once("=\"")
                .expect("attribute without a quoted value");
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "{key:?}"
            );
            let end = after.find('"').expect("unterminated attribute");
            let value = &after[..end];
            assert!(
                !value.contains('<') && entity_ok(value),
                "bad value {value:?}"
            );
            attrs = &after[end + 1..];
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
    assert!(rest.trim().is_empty());
    assert_eq!(roots, 1);
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let data: Vec<u32> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| u32::from(value(c)))
            .collect();
        let n = data.iter().fold(0u32, |acc, v| acc << 6 | v) << (6 * (4 - data.len()));
        out.extend_from_slice(&n.to_be_bytes()[1..data.len()]);
    }
    out
}
