//! The PNG back end: a white RGB canvas, anti-aliased discs composited with
//! straight alpha ("over"), block-scaled bitmap text, and the `image`
//! crate's PNG encoder.

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::PlotError;
use crate::font::{self, ADVANCE, ROWS};
use crate::layout::{FRAME, INK, PixRect, PlacedThumb, Scene, Text};

pub(crate) fn render(scene: &Scene<'_>) -> Result<Vec<u8>, PlotError> {
    let mut canvas = Canvas::new(scene.width, scene.height);
    let colours: Vec<[f32; 3]> = scene.colours.iter().map(|c| c.map(f32::from)).collect();
    let clip = canvas.clip(scene.frame);
    let unlabelled = scene.unlabelled_slot();
    for dot in &scene.dots {
        let alpha = if dot.slot == unlabelled {
            scene.unlabelled_alpha
        } else {
            scene.alpha
        };
        canvas.disc(
            dot.x,
            dot.y,
            scene.radius,
            colours[dot.slot as usize],
            alpha,
            clip,
        );
    }
    for thumb in &scene.thumbs {
        canvas.thumbnail(thumb, clip);
    }
    let f = scene.frame;
    let p = scene.frame_px as i32;
    let frame = FRAME.map(f32::from);
    let everything = canvas.clip(PixRect {
        x0: 0,
        y0: 0,
        x1: i32::MAX,
        y1: i32::MAX,
    });
    for side in [
        PixRect {
            x0: f.x0 - p,
            y0: f.y0 - p,
            x1: f.x1 + p,
            y1: f.y0,
        },
        PixRect {
            x0: f.x0 - p,
            y0: f.y1,
            x1: f.x1 + p,
            y1: f.y1 + p,
        },
        PixRect {
            x0: f.x0 - p,
            y0: f.y0,
            x1: f.x0,
            y1: f.y1,
        },
        PixRect {
            x0: f.x1,
            y0: f.y0,
            x1: f.x1 + p,
            y1: f.y1,
        },
    ] {
        canvas.fill(canvas.clip(side), frame);
    }
    for s in &scene.swatches {
        canvas.disc(s.cx, s.cy, s.r, colours[s.slot as usize], 1.0, everything);
    }
    for text in &scene.texts {
        canvas.text(text);
    }
    let rgb = canvas.into_rgb8();
    let mut png = Vec::new();
    PngEncoder::new(&mut png).write_image(
        &rgb,
        scene.width,
        scene.height,
        ExtendedColorType::Rgb8,
    )?;
    Ok(png)
}

