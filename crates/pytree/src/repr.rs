//! Python `repr` of strings and tuples of strings.
//!
//! Orbax names each `_METADATA` entry with `str(tuple(str(k) for k in path))`,
//! and JAX prints dict keys with `repr`, so both need CPython's exact rules.

use std::fmt::Write;

/// Appends the CPython 3 `repr` of `text` to `out`.
///
/// The quote is `'` unless the text contains `'` and no `"`. Inside, `\\`,
/// the chosen quote, `\t`, `\n` and `\r` get backslash escapes. Other
/// characters that Python does not consider printable become `\xhh`,
/// `\uhhhh` or `\Uhhhhhhhh`.
pub(crate) fn push_str_repr(out: &mut String, text: &str) {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };

    out.push(quote);
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if ch == quote => {
                out.push('\\');
                out.push(ch);
            }
            _ if is_printable(ch) => out.push(ch),
            _ => push_escaped_code_point(out, ch),
        }
    }
    out.push(quote);
}

/// Returns the CPython `repr` of `text`.
pub(crate) fn str_repr(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_str_repr(&mut out, text);
    out
}

/// Returns the CPython `str` of a tuple of strings: `()`, `('a',)` or `('a', 'b')`.
pub(crate) fn tuple_repr<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("(");
    let mut count = 0usize;
    for item in items {
        if count > 0 {
            out.push_str(", ");
        }
        push_str_repr(&mut out, item);
        count += 1;
    }
    // A 1-tuple needs a trailing comma to differ from a parenthesized expression.
    if count == 1 {
        out.push(',');
    }
    out.push(')');
    out
}

fn push_escaped_code_point(out: &mut String, ch: char) {
    let code = u32::from(ch);
    // Writing into a String cannot fail.
    let _ = if code < 0x100 {
        write!(out, "\\x{code:02x}")
    } else if code < 0x1_0000 {
        write!(out, "\\u{code:04x}")
    } else {
        write!(out, "\\U{code:08x}")
    };
}

/// Non-ASCII code points that CPython's `str.isprintable` rejects: categories
/// Cc, Cf, Co, Zl, Zp and Zs, taken from Python 3.11 (Unicode 14.0), plus the
/// noncharacters, which are unassigned in every Unicode version.
///
/// NOTE: other unassigned code points (category Cn) are treated as printable
/// although Python escapes them, so an entry key that contains one differs
/// from the one Orbax writes. Readers ignore entry keys, so only byte-level
/// comparisons of `_METADATA` notice.
const NON_PRINTABLE_RANGES: &[(u32, u32)] = &[
    (0x80, 0xa0),
    (0xad, 0xad),
    (0x600, 0x605),
    (0x61c, 0x61c),
    (0x6dd, 0x6dd),
    (0x70f, 0x70f),
    (0x890, 0x891),
    (0x8e2, 0x8e2),
    (0x1680, 0x1680),
    (0x180e, 0x180e),
    (0x2000, 0x200f),
    (0x2028, 0x202f),
    (0x205f, 0x2064),
    (0x2066, 0x206f),
    (0x3000, 0x3000),
    (0xe000, 0xf8ff),
    (0xfdd0, 0xfdef),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x13438),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
    (0xf0000, 0xffffd),
    (0x100000, 0x10fffd),
];

fn is_printable(ch: char) -> bool {
    if ch.is_ascii() {
        return (' '..='~').contains(&ch);
    }
    let code = u32::from(ch);
    // U+xFFFE and U+xFFFF are noncharacters in every plane.
    if code & 0xfffe == 0xfffe {
        return false;
    }
    !NON_PRINTABLE_RANGES
        .iter()
        .any(|&(first, last)| (first..=last).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs of input and the output of CPython 3.11 `repr`.
    const STR_CASES: &[(&str, &str)] = &[
        ("", "''"),
        ("lr", "'lr'"),
        ("it's", "\"it's\""),
        ("say \"hi\"", "'say \"hi\"'"),
        ("both ' and \"", "'both \\' and \"'"),
        ("back\\slash", "'back\\\\slash'"),
        ("tab\tnl\ncr\r", "'tab\\tnl\\ncr\\r'"),
        ("nul\0bell\x07del\x7f", "'nul\\x00bell\\x07del\\x7f'"),
        ("héllo ✓", "'héllo ✓'"),
        ("nbsp\u{a0}shy\u{ad}", "'nbsp\\xa0shy\\xad'"),
        ("zwsp\u{200b}bom\u{feff}", "'zwsp\\u200bbom\\ufeff'"),
        ("line\u{2028}", "'line\\u2028'"),
        ("private\u{e000}", "'private\\ue000'"),
        ("nonchar\u{fffe}", "'nonchar\\ufffe'"),
        ("tag\u{e0041}", "'tag\\U000e0041'"),
        ("emoji😀", "'emoji😀'"),
        ("/", "'/'"),
    ];

    #[test]
    fn str_repr_matches_python() {
        for (input, expected) in STR_CASES {
            assert_eq!(str_repr(input), *expected, "repr of {input:?}");
        }
    }

    #[test]
    fn tuple_repr_empty() {
        assert_eq!(tuple_repr([]), "()");
    }

    #[test]
    fn tuple_repr_single_has_comma() {
        assert_eq!(tuple_repr(["lr"]), "('lr',)");
    }

    #[test]
    fn tuple_repr_several() {
        assert_eq!(tuple_repr(["opt", "1", "0"]), "('opt', '1', '0')");
    }

    #[test]
    fn tuple_repr_mixed_quotes() {
        assert_eq!(tuple_repr(["a'b", "c"]), "(\"a'b\", 'c')");
    }
}
