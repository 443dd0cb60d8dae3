//! The page: one HTML file with the styles, the data and the code inline.
//!
//! The page is ASCII but for one block, and declares itself windows-1252:
//! in that encoding every byte is one character, so the thumbnail sheets'
//! PNG bytes go into the page as themselves ([`script_bytes`]), not as
//! base64 (a third larger). Every other character outside ASCII is written
//! as an escape: `\u` in the JSON and the code, a character reference in
//! the HTML.
//!
//! The data goes into a `<script type="application/json">` block. JSON can
//! hold `</script>` or `<!--` inside a string, which would end the block or
//! change how the HTML parser reads it, so every `<`, `>` and `&` in the
//! JSON is written as its `\u` escape: the block then holds no markup at
//! all, whatever the strings are, and `JSON.parse` gives the strings back
//! unchanged. The page's code puts strings into the document only through
//! `textContent` and attributes, never as HTML.

use serde::Serialize;

use crate::{ExploreError, Result};

/// The page's parts, compiled into the binary.
const TEMPLATE: &str = include_str!("page/explore.html");
const STYLE: &str = include_str!("page/explore.css");
const SCRIPT: &str = include_str!("page/explore.js");

/// `value` as ASCII JSON that is inert inside a `<script>` block.
pub(crate) fn script_json(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).expect("page data is always serialisable");
    let mut out = String::with_capacity(json.len() + json.len() / 64);
    for ch in json.chars() {
        match ch {
            '<' | '>' | '&' => push_js_escape(&mut out, ch),
            c if c.is_ascii() => out.push(c),
            // Outside ASCII (line and paragraph separators included, which
            // end a line in older JavaScript).
            c => push_js_escape(&mut out, c),
        }
    }
    out
}

/// `ch` as JavaScript's (and JSON's) `\uXXXX` escapes: one, or a surrogate
/// pair above U+FFFF.
fn push_js_escape(out: &mut String, ch: char) {
    let mut units = [0u16; 2];
    for u in ch.encode_utf16(&mut units) {
        out.push_str(&format!("\\u{u:04x}"));
    }
}

/// The page's code with every character outside ASCII as its `\u` escape
/// (the same character in a string, a regular expression or a comment).
fn js_ascii(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    for ch in code.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            push_js_escape(&mut out, ch);
        }
    }
    out
}

/// The escape byte of [`script_bytes`].
const ESCAPE: u8 = 0x1b;

/// `bytes` as the content of a `<script>` block in a windows-1252 page,
/// each byte one character: all but four stand for themselves. NUL (which
/// the HTML parser replaces), CR (which it turns into LF), `<` (which could
/// end the block) and the escape byte are written as ESC and then the byte
/// XOR 0x40, none of which is escaped itself. The page's `blockBytes`
/// reads them back.
pub(crate) fn script_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 50);
    for &b in bytes {
        match b {
            0x00 | b'\r' | b'<' | ESCAPE => out.extend([ESCAPE, b ^ 0x40]),
            b => out.push(b),
        }
    }
    out
}

/// `text` escaped for HTML text and attribute values.
pub(crate) fn html_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("&#x{:x};", u32::from(c))),
        }
    }
    out
}

/// The page: the template with its five slots filled, in one pass, so text
/// in one slot is never read as another slot's marker. The thumbnail sheets
/// (`sheets`, the [`script_bytes`] of the PNGs, most of a page's bytes) come
/// after the code, so the browser runs it, and draws the points, before it
/// has parsed them. Everything but `sheets` is ASCII.
pub(crate) fn render(title: &str, data_json: &str, sheets: &[u8]) -> Result<Vec<u8>> {
    let (title, script) = (html_text(title), js_ascii(SCRIPT));
    let slots: [(&str, &[u8]); 5] = [
        ("{{TITLE}}", title.as_bytes()),
        ("{{STYLE}}", STYLE.as_bytes()),
        ("{{DATA}}", data_json.as_bytes()),
        ("{{SCRIPT}}", script.as_bytes()),
        ("{{SHEETS}}", sheets),
    ];
    let mut out =
        Vec::with_capacity(TEMPLATE.len() + data_json.len() + SCRIPT.len() + sheets.len());
    let mut rest = TEMPLATE;
    for (marker, value) in &slots {
        let (head, tail) = rest
            .split_once(marker)
            .ok_or_else(|| ExploreError::Invalid(format!("the page template has no {marker}")))?;
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(value);
        rest = tail;
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_holds_no_markup_and_round_trips() {
        let hostile = vec![
            "</script><script>alert(1)</script>".to_string(),
            "<!-- <img src=x onerror=alert(1)> & \u{2028}".to_string(),
        ];
        let json = script_json(&hostile);
        for bad in ['<', '>', '&', '\u{2028}'] {
            assert!(!json.contains(bad), "{json}");
        }
        let back: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, hostile);
    }

    #[test]
    fn script_json_is_ascii_and_round_trips_every_character() {
        let text = vec!["caf\u{e9} \u{2028} \u{1f600} \u{7f} \u{80}".to_string()];
        let json = script_json(&text);
        assert!(json.is_ascii(), "{json}");
        assert!(json.contains("\\ud83d\\ude00"), "{json}");
        let back: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn the_page_has_each_slot_once() {
        let html = render("a <b> & \"c\" \u{e9}", "{\"x\":\"{{SCRIPT}}\"}", b"").unwrap();
        let html = String::from_utf8(html).unwrap();
        assert!(html.is_ascii());
        assert!(html.contains("<title>a &lt;b&gt; &amp; &quot;c&quot; &#xe9;</title>"));
        // A slot marker inside the data is data, not a slot.
        assert!(html.contains("{\"x\":\"{{SCRIPT}}\"}"));
        assert_eq!(html.matches("<script").count(), 3);
        for slot in ["{{TITLE}}", "{{STYLE}}", "{{DATA}}", "{{SHEETS}}"] {
            assert!(!html.contains(slot), "unfilled {slot}");
        }
        assert_eq!(html.matches("{{SCRIPT}}").count(), 1);
        assert!(html.contains("<meta charset=\"windows-1252\">"));
    }

    /// Every byte but the four escaped ones stands for itself, and the
    /// block holds no NUL, CR or `<`: decoding it back (as the page does)
    /// gives the bytes.
    #[test]
    fn script_bytes_round_trip_and_hold_nothing_the_parser_changes() {
        let bytes: Vec<u8> = (0..=255u8).chain([0, 0x1b, b'<', b'\r', b'\n']).collect();
        let block = script_bytes(&bytes);
        assert_eq!(block.len(), bytes.len() + 8);
        for bad in [0u8, b'\r', b'<'] {
            assert!(!block.contains(&bad), "{bad:#x}");
        }
        let mut back = Vec::new();
        let mut it = block.iter();
        while let Some(&b) = it.next() {
            back.push(if b == ESCAPE {
                it.next().unwrap() ^ 0x40
            } else {
                b
            });
        }
        assert_eq!(back, bytes);
    }

    /// The page's own parts need no escaping but the code's.
    #[test]
    fn the_template_and_styles_are_ascii() {
        assert!(STYLE.is_ascii());
        assert!(js_ascii(SCRIPT).is_ascii());
        assert!(
            TEMPLATE.is_ascii(),
            "use character references in explore.html"
        );
    }

    /// The inline code and styles cannot end their own element early.
    #[test]
    fn the_inline_code_holds_no_closing_tags() {
        assert!(!SCRIPT.to_ascii_lowercase().contains("</script"));
        assert!(!SCRIPT.contains("<!--"));
        assert!(!STYLE.to_ascii_lowercase().contains("</style"));
    }
}
