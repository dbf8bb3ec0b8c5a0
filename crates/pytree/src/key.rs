use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::error::KeyPathParseError;
use crate::repr::str_repr;

/// One step of a key path: a dict key or a list or tuple index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A dict key. Orbax stores it with `key_type` 2.
    Dict(String),
    /// A list or tuple index. Orbax stores it with `key_type` 1.
    Index(usize),
}

impl Key {
    /// Returns the key as Orbax stores it in `key_metadata` and joins it into
    /// parameter names: the dict key itself, or the index in decimal.
    pub fn name(&self) -> Cow<'_, str> {
        match self {
            Key::Dict(key) => Cow::Borrowed(key),
            Key::Index(index) => Cow::Owned(index.to_string()),
        }
    }

    /// Returns the Orbax key type of this key.
    pub fn key_type(&self) -> KeyType {
        match self {
            Key::Dict(_) => KeyType::Dict,
            Key::Index(_) => KeyType::Sequence,
        }
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Self {
        Key::Dict(key.to_owned())
    }
}

impl From<String> for Key {
    fn from(key: String) -> Self {
        Key::Dict(key)
    }
}

impl From<usize> for Key {
    fn from(index: usize) -> Self {
        Key::Index(index)
    }
}

/// Formats the key as `jax.tree_util.keystr` does: `['name']` with Python
/// string quoting for a dict key, `[0]` for an index.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Dict(key) => write!(f, "[{}]", str_repr(key)),
            Key::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// The `key_type` codes that Orbax writes in `_METADATA` `key_metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// A list or tuple index (JAX `SequenceKey`), code 1.
    Sequence = 1,
    /// A dict key (JAX `DictKey`, also dataclass and namedtuple fields), code 2.
    Dict = 2,
}

impl KeyType {
    /// Returns the integer code stored in `_METADATA`.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Returns the key type for an integer code, or `None` for codes other than 1 and 2.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(KeyType::Sequence),
            2 => Some(KeyType::Dict),
            _ => None,
        }
    }
}

/// The keys that lead from the root of a tree to one of its nodes.
///
/// `Display` follows `jax.tree_util.keystr`, so `{"opt": [x, (y, z)]}` gives
/// the path of `z` as `['opt'][1][1]`. Unlike `keystr`, which prints nothing
/// for the root, the empty path prints as `<root>` so that error messages stay
/// readable. This form, unlike the parameter name, distinguishes `{"a.b": x}`
/// from `{"a": {"b": x}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(Vec<Key>);

impl KeyPath {
    /// Creates the empty path, which names the root.
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// Returns the keys from the root down.
    pub fn keys(&self) -> &[Key] {
        &self.0
    }

    /// Returns the number of keys, which is the depth of the node it names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Returns whether this is the root path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends a key, descending one level.
    pub fn push(&mut self, key: impl Into<Key>) {
        self.0.push(key.into());
    }

    /// Removes and returns the last key, ascending one level.
    pub fn pop(&mut self) -> Option<Key> {
        self.0.pop()
    }

    /// Returns a new path with `key` appended.
    pub fn child(&self, key: impl Into<Key>) -> KeyPath {
        let mut keys = Vec::with_capacity(self.0.len() + 1);
        keys.extend_from_slice(&self.0);
        keys.push(key.into());
        KeyPath(keys)
    }

    /// Returns an iterator over the keys from the root down.
    pub fn iter(&self) -> std::slice::Iter<'_, Key> {
        self.0.iter()
    }

    /// Returns the keys as a vector.
    pub fn into_keys(self) -> Vec<Key> {
        self.0
    }
}

impl From<Vec<Key>> for KeyPath {
    fn from(keys: Vec<Key>) -> Self {
        KeyPath(keys)
    }
}

