//! The SVG back end: the same scene as the PNG, as text. Points are
//! `<circle>`s in drawing order whose colour comes from a one-rule CSS
//! class per slot (`.c3`, `.u` for unlabelled), so each costs about 45
//! bytes; thumbnails are embedded PNGs.

use std::fmt::Write;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::PlotError;
use crate::font::{self, CAP};
use crate::layout::{FRAME, INK, Scene};

pub(crate) fn render(scene: &Scene<'_>) -> Result<String, PlotError> {
    let (w, h) = (scene.width, scene.height);
    let mut s = String::with_capacity(512 + scene.dots.len() * 48);
    let unlabelled = scene.unlabelled_slot();
    let class = |slot: u32| {
        if slot == unlabelled {
            "u".to_owned()
        } else {
            format!("c{slot}")
        }
    };

    // Writing to a String cannot fail: the results are ignored below.
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    s.push_str("<style>\n");
    let _ = writeln!(s, "circle{{fill-opacity:{:.3}}}", scene.alpha);
    let _ = writeln!(s, "circle.u{{fill-opacity:{:.3}}}", scene.unlabelled_alpha);
    for (slot, c) in scene.colours.iter().enumerate() {
        let _ = writeln!(s, ".{}{{fill:{}}}", class(slot as u32), hex(*c));
    }
    let _ = writeln!(
        s,
        "text{{font-family:monospace;fill:{};white-space:pre}}",
        hex(INK)
    );
    s.push_str("</style>\n");
    let _ = writeln!(s, "<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>");

    let f = scene.frame;
    let _ = writeln!(
        s,
        "<clipPath id=\"map\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/></clipPath>",
        f.x0,
        f.y0,
        f.x1 - f.x0,
        f.y1 - f.y0
    );
    s.push_str("<g clip-path=\"url(#map)\">\n");
    let mut r = String::new();
    num(&mut r, scene.radius);
    for dot in &scene.dots {
        let _ = write!(s, "<circle class=\"{}\" cx=\"", class(dot.slot));
        num(&mut s, dot.x);
        s.push_str("\" cy=\"");
        num(&mut s, dot.y);
        let _ = writeln!(s, "\" r=\"{r}\"/>");
    }
    for t in &scene.thumbs {
        let b = t.border;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>",
            t.x - b as i32,
            t.y - b as i32,
            t.w + 2 * b,
            t.h + 2 * b,
            hex(t.colour)
        );
        let th = t.thumb;
        let colour = if th.channels == 1 {
            ExtendedColorType::L8
        } else {
            ExtendedColorType::Rgb8
        };
        let mut png = Vec::new();
        PngEncoder::new(&mut png).write_image(
            &th.pixels,
            th.width as u32,
            th.height as u32,
            colour,
        )?;
        let pixelated = if t.w as usize >= th.width {
            " style=\"image-rendering:pixelated\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<image x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\"{pixelated} href=\"data:image/png;base64,{}\"/>",
            t.x,
            t.y,
            t.w,
            t.h,
            base64(&png)
        );
    }
    s.push_str("</g>\n");

    let p = scene.frame_px as f32;
    s.push_str("<rect x=\"");
    num(&mut s, f.x0 as f32 - p / 2.0);
    s.push_str("\" y=\"");
    num(&mut s, f.y0 as f32 - p / 2.0);
    let _ = writeln!(
        s,
        "\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"/>",
        f.x1 - f.x0 + scene.frame_px as i32,
        f.y1 - f.y0 + scene.frame_px as i32,
        hex(FRAME),
        scene.frame_px
    );
    for sw in &scene.swatches {
        let _ = write!(s, "<ellipse class=\"{}\" cx=\"", class(sw.slot));
        num(&mut s, sw.cx);
        s.push_str("\" cy=\"");
        num(&mut s, sw.cy);
        s.push_str("\" rx=\"");
        num(&mut s, sw.r);
        s.push_str("\" ry=\"");
        num(&mut s, sw.r);
        s.push_str("\"/>\n");
    }
    for t in &scene.texts {
        // Monospace advances 0.6 em, so this font size gives the bitmap
        // font's advance; the baseline is the bottom of the capitals.
        let size = 10 * t.scale;
        let baseline = t.top + (CAP * t.scale) as i32;
        if t.centred {
            let cx = t.x as f32 + font::text_width(&t.text, t.scale) as f32 / 2.0;
            s.push_str("<text text-anchor=\"middle\" x=\"");
            num(&mut s, cx);
            let _ = write!(s, "\" y=\"{baseline}\" font-size=\"{size}\">");
        } else {
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{baseline}\" font-size=\"{size}\">",
                t.x
            );
        }
        escape(&mut s, &t.text);
        s.push_str("</text>\n");
    }
    s.push_str("</svg>\n");
    Ok(s)
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// `v` with one decimal, without a trailing `.0`.
fn num(s: &mut String, v: f32) {
    let tenths = (f64::from(v) * 10.0).round() as i64;
    if tenths < 0 {
        s.push('-');
    }
    let t = tenths.unsigned_abs();
    let _ = write!(s, "{}", t / 10);
    if !t.is_multiple_of(10) {
        let _ = write!(s, ".{}", t % 10);
    }
}

/// Appends `text` with XML's five special characters escaped.
pub(crate) fn escape(s: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            c => s.push(c),
        }
    }
}

/// Standard base64 (RFC 4648 §4) with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn numbers_have_at_most_one_decimal() {
        let mut s = String::new();
        for v in [0.0, 1.25, 12.0, -3.04, -0.04, 1599.96] {
            num(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "0 1.3 12 -3 0 1600 ");
    }

    #[test]
    fn escape_special_characters() {
        let mut s = String::new();
        escape(&mut s, "a<b&c>\"d'");
        assert_eq!(s, "a&lt;b&amp;c&gt;&quot;d&apos;");
    }
}
