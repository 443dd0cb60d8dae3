//! The page: one HTML file with the styles, the data and the code inline.
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

/// `value` as JSON that is inert inside a `<script>` block.
pub(crate) fn script_json(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).expect("page data is always serialisable");
    let mut out = String::with_capacity(json.len() + json.len() / 64);
    for ch in json.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            // Line and paragraph separators end a line in older JavaScript.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
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
            c => out.push(c),
        }
    }
    out
}

/// The page: the template with its five slots filled, in one pass, so text
/// in one slot is never read as another slot's marker. The thumbnail sheets
/// (`sheets_json`, most of a page's bytes) come after the code, so the
/// browser runs it, and draws the points, before it has parsed them.
pub(crate) fn render(title: &str, data_json: &str, sheets_json: &str) -> Result<String> {
    let slots = [
        ("{{TITLE}}", html_text(title)),
        ("{{STYLE}}", STYLE.to_string()),
        ("{{DATA}}", data_json.to_string()),
        ("{{SCRIPT}}", SCRIPT.to_string()),
        ("{{SHEETS}}", sheets_json.to_string()),
    ];
    let mut out =
        String::with_capacity(TEMPLATE.len() + data_json.len() + SCRIPT.len() + sheets_json.len());
    let mut rest = TEMPLATE;
    for (marker, value) in &slots {
        let (head, tail) = rest
            .split_once(marker)
            .ok_or_else(|| ExploreError::Invalid(format!("the page template has no {marker}")))?;
        out.push_str(head);
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
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
    fn the_page_has_each_slot_once() {
        let html = render("a <b> & \"c\"", "{\"x\":\"{{SCRIPT}}\"}", "[]").unwrap();
        assert!(html.contains("<title>a &lt;b&gt; &amp; &quot;c&quot;</title>"));
        // A slot marker inside the data is data, not a slot.
        assert!(html.contains("{\"x\":\"{{SCRIPT}}\"}"));
        assert_eq!(html.matches("<script").count(), 3);
        for slot in ["{{TITLE}}", "{{STYLE}}", "{{DATA}}", "{{SHEETS}}"] {
            assert!(!html.contains(slot), "unfilled {slot}");
        }
        assert_eq!(html.matches("{{SCRIPT}}").count(), 1);
    }

    /// The inline code and styles cannot end their own element early.
    #[test]
    fn the_inline_code_holds_no_closing_tags() {
        assert!(!SCRIPT.to_ascii_lowercase().contains("</script"));
        assert!(!SCRIPT.contains("<!--"));
        assert!(!STYLE.to_ascii_lowercase().contains("</style"));
    }
}