impl FromIterator<Key> for KeyPath {
    fn from_iter<I: IntoIterator<Item = Key>>(iter: I) -> Self {
        KeyPath(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a KeyPath {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<root>");
        }
        for key in &self.0 {
            write!(f, "{key}")?;
        }
        Ok(())
    }
}

/// Parses the text that `Display` prints: `jax.tree_util.keystr` form such
/// as `['opt'][1][0]`, or `<root>` (also the empty string) for the root.
///
/// Dict keys may use either quote and the escapes of a Python string
/// literal that `repr` emits (`\\`, `\'`, `\"`, `\t`, `\n`, `\r`, `\xhh`,
/// `\uhhhh`, `\Uhhhhhhhh`). A `.name` step, which `keystr` prints for
/// attributes of dataclasses and namedtuples, parses as the dict key
/// `name`, because Orbax stores attribute keys as dict keys.
impl FromStr for KeyPath {
    type Err = KeyPathParseError;

    fn from_str(text: &str) -> Result<KeyPath, KeyPathParseError> {
        if text.is_empty() || text == "<root>" {
            return Ok(KeyPath::root());
        }
        let mut parser = KeyPathParser {
            text,
            offset: 0,
        };
        let mut keys = Vec::new();
        while parser.offset < text.len() {
            keys.push(parser.key()?);
        }
        Ok(KeyPath(keys))
    }
}

/// A cursor over the text of a key path.
struct KeyPathParser<'a> {
    text: &'a str,
    offset: usize,
}

