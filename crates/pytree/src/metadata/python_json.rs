//! A `serde_json` formatter that writes what Python's `json.dumps` writes
//! with its default arguments.

use std::io::{self, Write};

use serde_json::ser::Formatter;

/// Writes JSON like `json.dumps(obj)` in CPython 3: `", "` and `": "` as
/// separators, every character outside printable ASCII as a lowercase `\uXXXX`
/// escape (UTF-16 surrogate pairs above U+FFFF), and floats as `repr` spells
/// them (`1e-05`, `1e+16`).
pub(crate) struct PythonJsonFormatter;

impl Formatter for PythonJsonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    /// Receives text that needs no JSON escape. Python's `ensure_ascii` also
    /// escapes DEL and every non-ASCII character, so those are escaped here.
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut run_start = 0;
        for (position, ch) in fragment.char_indices() {
            if (' '..='~').contains(&ch) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[run_start..position])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            run_start = position + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[run_start..])
    }

    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(python_float_repr(value).as_bytes())
    }
}

/// Returns Python's `repr` of a finite float.
///
/// Rust's `{:?}` already gives the shortest round-trip digits and switches to
/// exponent notation at the same magnitudes as Python (below 1e-4 and from
/// 1e16). Only the exponent differs: Python always writes its sign and at
/// least two digits.
fn python_float_repr(value: f64) -> String {
    let debug = format!("{value:?}");
    let Some((mantissa, exponent)) = debug.split_once('e') else {
        return debug;
    };
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(digits) => ('-', digits),
        None => ('+', exponent),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn dumps(value: &serde_json::Value) -> String {
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonJsonFormatter);
        let result = value.serialize(&mut serializer);
        assert!(result.is_ok(), "{result:?}");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn separators_match_python() {
        let value = serde_json::json!({"a": [1, 2, {}], "b": {"c": null, "d": []}});
        assert_eq!(
            dumps(&value),
            r#"{"a": [1, 2, {}], "b": {"c": null, "d": []}}"#
        );
    }

    /// Expected outputs come from `json.dumps` in CPython 3.11.
    #[test]
    fn strings_match_python() {
        let cases = [
            ("héllo ✓", r#""h\u00e9llo \u2713""#),
            ("emoji😀", r#""emoji\ud83d\ude00""#),
            ("q\"b\\s/", r#""q\"b\\s/""#),
            (
                "c\u{1}\u{8}\u{c}\n\r\t\u{7f}",
                r#""c\u0001\b\f\n\r\t\u007f""#,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                dumps(&serde_json::Value::from(input)),
                expected,
                "{input:?}"
            );
        }
    }

    /// Expected outputs are CPython 3.11 `repr` of the same floats.
    #[test]
    fn floats_match_python() {
        let cases = [
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (1e16, "1e+16"),
            (9.9e15, "9900000000000000.0"),
            (1.5e300, "1.5e+300"),
            (3.0, "3.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (5e-324, "5e-324"),
            (-2.5e-7, "-2.5e-07"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "{value:?}");
        }
    }
}
