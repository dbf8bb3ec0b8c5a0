use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// An element type that Orbax writes.
///
/// Element bytes are little-endian and arrays are C order. `Int4` stores one
/// element per byte (the value in the low nibble), as TensorStore does for
/// zarr; `BFloat16` and the float8 types are raw bit patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum DType {
    /// Boolean, one byte holding 0 or 1.
    Bool,
    /// 4-bit signed integer, one element per byte.
    Int4,
    /// 8-bit signed integer.
    Int8,
    /// 16-bit signed integer.
    Int16,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 8-bit unsigned integer.
    UInt8,
    /// 16-bit unsigned integer.
    UInt16,
    /// 32-bit unsigned integer.
    UInt32,
    /// 64-bit unsigned integer.
    UInt64,
    /// IEEE 754 half precision.
    Float16,
    /// bfloat16: the upper half of an IEEE 754 single.
    BFloat16,
    /// IEEE 754 single precision.
    Float32,
    /// IEEE 754 double precision.
    Float64,
    /// 8-bit float with 4 exponent and 3 mantissa bits, finite values and NaN only.
    Float8E4M3Fn,
    /// 8-bit float with 5 exponent and 2 mantissa bits.
    Float8E5M2,
    /// Complex number of two `Float32` values (real, imaginary).
    Complex64,
    /// Complex number of two `Float64` values (real, imaginary).
    Complex128,
}

/// Names of one dtype: (dtype, zarr v2 `dtype`, NumPy/zarr v3 `data_type`, item size).
const TABLE: &[(DType, &str, &str, usize)] = &[
    (DType::Bool, "|b1", "bool", 1),
    (DType::Int4, "int4", "int4", 1),
    (DType::Int8, "|i1", "int8", 1),
    (DType::Int16, "<i2", "int16", 2),
    (DType::Int32, "<i4", "int32", 4),
    (DType::Int64, "<i8", "int64", 8),
    (DType::UInt8, "|u1", "uint8", 1),
    (DType::UInt16, "<u2", "uint16", 2),
    (DType::UInt32, "<u4", "uint32", 4),
    (DType::UInt64, "<u8", "uint64", 8),
    (DType::Float16, "<f2", "float16", 2),
    (DType::BFloat16, "bfloat16", "bfloat16", 2),
    (DType::Float32, "<f4", "float32", 4),
    (DType::Float64, "<f8", "float64", 8),
    (DType::Float8E4M3Fn, "float8_e4m3fn", "float8_e4m3fn", 1),
    (DType::Float8E5M2, "float8_e5m2", "float8_e5m2", 1),
    (DType::Complex64, "<c8", "complex64", 8),
    (DType::Complex128, "<c16", "complex128", 16),
];

impl DType {
    /// Every supported dtype, in a fixed order.
    pub const ALL: [DType; 18] = [
        DType::Bool,
        DType::Int4,
        DType::Int8,
        DType::Int16,
        DType::Int32,
        DType::Int64,
        DType::UInt8,
        DType::UInt16,
        DType::UInt32,
        DType::UInt64,
        DType::Float16,
        DType::BFloat16,
        DType::Float32,
        DType::Float64,
        DType::Float8E4M3Fn,
        DType::Float8E5M2,
        DType::Complex64,
        DType::Complex128,
    ];

    fn entry(self) -> &'static (DType, &'static str, &'static str, usize) {
        // Every variant has a row, so the search always succeeds.
        TABLE.iter().find(|row| row.0 == self).unwrap_or(&TABLE[0])
    }

    /// Bytes one element occupies in memory and in a stored chunk.
    pub fn item_size(self) -> usize {
        self.entry().3
    }

    /// The zarr v2 `dtype` string Orbax writes, such as `"<f4"` or `"bfloat16"`.
    pub fn zarr_v2_name(self) -> &'static str {
        self.entry().1
    }

    /// The NumPy name, also the zarr v3 `data_type`, such as `"float32"`.
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Parses a zarr v2 `dtype` string.
    ///
    /// Accepts the little-endian and byte-order-free spellings (`"<f4"`,
    /// `"|u1"`, `"<u1"`); big-endian arrays are rejected as unknown.
    pub fn from_zarr_v2(name: &str) -> Result<DType, CoreError> {
        if let Some(row) = TABLE.iter().find(|row| row.1 == name) {
            return Ok(row.0);
        }
        // Single-byte types are valid with either byte-order mark.
        let single_byte = match name {
            "<b1" => Some(DType::Bool),
            "<i1" => Some(DType::Int8),
            "<u1" => Some(DType::UInt8),
            _ => None,
        };
        single_byte.ok_or_else(|| CoreError::UnknownDType {
            name: name.to_owned(),
        })
    }

    /// Parses a NumPy name or zarr v3 `data_type`, such as `"float32"`.
    pub fn from_name(name: &str) -> Result<DType, CoreError> {
        TABLE
            .iter()
            .find(|row| row.2 == name)
            .map(|row| row.0)
            .ok_or_else(|| CoreError::UnknownDType {
                name: name.to_owned(),
            })
    }

    /// Parses any name this crate knows: NumPy, zarr v3 or zarr v2.
    pub fn parse(name: &str) -> Result<DType, CoreError> {
        DType::from_name(name).or_else(|_| DType::from_zarr_v2(name))
    }

    /// Whether values are IEEE-style floats (not complex).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float16
                | DType::BFloat16
                | DType::Float32
                | DType::Float64
                | DType::Float8E4M3Fn
                | DType::Float8E5M2
        )
    }

    /// Whether values are complex.
    pub fn is_complex(self) -> bool {
        matches!(self, DType::Complex64 | DType::Complex128)
    }

    /// Whether values are signed integers.
    pub fn is_signed_int(self) -> bool {
        matches!(
            self,
            DType::Int4 | DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64
        )
    }

    /// Whether values are unsigned integers.
    pub fn is_unsigned_int(self) -> bool {
        matches!(
            self,
            DType::UInt8 | DType::UInt16 | DType::UInt32 | DType::UInt64
        )
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<DType> for String {
    fn from(dtype: DType) -> String {
        dtype.name().to_owned()
    }
}

impl TryFrom<String> for DType {
    type Error = CoreError;

    fn try_from(name: String) -> Result<DType, CoreError> {
        DType::parse(&name)
    }
}

impl std::str::FromStr for DType {
    type Err = CoreError;

    fn from_str(name: &str) -> Result<DType, CoreError> {
        DType::parse(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dtype in DType::ALL {
            assert_eq!(DType::from_zarr_v2(dtype.zarr_v2_name()), Ok(dtype));
            assert_eq!(DType::from_name(dtype.name()), Ok(dtype));
            assert_eq!(dtype.name().parse::<DType>(), Ok(dtype));
        }
    }

    #[test]
    fn unknown_name_is_rejected() {
        let err = DType::parse(">f4").unwrap_err();
        assert_eq!(
            err,
            CoreError::UnknownDType {
                name: ">f4".into()
            }
        );
        assert!(err.to_string().contains("\">f4\""));
    }

    #[test]
    fn item_sizes() {
        assert_eq!(DType::Int4.item_size(), 1);
        assert_eq!(DType::BFloat16.item_size(), 2);
        assert_eq!(DType::Complex128.item_size(), 16);
    }

    #[test]
    fn serde_uses_numpy_name() {
        let json = serde_json_like(DType::BFloat16);
        assert_eq!(json, "bfloat16");
    }

    fn serde_json_like(dtype: DType) -> String {
        String::from(dtype)
    }
}
