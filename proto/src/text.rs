//! Text that came from the network, made safe to show: [`echo`] bounds a value quoted back in an
//! error message, [`printable`] neutralises control characters before a string reaches a
//! terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters of client input an error message quotes back; longer values are cut.
pub const ECHO_CHARS: usize = 64;

/// `value` quoted and escaped as Rust's `{:?}` does, cut to [`ECHO_CHARS`] characters (then
/// `…` marks the cut). Error messages must not grow with the input: a status message travels in
/// an HTTP/2 header, and an oversized one turns the error into a different one.
pub fn echo(value: &str) -> String {
    match value.char_indices().nth(ECHO_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
    }
}

/// True for characters that change how a terminal shows the text around them: C0 and C1 control
/// characters (escape sequences start with ESC or CSI) and the Unicode bidirectional controls,
/// which reorder what is displayed.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character (see [`is_unsafe_char`]) written as a visible escape such as
/// `\u{1b}`, so a string from the network cannot move the cursor, recolour or rewrite a
/// terminal's output. Borrows when nothing needs escaping.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Seconds as `1h02m03s` (rounded; negative counts as zero).
pub fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hms_rounds_and_clamps() {
        assert_eq!(
            (hms(3723.4), hms(-5.0), hms(59.6)),
            ("1h02m03s".into(), "0h00m00s".into(), "0h01m00s".into())
        );
    }

    #[test]
    fn echo_quotes_and_bounds_the_value() {
        assert_eq!(echo("bogus"), "\"bogus\"");
        assert_eq!(echo("a\u{1b}[2J"), "\"a\\u{1b}[2J\"");
        let long = "x".repeat(1_000_000);
        let echoed = echo(&long);
        assert_eq!(echoed, format!("\"{}\"…", "x".repeat(ECHO_CHARS)));
        // Cut on a character boundary, counted in characters.
        let wide = "é".repeat(100);
        assert_eq!(echo(&wide), format!("\"{}\"…", "é".repeat(ECHO_CHARS)));
    }

    #[test]
    fn a_huge_unknown_variant_gets_a_short_invalid_argument() {
        let wire = crate::pb::SweepSpec {
            name: "s".into(),
            variants: vec!["v".repeat(1 << 20)],
            seeds: vec![0],
            epochs: 1,
            batch_size: 1,
            ..Default::default()
        };
        let err = crate::SweepSpec::try_from(wire).unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().len() < 300, "{}", status.message().len());
        assert!(status.message().contains("unknown loss variant \"vvvv") && status.message().contains('…'));
    }

    #[test]
    fn printable_escapes_terminal_controls_only() {
        assert!(matches!(printable("gpu-01 (H200)"), Cow::Borrowed(_)));
        assert_eq!(printable("host\u{1b}[31mred\u{7}"), "host\\u{1b}[31mred\\u{7}");
        assert_eq!(printable("a\nb\rc\td"), "a\\u{a}b\\u{d}c\\u{9}d");
        assert_eq!(printable("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("naïve ✓"), "naïve ✓");
    }
}