impl KeyPathParser<'_> {
    fn error(&self, reason: impl Into<String>) -> KeyPathParseError {
        KeyPathParseError {
            text: self.text.to_owned(),
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.offset..].chars().next()
    }

    fn next_char(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.offset += ch.len_utf8();
        Some(ch)
    }

    fn expect(&mut self, expected: char) -> Result<(), KeyPathParseError> {
        match self.peek() {
            Some(ch) if ch == expected => {
                self.offset += ch.len_utf8();
                Ok(())
            }
            _ => Err(self.error(format!("expected {expected:?}"))),
        }
    }

    /// Parses one `[...]` or `.name` step.
    fn key(&mut self) -> Result<Key, KeyPathParseError> {
        match self.peek() {
            Some('[') => {
                self.offset += 1;
                let key = match self.peek() {
                    Some(quote @ ('\'' | '"')) => {
                        self.offset += 1;
                        Key::Dict(self.string_body(quote)?)
                    }
                    Some(ch) if ch.is_ascii_digit() => Key::Index(self.index()?),
                    _ => return Err(self.error("expected a quoted dict key or a decimal index")),
                };
                self.expect(']')?;
                Ok(key)
            }
            Some('.') => {
                self.offset += 1;
                let start = self.offset;
                while matches!(self.peek(), Some(ch) if ch == '_' || ch.is_alphanumeric()) {
                    self.next_char();
                }
                if self.offset == start {
                    return Err(self.error("expected an attribute name after '.'"));
                }
                Ok(Key::Dict(self.text[start..self.offset].to_owned()))
            }
            _ => Err(self.error("expected '[' or '.'")),
        }
    }

    fn index(&mut self) -> Result<usize, KeyPathParseError> {
        let start = self.offset;
        while matches!(self.peek(), Some(ch) if ch.is_ascii_digit()) {
            self.offset += 1;
        }
        let digits = &self.text[start..self.offset];
        if digits.len() > 1 && digits.starts_with('0') {
            self.offset = start;
            return Err(self.error("an index has no leading zeros"));
        }
        digits.parse().map_err(|_| {
            self.offset = start;
            self.error("the index does not fit in usize")
        })
    }

    /// Parses the rest of a string literal opened by `quote`.
    fn string_body(&mut self, quote: char) -> Result<String, KeyPathParseError> {
        let mut out = String::new();
        loop {
            match self.next_char() {
                None => return Err(self.error(format!("unterminated string, expected {quote:?}"))),
                Some(ch) if ch == quote => return Ok(out),
                Some('\\') => out.push(self.escape()?),
                Some(ch) => out.push(ch),
            }
        }
    }

    /// Parses the escape sequence after a backslash.
    fn escape(&mut self) -> Result<char, KeyPathParseError> {
        let backslash = self.offset - 1;
        let ch = match self.next_char() {
            Some('\\') => '\\',
            Some('\'') => '\'',
            Some('"') => '"',
            Some('t') => '\t',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('x') => self.code_point(2)?,
            Some('u') => self.code_point(4)?,
            Some('U') => self.code_point(8)?,
            _ => {
                self.offset = backslash;
                return Err(self.error("unknown escape sequence"));
            }
        };
        Ok(ch)
    }

    fn code_point(&mut self, digits: usize) -> Result<char, KeyPathParseError> {
        let start = self.offset;
        let hex = self
            .text
            .get(start..start + digits)
            .filter(|hex| hex.chars().all(|ch| ch.is_ascii_hexdigit()))
            .ok_or_else(|| self.error(format!("expected {digits} hex digits")))?;
        let code = u32::from_str_radix(hex, 16).map_err(|_| self.error("invalid hex digits"))?;
        let ch = char::from_u32(code).ok_or_else(|| self.error(format!("{code:#x} is not a Unicode scalar value")))?;
        self.offset += digits;
        Ok(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: impl IntoIterator<Item = Key>) -> KeyPath {
        keys.into_iter().collect()
    }

    #[test]
    fn key_name_dict() {
        assert_eq!(Key::from("kernel").name(), "kernel");
    }

    #[test]
    fn key_name_index() {
        assert_eq!(Key::Index(12).name(), "12");
    }

    #[test]
    fn key_type_codes() {
        assert_eq!(Key::from("a").key_type().code(), 2);
        assert_eq!(Key::Index(0).key_type().code(), 1);
    }

    #[test]
    fn key_type_from_code() {
        assert_eq!(KeyType::from_code(1), Some(KeyType::Sequence));
        assert_eq!(KeyType::from_code(2), Some(KeyType::Dict));
        assert_eq!(KeyType::from_code(0), None);
        assert_eq!(KeyType::from_code(3), None);
    }

    #[test]
    fn display_like_keystr() {
        let opt = path([Key::from("opt"), Key::Index(1), Key::Index(0)]);
        assert_eq!(opt.to_string(), "['opt'][1][0]");
    }

    #[test]
    fn display_quotes_like_python() {
        let quoted = path([Key::from("it's"), Key::from("a\\b")]);
        assert_eq!(quoted.to_string(), "[\"it's\"]['a\\\\b']");
    }

    #[test]
    fn display_root() {
        assert_eq!(KeyPath::root().to_string(), "<root>");
    }

    #[test]
    fn display_separates_dotted_keys() {
        let dotted = path([Key::from("a.b")]);
        let nested = path([Key::from("a"), Key::from("b")]);
        assert_ne!(dotted.to_string(), nested.to_string());
    }

    #[test]
    fn push_pop_child() {
        let mut path = KeyPath::root();
        path.push("a");
        let child = path.child(3);
        assert_eq!(child.keys(), [Key::from("a"), Key::Index(3)]);
        assert_eq!(path.pop(), Some(Key::from("a")));
        assert!(path.is_empty());
    }

    #[test]
    fn parse_round_trips_display() {
        let paths = [
            path([Key::from("opt"), Key::Index(1), Key::Index(0)]),
            path([Key::from("it's"), Key::from("a\\b"), Key::from("tab\there")]),
            path([Key::from("caf\u{e9}"), Key::from("bell\u{7}"), Key::from("\u{2028}")]),
            path([Key::from("")]),
            KeyPath::root(),
        ];
        for expected in paths {
            let text = expected.to_string();
            assert_eq!(text.parse::<KeyPath>(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn parse_accepts_attributes() {
        let parsed: KeyPath = ".params['w'][2]".parse().unwrap();
        assert_eq!(parsed, path([Key::from("params"), Key::from("w"), Key::Index(2)]));
    }

    #[test]
    fn parse_accepts_double_quotes() {
        let parsed: KeyPath = "[\"a'b\"]".parse().unwrap();
        assert_eq!(parsed, path([Key::from("a'b")]));
    }

    #[test]
    fn parse_rejects_malformed() {
        let cases = [
            ("params", 0),
            ("['a'", 4),
            ("['a]", 4),
            ("[01]", 1),
            ("[-1]", 1),
            ("['a\\q']", 3),
            ("['\\xZZ']", 4),
            (".", 1),
            ("[0] ", 3),
        ];
        for (text, offset) in cases {
            let error = text.parse::<KeyPath>().unwrap_err();
            assert_eq!(error.offset, offset, "{text}: {error}");
        }
    }
}
