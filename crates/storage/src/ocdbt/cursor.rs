//! Checked reads of the primitives that OCDBT structures are built from.

use std::ops::Range;

use super::OcdbtError;

/// Maximum bytes of a 64-bit LEB128 varint.
const MAX_VARINT_BYTES: usize = 10;

/// A read position in a byte slice. Every read checks the bytes left.
pub(super) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Returns the range of the next `len` bytes and moves past them.
    pub(super) fn take_range(
        &mut self,
        len: u64,
        field: &'static str,
    ) -> Result<Range<usize>, OcdbtError> {
        let available = self.remaining();
        let Some(len) = usize::try_from(len).ok().filter(|len| *len <= available) else {
            return Err(OcdbtError::UnexpectedEnd {
                field,
                needed: len,
                available: available as u64,
            });
        };
        let start = self.pos;
        self.pos += len;
        Ok(start..self.pos)
    }

    pub(super) fn take(&mut self, len: u64, field: &'static str) -> Result<&'a [u8], OcdbtError> {
        let range = self.take_range(len, field)?;
        Ok(&self.data[range])
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], OcdbtError> {
        let bytes = self.take(N as u64, field)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, OcdbtError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(super) fn u32_be(&mut self, field: &'static str) -> Result<u32, OcdbtError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(super) fn u64_le(&mut self, field: &'static str) -> Result<u64, OcdbtError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(super) fn i32_le(&mut self, field: &'static str) -> Result<i32, OcdbtError> {
        Ok(i32::from_le_bytes(self.array(field)?))
    }

    pub(super) fn varint(&mut self, field: &'static str) -> Result<u64, OcdbtError> {
        let (value, len) = decode_varint(&self.data[self.pos..], field)?;
        self.pos += len;
        Ok(value)
    }

    /// Reads a varint and checks it against `limit`.
    pub(super) fn varint_max(
        &mut self,
        field: &'static str,
        limit: u64,
    ) -> Result<u64, OcdbtError> {
        let value = self.varint(field)?;
        if value > limit {
            return Err(OcdbtError::LimitExceeded {
                field,
                value,
                limit,
            });
        }
        Ok(value)
    }

    /// Reads the entry count of a column-major array whose entries each take
    /// at least `min_entry_bytes`, so the count is checked against the bytes
    /// left before anything is allocated from it.
    pub(super) fn count(
        &mut self,
        field: &'static str,
        limit: u64,
        min_entry_bytes: u64,
    ) -> Result<usize, OcdbtError> {
        let count = self.varint_max(field, limit)?;
        let needed = count.saturating_mul(min_entry_bytes);
        if needed > self.remaining() as u64 {
            return Err(OcdbtError::UnexpectedEnd {
                field,
                needed,
                available: self.remaining() as u64,
            });
        }
        Ok(count as usize)
    }

    /// Reads `count` varints, each at most `limit`.
    pub(super) fn varint_column(
        &mut self,
        field: &'static str,
        count: usize,
        limit: u64,
    ) -> Result<Vec<u64>, OcdbtError> {
        (0..count).map(|_| self.varint_max(field, limit)).collect()
    }

    /// Checks that the whole input was used.
    pub(super) fn finish(&self, structure: &'static str) -> Result<(), OcdbtError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(OcdbtError::TrailingBytes {
                structure,
                count: count as u64,
            }),
        }
    }
}

/// Decodes an unsigned LEB128 varint from the start of `input`.
///
/// Returns the value and the number of bytes it took. Rejects encodings
/// longer than necessary (a final zero byte after a continuation) and values
/// that do not fit in 64 bits, so every value has exactly one encoding.
pub(super) fn decode_varint(input: &[u8], field: &'static str) -> Result<(u64, usize), OcdbtError> {
    let mut value = 0u64;
    for (index, &byte) in input.iter().take(MAX_VARINT_BYTES).enumerate() {
        if index == MAX_VARINT_BYTES - 1 && byte > 1 {
            return Err(OcdbtError::InvalidVarint {
                field,
                reason: "the value does not fit in 64 bits",
            });
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(OcdbtError::InvalidVarint {
                    field,
                    reason: "the encoding is longer than necessary",
                });
            }
            return Ok((value, index + 1));
        }
    }
    Err(OcdbtError::UnexpectedEnd {
        field,
        needed: input.len() as u64 + 1,
        available: input.len() as u64,
    })
}

/// Appends `value` as an unsigned LEB128 varint.
pub(super) fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, value);
        out
    }

    #[test]
    fn varint_round_trips() {
        for value in [0, 1, 127, 128, 300, 1 << 32, u64::MAX - 1, u64::MAX] {
            let bytes = encode(value);
            assert_eq!(decode_varint(&bytes, "v").unwrap(), (value, bytes.len()));
        }
    }

    #[test]
    fn varint_max_is_ten_bytes() {
        assert_eq!(encode(u64::MAX).len(), 10);
    }

    #[test]
    fn varint_overlong_rejected() {
        let err = decode_varint(&[0x80, 0x00], "v").unwrap_err();
        assert!(matches!(err, OcdbtError::InvalidVarint { .. }), "{err}");
    }

    #[test]
    fn varint_overflow_rejected() {
        let mut bytes = vec![0xff; 9];
        bytes.push(0x02);
        let err = decode_varint(&bytes, "v").unwrap_err();
        assert!(matches!(err, OcdbtError::InvalidVarint { .. }), "{err}");
    }

    #[test]
    fn varint_eleven_bytes_rejected() {
        let err = decode_varint(&[0x80; 11], "v").unwrap_err();
        assert!(matches!(err, OcdbtError::InvalidVarint { .. }), "{err}");
    }

    #[test]
    fn varint_truncated_rejected() {
        let err = decode_varint(&[0x80, 0x80], "v").unwrap_err();
        assert!(matches!(err, OcdbtError::UnexpectedEnd { .. }), "{err}");
    }

    #[test]
    fn count_checked_against_input() {
        let mut bytes = encode(1000);
        bytes.extend([0u8; 10]);
        let mut cursor = Cursor::new(&bytes);
        let err = cursor.count("n", u64::MAX, 1).unwrap_err();
        assert!(matches!(err, OcdbtError::UnexpectedEnd { .. }), "{err}");
    }
}