/// RGB in floating point (sRGB values 0–255), so many faint layers add up
/// without rounding at each step.
struct Canvas {
    width: i32,
    height: i32,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Self {
            width: width as i32,
            height: height as i32,
            px: vec![[255.0; 3]; width as usize * height as usize],
        }
    }

    /// `r` limited to the canvas.
    fn clip(&self, r: PixRect) -> PixRect {
        PixRect {
            x0: r.x0.clamp(0, self.width),
            y0: r.y0.clamp(0, self.height),
            x1: r.x1.clamp(0, self.width),
            y1: r.y1.clamp(0, self.height),
        }
    }

    fn fill(&mut self, r: PixRect, rgb: [f32; 3]) {
        for y in r.y0..r.y1.max(r.y0) {
            let row = (y * self.width) as usize;
            self.px[row + r.x0 as usize..row + r.x1.max(r.x0) as usize].fill(rgb);
        }
    }

    /// A disc of radius `r` centred on (`cx`, `cy`), composited over the
    /// canvas with opacity `alpha` times its coverage of each pixel
    /// (approximated by the distance of the pixel centre from the edge).
    fn disc(&mut self, cx: f32, cy: f32, r: f32, rgb: [f32; 3], alpha: f32, clip: PixRect) {
        let reach = r + 0.5;
        let xa = ((cx - reach).floor() as i32).max(clip.x0);
        let xb = ((cx + reach).ceil() as i32).min(clip.x1);
        let ya = ((cy - reach).floor() as i32).max(clip.y0);
        let yb = ((cy + reach).ceil() as i32).min(clip.y1);
        for y in ya..yb {
            let dy = y as f32 + 0.5 - cy;
            let row = (y * self.width) as usize;
            for x in xa..xb {
                let dx = x as f32 + 0.5 - cx;
                let coverage = (reach - (dx * dx + dy * dy).sqrt()).min(1.0);
                if coverage > 0.0 {
                    let a = alpha * coverage;
                    let p = &mut self.px[row + x as usize];
                    for c in 0..3 {
                        p[c] += (rgb[c] - p[c]) * a;
                    }
                }
            }
        }
    }

    fn text(&mut self, t: &Text) {
        let ink = INK.map(f32::from);
        let s = t.scale as i32;
        for (i, ch) in t.text.chars().enumerate() {
            let glyph = font::glyph(ch);
            let gx = t.x + i as i32 * ADVANCE as i32 * s;
            for row in 0..ROWS {
                for col in 0..font::GLYPH_W {
                    if font::ink(glyph, col, row) {
                        let x0 = gx + col as i32 * s;
                        let y0 = t.top + row as i32 * s;
                        let block = PixRect {
                            x0,
                            y0,
                            x1: x0 + s,
                            y1: y0 + s,
                        };
                        self.fill(self.clip(block), ink);
                    }
                }
            }
        }
    }

    /// The framed thumbnail, resampled by area averaging (which is
    /// nearest-neighbour when enlarging by a whole factor).
    fn thumbnail(&mut self, t: &PlacedThumb<'_>, clip: PixRect) {
        let b = t.border as i32;
        let colour = t.colour.map(f32::from);
        let outer = PixRect {
            x0: t.x - b,
            y0: t.y - b,
            x1: t.x + t.w as i32 + b,
            y1: t.y + t.h as i32 + b,
        };
        self.fill(intersect(outer, clip), colour);
        let th = t.thumb;
        let (sw, sh, ch) = (th.width, th.height, th.channels);
        let (dw, dh) = (t.w as usize, t.h as usize);
        let span = |o: usize, src: usize, dst: usize| {
            let a = o * src / dst;
            let b = ((o + 1) * src).div_ceil(dst).max(a + 1);
            a..b
        };
        let inner = intersect(
            PixRect {
                x0: t.x,
                y0: t.y,
                x1: t.x + dw as i32,
                y1: t.y + dh as i32,
            },
            clip,
        );
        for y in inner.y0..inner.y1.max(inner.y0) {
            let ys = span((y - t.y) as usize, sh, dh);
            for x in inner.x0..inner.x1.max(inner.x0) {
                let xs = span((x - t.x) as usize, sw, dw);
                let mut sum = [0u32; 3];
                for sy in ys.clone() {
                    for sx in xs.clone() {
                        let p = &th.pixels[(sy * sw + sx) * ch..][..ch];
                        for (c, s) in sum.iter_mut().enumerate() {
                            *s += u32::from(p[if ch == 1 { 0 } else { c }]);
                        }
                    }
                }
                let count = (ys.len() * xs.len()) as f32;
                self.px[(y * self.width + x) as usize] = sum.map(|s| s as f32 / count);
            }
        }
    }

    fn into_rgb8(self) -> Vec<u8> {
        self.px
            .iter()
            .flat_map(|p| p.map(|v| v.round().clamp(0.0, 255.0) as u8))
            .collect()
    }
}

fn intersect(a: PixRect, b: PixRect) -> PixRect {
    PixRect {
        x0: a.x0.max(b.x0),
        y0: a.y0.max(b.y0),
        x1: a.x1.min(b.x1),
        y1: a.y1.min(b.y1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disc_covers_its_area_and_blends_over() {
        let mut c = Canvas::new(40, 40);
        let all = c.clip(PixRect {
            x0: 0,
            y0: 0,
            x1: 40,
            y1: 40,
        });
        c.disc(20.0, 20.0, 8.0, [0.0; 3], 1.0, all);
        // Coverage sums to about the disc's area.
        let ink: f32 = c.px.iter().map(|p| 1.0 - p[0] / 255.0).sum();
        let area = std::f32::consts::PI * 64.0;
        assert!((ink - area).abs() < 0.02 * area, "{ink} vs {area}");
        // Half-transparent red over black gives half red.
        c.disc(20.0, 20.0, 3.0, [255.0, 0.0, 0.0], 0.5, all);
        assert_eq!(c.px[20 * 40 + 20], [127.5, 0.0, 0.0]);
        // Clipping: nothing outside the clip rectangle changes.
        let mut c = Canvas::new(10, 10);
        c.disc(
            5.0,
            5.0,
            4.0,
            [0.0; 3],
            1.0,
            PixRect {
                x0: 0,
                y0: 0,
                x1: 5,
                y1: 10,
            },
        );
        assert!(
            c.px.iter()
                .enumerate()
                .all(|(i, p)| i % 10 < 5 || p[0] == 255.0)
        );
    }
}
