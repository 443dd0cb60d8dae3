//! The embedded bitmap font: 5×7 glyphs (plus two descender rows) drawn by
//! hand in `font.txt`, covering printable ASCII and a few extras. Text is
//! laid out on a 6×9 cell grid (one column of spacing), scaled by an
//! integer factor.

use std::sync::OnceLock;

/// Glyph ink width in font pixels.
pub(crate) const GLYPH_W: u32 = 5;
/// Horizontal advance per character in font pixels.
pub(crate) const ADVANCE: u32 = 6;
/// Rows above and on the baseline (the cap height) in font pixels.
pub(crate) const CAP: u32 = 7;
/// Rows of a glyph, descenders included.
pub(crate) const ROWS: usize = 9;

/// One glyph: `ROWS` rows of `GLYPH_W` bits, the most significant of the
/// five bits on the left.
pub(crate) type Glyph = [u8; ROWS];

struct Font {
    ascii: [Glyph; 95],
    extras: Vec<(char, Glyph)>,
}

fn font() -> &'static Font {
    static FONT: OnceLock<Font> = OnceLock::new();
    FONT.get_or_init(|| parse(include_str!("font.txt")).expect("the embedded font parses"))
}

/// Parses the `font.txt` format; `Err` names the first problem.
fn parse(text: &str) -> Result<Font, String> {
    let mut ascii: [Option<Glyph>; 95] = [None; 95];
    let mut extras = Vec::new();
    let mut current: Option<(char, Vec<u8>)> = None;
    let mut finish = |current: &mut Option<(char, Vec<u8>)>| -> Result<(), String> {
        if let Some((ch, rows)) = current.take() {
            if !(7..=ROWS).contains(&rows.len()) {
                return Err(format!("glyph {ch:?} has {} rows", rows.len()));
            }
            let mut glyph = [0u8; ROWS];
            glyph[..rows.len()].copy_from_slice(&rows);
            match (ch as u32).checked_sub(32) {
                Some(i) if i < 95 => ascii[i as usize] = Some(glyph),
                _ => extras.push((ch, glyph)),
            }
        }
        Ok(())
    };
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with("# ") || line == "#" {
            continue; // a comment: glyph rows never contain spaces
        }
        if let Some(rest) = line.strip_prefix("0x") {
            finish(&mut current)?;
            let hex = rest.split_whitespace().next().unwrap_or("");
            let code = u32::from_str_radix(hex, 16).map_err(|e| format!("{line}: {e}"))?;
            let ch = char::from_u32(code).ok_or_else(|| format!("{line}: not a char"))?;
            current = Some((ch, Vec::new()));
        } else if line.is_empty() {
            finish(&mut current)?;
        } else if let Some((ch, rows)) = current.as_mut() {
            if line.len() != GLYPH_W as usize || !line.chars().all(|c| c == '#' || c == '.') {
                return Err(format!("glyph {ch:?}: bad row {line:?}"));
            }
            let bits = line
                .bytes()
                .fold(0u8, |acc, b| (acc << 1) | u8::from(b == b'#'));
            rows.push(bits);
        } else {
            return Err(format!("row outside a glyph: {line:?}"));
        }
    }
    finish(&mut current)?;
    let mut out = [[0u8; ROWS]; 95];
    for (i, glyph) in ascii.iter().enumerate() {
        out[i] = glyph.ok_or_else(|| format!("no glyph for {:?}", char::from(32 + i as u8)))?;
    }
    Ok(Font { ascii: out, extras })
}

/// The glyph for `ch`; characters the font lacks are drawn as `?`.
pub(crate) fn glyph(ch: char) -> &'static Glyph {
    let font = font();
    let code = ch as u32;
    if (32..127).contains(&code) {
        return &font.ascii[(code - 32) as usize];
    }
    let ch = match ch {
        '\u{2013}' | '\u{2014}' | '\u{2212}' => '-',
        '\u{00d7}' => 'x',
        other => other,
    };
    if ch.is_ascii() && (32..127).contains(&(ch as u32)) {
        return &font.ascii[(ch as u32 - 32) as usize];
    }
    font.extras
        .iter()
        .find(|(c, _)| *c == ch)
        .map_or(&font.ascii[(b'?' - 32) as usize], |(_, g)| g)
}

/// Whether pixel (`col`, `row`) of a glyph is ink.
pub(crate) fn ink(glyph: &Glyph, col: u32, row: usize) -> bool {
    glyph[row] >> (GLYPH_W - 1 - col) & 1 == 1
}

/// Width in pixels of `text` at `scale`, from the first ink column to the
/// last possible one (no trailing spacing column).
pub(crate) fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - (ADVANCE - GLYPH_W)) * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_covers_printable_ascii_and_extras() {
        let font = parse(include_str!("font.txt")).unwrap();
        // Every printable character except space has ink; space has none.
        for (i, g) in font.ascii.iter().enumerate() {
            let ch = char::from(32 + i as u8);
            assert_eq!(g.iter().any(|&r| r != 0), ch != ' ', "{ch:?}");
        }
        // No two printable glyphs are identical.
        for i in 0..95 {
            for j in i + 1..95 {
                assert_ne!(font.ascii[i], font.ascii[j], "{i} {j}");
            }
        }
        assert!(font.extras.iter().any(|(c, _)| *c == '\u{b7}'));
        assert!(font.extras.iter().any(|(c, _)| *c == '\u{2026}'));
    }

    #[test]
    fn descenders_only_where_expected() {
        for ch in (32u8..127).map(char::from) {
            let g = glyph(ch);
            let has_descender = g[7] != 0 || g[8] != 0;
            assert_eq!(has_descender, "gjpqy,_".contains(ch), "{ch:?}");
        }
    }

    #[test]
    fn unknown_characters_draw_as_question_marks() {
        assert_eq!(glyph('\u{4e2d}'), glyph('?'));
        assert_eq!(glyph('\u{2014}'), glyph('-'));
        assert_ne!(glyph('\u{b7}'), glyph('?'));
        assert_eq!(text_width("", 2), 0);
        assert_eq!(text_width("ab", 2), 22);
    }

    #[test]
    fn parse_rejects_malformed_glyphs() {
        assert!(parse("0x41\n###\n").is_err());
        assert!(parse("0x41\n#####\n").is_err());
        assert!(parse("0xZZ\n").is_err());
    }
}
