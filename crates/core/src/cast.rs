//! Element casts between dtypes, and the rule that separates widening
//! casts from lossy ones.

use crate::{CoreError, DType};

/// Whether a cast from one dtype to another keeps every value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CastKind {
    /// Source and target are the same dtype: the bytes are copied.
    Identity,
    /// Every value of the source is exactly representable in the target,
    /// such as int16 to int32, float16 to float32 or uint8 to int16.
    Widening,
    /// Some values change: they round, wrap, saturate or lose an imaginary
    /// part, such as int32 to float32 (16777217 has no float32) or float32
    /// to bfloat16.
    Lossy,
}

impl CastKind {
    /// Classifies the cast from `from` to `to`.
    pub fn of(from: DType, to: DType) -> CastKind {
        if from == to {
            return CastKind::Identity;
        }
        if keeps_every_value(Kind::of(from), Kind::of(to)) {
            CastKind::Widening
        } else {
            CastKind::Lossy
        }
    }

    /// Whether the cast keeps every value (an identity or a widening cast).
    pub fn is_exact(self) -> bool {
        matches!(self, CastKind::Identity | CastKind::Widening)
    }
}

/// Converts the elements of `src`, of dtype `from`, into `dst`, of dtype `to`.
///
/// Both buffers hold the same number of elements in little-endian order.
/// Values convert as NumPy's `astype` does, with `ml_dtypes` for bfloat16,
/// int4 and the float8 types. Integers wrap to the target width. Floats
/// and integers round to the nearest float with ties to even (once, even
/// from int64), past the largest finite value to infinity, or to NaN for
/// float8_e4m3fn, which has no infinity. Complex to real keeps the real
/// part, and anything to bool tests for non-zero (NaN is true).
///
/// Float to integer truncates toward zero. NumPy leaves NaN, infinities
/// and out-of-range values undefined there (x86 returns the minimum
/// integer). Here NaN becomes 0 and the others saturate at the target's
/// minimum or maximum, so -1.0 becomes 0 in an unsigned type.
///
/// Lossy casts convert too; check [`CastKind::of`] first where a lossy
/// cast must be rejected.
///
/// # Errors
///
/// [`CoreError::BufferSize`] when `src` is not a whole number of `from`
/// elements or `dst` does not hold exactly as many `to` elements.
pub fn cast_elements(from: DType, src: &[u8], to: DType, dst: &mut [u8]) -> Result<(), CoreError> {
    let (src_size, dst_size) = (from.item_size(), to.item_size());
    let count = src.len() / src_size;
    let expected = count.checked_mul(dst_size).ok_or(CoreError::BufferSize {
        expected: u64::MAX,
        found: dst.len() as u64,
    })?;
    if !src.len().is_multiple_of(src_size) {
        return Err(CoreError::BufferSize {
            expected: (count * src_size) as u64,
            found: src.len() as u64,
        });
    }
    if dst.len() != expected {
        return Err(CoreError::BufferSize {
            expected: expected as u64,
            found: dst.len() as u64,
        });
    }
    if from == to {
        dst.copy_from_slice(src);
        return Ok(());
    }
    for (element, out) in src.chunks_exact(src_size).zip(dst.chunks_exact_mut(dst_size)) {
        encode(decode(from, element), to, out);
    }
    Ok(())
}

/// The value domain of a dtype, as far as exactness is concerned.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Bool,
    Int { bits: u32, signed: bool },
    Float(FloatFormat),
    Complex(FloatFormat),
}

impl Kind {
    fn of(dtype: DType) -> Kind {
        match dtype {
            DType::Bool => Kind::Bool,
            DType::Int4 => Kind::Int { bits: 4, signed: true },
            DType::Int8 => Kind::Int { bits: 8, signed: true },
            DType::Int16 => Kind::Int { bits: 16, signed: true },
            DType::Int32 => Kind::Int { bits: 32, signed: true },
            DType::Int64 => Kind::Int { bits: 64, signed: true },
            DType::UInt8 => Kind::Int { bits: 8, signed: false },
            DType::UInt16 => Kind::Int { bits: 16, signed: false },
            DType::UInt32 => Kind::Int { bits: 32, signed: false },
            DType::UInt64 => Kind::Int { bits: 64, signed: false },
            DType::Float16 => Kind::Float(FloatFormat::F16),
            DType::BFloat16 => Kind::Float(FloatFormat::BF16),
            DType::Float32 => Kind::Float(FloatFormat::F32),
            DType::Float64 => Kind::Float(FloatFormat::F64),
            DType::Float8E4M3Fn => Kind::Float(FloatFormat::E4M3FN),
            DType::Float8E5M2 => Kind::Float(FloatFormat::E5M2),
            DType::Complex64 => Kind::Complex(FloatFormat::F32),
            DType::Complex128 => Kind::Complex(FloatFormat::F64),
        }
    }
}

/// Whether every value of `from` is exactly representable in `to`.
fn keeps_every_value(from: Kind, to: Kind) -> bool {
    match (from, to) {
        // 0 and 1 exist in every dtype.
        (Kind::Bool, _) => true,
        (_, Kind::Bool) => false,
        (Kind::Int { bits, signed }, Kind::Int { bits: to_bits, signed: to_signed }) => {
            match (signed, to_signed) {
                (true, true) | (false, false) => to_bits >= bits,
                (false, true) => to_bits > bits,
                (true, false) => false,
            }
        }
        (Kind::Int { bits, signed }, Kind::Float(format) | Kind::Complex(format)) => {
            // The largest magnitude is 2^(bits-1) for signed types, a power
            // of two, and 2^bits - 1 for unsigned ones. Every smaller
            // integer needs at most this many significant bits.
            let magnitude_bits = if signed { bits - 1 } else { bits };
            magnitude_bits <= format.precision() && i32::try_from(magnitude_bits).is_ok_and(|b| b <= format.max_exponent())
        }
        (Kind::Float(from), Kind::Float(to)) => to.contains(from),
        (Kind::Complex(_), Kind::Float(_)) => false,
        (Kind::Float(from), Kind::Complex(to)) => to.contains(from),
        (Kind::Complex(from), Kind::Complex(to)) => to.contains(from),
        (Kind::Float(_) | Kind::Complex(_), Kind::Int { .. }) => false,
    }
}

/// A binary floating-point format: IEEE 754 style, or the float8 `fn`
/// style that has no infinities and one NaN pattern per sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FloatFormat {
    exponent_bits: u32,
    mantissa_bits: u32,
    /// No infinities: the all-ones exponent encodes finite values except
    /// for the all-ones mantissa, which is NaN (float8_e4m3fn).
    finite_only: bool,
}

impl FloatFormat {
    const F16: FloatFormat = FloatFormat::ieee(5, 10);
    const BF16: FloatFormat = FloatFormat::ieee(8, 7);
    const F32: FloatFormat = FloatFormat::ieee(8, 23);
    const F64: FloatFormat = FloatFormat::ieee(11, 52);
    const E5M2: FloatFormat = FloatFormat::ieee(5, 2);
    const E4M3FN: FloatFormat = FloatFormat {
        exponent_bits: 4,
        mantissa_bits: 3,
        finite_only: true,
    };

    const fn ieee(exponent_bits: u32, mantissa_bits: u32) -> FloatFormat {
        FloatFormat {
            exponent_bits,
            mantissa_bits,
            finite_only: false,
        }
    }

    /// Significant bits, the implicit leading bit included.
    fn precision(self) -> u32 {
        self.mantissa_bits + 1
    }

    fn bias(self) -> i32 {
        (1 << (self.exponent_bits - 1)) - 1
    }

    /// The largest exponent field, all ones.
    fn max_field(self) -> u64 {
        (1 << self.exponent_bits) - 1
    }

    /// Exponent of the largest finite binade.
    fn max_exponent(self) -> i32 {
        if self.finite_only {
            self.bias() + 1
        } else {
            self.bias()
        }
    }

    /// Exponent of the smallest normal binade.
    fn min_exponent(self) -> i32 {
        1 - self.bias()
    }

    /// Exponent of the smallest subnormal value.
    fn min_subnormal_exponent(self) -> i32 {
        self.min_exponent() - self.mantissa_bits as i32
    }

    /// Whether every value of `other` is exactly a value of `self`.
    fn contains(self, other: FloatFormat) -> bool {
        self.precision() >= other.precision()
            && self.max_exponent() >= other.max_exponent()
            && self.min_subnormal_exponent() <= other.min_subnormal_exponent()
            && (!self.finite_only || other.finite_only)
    }

    /// Decodes the bit pattern `bits` (sign in bit `exponent_bits + mantissa_bits`).
    /// Every format here has at most 53 significant bits, so the result is exact.
    fn decode(self, bits: u64) -> f64 {
        let mantissa_mask = (1u64 << self.mantissa_bits) - 1;
        let mantissa = bits & mantissa_mask;
        let field = (bits >> self.mantissa_bits) & self.max_field();
        let negative = (bits >> (self.mantissa_bits + self.exponent_bits)) & 1 == 1;
        let magnitude = if field == self.max_field() && !self.finite_only {
            if mantissa == 0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        } else if field == self.max_field() && mantissa == mantissa_mask {
            f64::NAN
        } else if field == 0 {
            scale(mantissa as f64, self.min_subnormal_exponent())
        } else {
            let exponent = field as i32 - self.bias() - self.mantissa_bits as i32;
            scale((mantissa | (1 << self.mantissa_bits)) as f64, exponent)
        };
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }

    /// Encodes `value`, rounding to nearest with ties to even. Magnitudes
    /// past the largest finite value become infinity, or NaN in a
    /// `finite_only` format, as `ml_dtypes` does.
    fn encode(self, value: f64) -> u64 {
        let sign = u64::from(value.is_sign_negative()) << (self.mantissa_bits + self.exponent_bits);
        let nan = sign | (self.max_field() << self.mantissa_bits) | ((1 << self.mantissa_bits) - 1);
        let infinity = sign | (self.max_field() << self.mantissa_bits);
        let overflow = if self.finite_only { nan } else { infinity };
        let magnitude = value.abs();
        if magnitude.is_nan() {
            return if self.finite_only {
                nan
            } else {
                // A quiet NaN: the top mantissa bit set.
                infinity | (1 << (self.mantissa_bits - 1))
            };
        }
        if magnitude.is_infinite() {
            return overflow;
        }
        if magnitude == 0.0 {
            return sign;
        }

        // The spacing of representable values around `magnitude` is
        // 2^quantum; dividing by it leaves an integer significand to round.
        let exponent = binary_exponent(magnitude).max(self.min_exponent());
        let mut quantum = exponent - self.mantissa_bits as i32;
        let mut significand = scale(magnitude, -quantum).round_ties_even() as u64;
        if significand >> self.precision() != 0 {
            // Rounding carried into the next binade.
            significand >>= 1;
            quantum += 1;
        }
        let field = if significand >> self.mantissa_bits == 0 {
            0
        } else {
            (quantum + self.mantissa_bits as i32 + self.bias()) as u64
        };
        let mantissa = significand & ((1 << self.mantissa_bits) - 1);
        let too_large = if self.finite_only {
            field > self.max_field() || (field == self.max_field() && mantissa == (1 << self.mantissa_bits) - 1)
        } else {
            field >= self.max_field()
        };
        if too_large {
            return overflow;
        }
        sign | (field << self.mantissa_bits) | mantissa
    }
}

/// Returns `value * 2^exponent`, exact while the result is a normal f64.
fn scale(value: f64, exponent: i32) -> f64 {
    // Two steps keep each power of two inside the f64 range.
    let half = exponent / 2;
    value * 2f64.powi(half) * 2f64.powi(exponent - half)
}

/// Returns the exponent of the binade of a finite, non-zero `magnitude`:
/// `e` with `2^e <= magnitude < 2^(e+1)`.
fn binary_exponent(magnitude: f64) -> i32 {
    let bits = magnitude.to_bits();
    let field = ((bits >> 52) & 0x7ff) as i32;
    if field == 0 {
        // An f64 subnormal: its top set bit gives the exponent.
        let mantissa = bits & ((1 << 52) - 1);
        return -1074 + (63 - mantissa.leading_zeros() as i32);
    }
    field - 1023
}

/// One element's value, wide enough to hold every dtype's values exactly.
#[derive(Clone, Copy, Debug)]
enum Scalar {
    Bool(bool),
    Int(i128),
    Float(f64),
    Complex(f64, f64),
}

fn decode(dtype: DType, bytes: &[u8]) -> Scalar {
    let array = |n: usize| -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..n].copy_from_slice(&bytes[..n]);
        out
    };
    let unsigned = |n: usize| u128::from_le_bytes(array(n));
    match Kind::of(dtype) {
        Kind::Bool => Scalar::Bool(bytes[0] != 0),
        Kind::Int { bits: 4, .. } => Scalar::Int(i128::from(((bytes[0] << 4) as i8) >> 4)),
        Kind::Int { bits, signed: true } => {
            let shift = 128 - bits;
            Scalar::Int(((unsigned(dtype.item_size()) << shift) as i128) >> shift)
        }
        Kind::Int { signed: false, .. } => Scalar::Int(unsigned(dtype.item_size()) as i128),
        Kind::Float(format) => Scalar::Float(decode_float(format, unsigned(dtype.item_size()) as u64)),
        Kind::Complex(format) => {
            let half = dtype.item_size() / 2;
            let real = decode_float(format, u128::from_le_bytes(array(half)) as u64);
            let mut imaginary = [0u8; 16];
            imaginary[..half].copy_from_slice(&bytes[half..2 * half]);
            let imaginary = decode_float(format, u128::from_le_bytes(imaginary) as u64);
            Scalar::Complex(real, imaginary)
        }
    }
}

fn decode_float(format: FloatFormat, bits: u64) -> f64 {
    match format {
        FloatFormat::F64 => f64::from_bits(bits),
        FloatFormat::F32 => f64::from(f32::from_bits(bits as u32)),
        other => other.decode(bits),
    }
}

fn encode(value: Scalar, dtype: DType, out: &mut [u8]) {
    match Kind::of(dtype) {
        Kind::Bool => out[0] = u8::from(is_nonzero(value)),
        Kind::Int { .. } => {
            // Little-endian two's complement, cut to the target width. Int4
            // keeps its sign-extended value in the byte, so the low nibble
            // is the element.
            let bytes = to_integer(value, dtype).to_le_bytes();
            out.copy_from_slice(&bytes[..out.len()]);
        }
        Kind::Float(format) => {
            let bits = encode_float(format, value);
            out.copy_from_slice(&bits.to_le_bytes()[..out.len()]);
        }
        Kind::Complex(format) => {
            let (real, imaginary) = match value {
                Scalar::Complex(real, imaginary) => (real, imaginary),
                other => (to_f64_or_rounded(other, format), 0.0),
            };
            let half = out.len() / 2;
            let real = encode_float(format, Scalar::Float(real));
            let imaginary = encode_float(format, Scalar::Float(imaginary));
            out[..half].copy_from_slice(&real.to_le_bytes()[..half]);
            out[half..].copy_from_slice(&imaginary.to_le_bytes()[..half]);
        }
    }
}

fn is_nonzero(value: Scalar) -> bool {
    match value {
        Scalar::Bool(value) => value,
        Scalar::Int(value) => value != 0,
        // NaN compares unequal to zero, so it is true, as in NumPy.
        Scalar::Float(value) => value != 0.0,
        Scalar::Complex(real, imaginary) => real != 0.0 || imaginary != 0.0,
    }
}

/// Converts to an integer of `dtype`'s width: integers wrap, floats
/// truncate toward zero with NaN as 0 and saturation outside the range.
fn to_integer(value: Scalar, dtype: DType) -> i128 {
    let Kind::Int { bits, signed } = Kind::of(dtype) else {
        return 0;
    };
    let (min, max) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    match value {
        Scalar::Bool(value) => i128::from(value),
        Scalar::Int(value) => {
            let low = value & ((1i128 << bits) - 1);
            if signed && low > max {
                low - (1i128 << bits)
            } else {
                low
            }
        }
        Scalar::Float(value) | Scalar::Complex(value, _) => {
            // `as` truncates toward zero, maps NaN to 0 and saturates.
            (value as i128).clamp(min, max)
        }
    }
}

fn encode_float(format: FloatFormat, value: Scalar) -> u64 {
    let value = to_f64_or_rounded(value, format);
    match format {
        FloatFormat::F64 => value.to_bits(),
        FloatFormat::F32 => u64::from((value as f32).to_bits()),
        other => other.encode(value),
    }
}

/// Returns the value as an f64 that converts to `format` with a single
/// rounding. Integers with more significant bits than `format` has are
/// rounded to its precision here, exactly, because an f64 could represent
/// them only after a rounding of its own. Complex values give their real part.
fn to_f64_or_rounded(value: Scalar, format: FloatFormat) -> f64 {
    match value {
        Scalar::Bool(value) => f64::from(u8::from(value)),
        Scalar::Int(value) => round_integer(value, format.precision()),
        Scalar::Float(value) | Scalar::Complex(value, _) => value,
    }
}

/// Rounds an integer to `precision` significant bits, ties to even, and
/// returns it as an f64, which represents the result exactly for `precision <= 53`.
fn round_integer(value: i128, precision: u32) -> f64 {
    let magnitude = value.unsigned_abs();
    let width = 128 - magnitude.leading_zeros();
    let rounded = if width <= precision {
        magnitude
    } else {
        let shift = width - precision;
        let kept = magnitude >> shift;
        let rest = magnitude & ((1u128 << shift) - 1);
        let halfway = 1u128 << (shift - 1);
        let up = rest > halfway || (rest == halfway && kept & 1 == 1);
        (kept + u128::from(up)) << shift
    };
    // `rounded` has at most `precision` significant bits, so this is exact.
    let magnitude = rounded as f64;
    if value < 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};
    use proptest::prelude::*;

    use super::*;

    /// Casts one element given as bytes.
    fn cast_one(from: DType, src: &[u8], to: DType) -> Vec<u8> {
        let mut out = vec![0u8; to.item_size()];
        cast_elements(from, src, to, &mut out).expect("cast");
        out
    }

    fn is_nan(dtype: DType, bytes: &[u8]) -> bool {
        match decode(dtype, bytes) {
            Scalar::Float(value) => value.is_nan(),
            Scalar::Complex(real, imaginary) => real.is_nan() || imaginary.is_nan(),
            _ => false,
        }
    }

    /// A value compared across dtypes: integral floats compare as integers,
    /// other floats by their bits (so -0.0 differs from 0), and every NaN
    /// alike, since casts keep no NaN payload.
    #[derive(Debug, PartialEq, Eq)]
    enum Exact {
        Int(i128),
        Float(u64),
        NaN,
    }

    fn exact(value: f64) -> Exact {
        let negative_zero = value == 0.0 && value.is_sign_negative();
        if value.is_nan() {
            Exact::NaN
        } else if value.fract() == 0.0 && value.abs() < 2f64.powi(120) && !negative_zero {
            Exact::Int(value as i128)
        } else {
            Exact::Float(value.to_bits())
        }
    }

    /// The real and imaginary parts of an element's value.
    fn value_of(dtype: DType, bytes: &[u8]) -> (Exact, Exact) {
        match decode(dtype, bytes) {
            Scalar::Bool(value) => (Exact::Int(i128::from(value)), Exact::Int(0)),
            Scalar::Int(value) => (Exact::Int(value), Exact::Int(0)),
            Scalar::Float(value) => (exact(value), Exact::Int(0)),
            Scalar::Complex(real, imaginary) => (exact(real), exact(imaginary)),
        }
    }

    /// Whether casting `src` to `to` keeps its value exactly.
    fn keeps_value(from: DType, src: &[u8], to: DType) -> bool {
        value_of(from, src) == value_of(to, &cast_one(from, src, to))
    }

    /// Whether `src` survives a cast to `to` and back bit for bit; NaN only
    /// has to stay NaN.
    fn round_trips(from: DType, src: &[u8], to: DType) -> bool {
        let back = cast_one(to, &cast_one(from, src, to), from);
        back == src || (is_nan(from, src) && is_nan(from, &back))
    }

    /// Values that tell the dtypes apart: integer and float limits, values
    /// one past a float's precision, subnormals, infinities and NaN.
    fn probe_values() -> Vec<Scalar> {
        let mut values: Vec<Scalar> = [
            0i128, 1, -1, 2, 7, 8, -8, -9, 127, 128, -128, -129, 255, 256, 2049, 32767, 32768,
            -32769, 65535, 65536, 16_777_217, (1 << 31) - 1, -(1 << 31), (1 << 32) - 1,
            (1 << 53) + 1, i128::from(i64::MIN), i128::from(i64::MAX), i128::from(u64::MAX),
        ]
        .into_iter()
        .map(Scalar::Int)
        .collect();
        let floats = [
            0.5, -0.0, 1.0 / 3.0, 1.0 + 2f64.powi(-4), 1.0 + 2f64.powi(-8), 1.0 + 2f64.powi(-23),
            1.0 + 2f64.powi(-52), 2f64.powi(-9), 2f64.powi(-16), 2f64.powi(-24), 2f64.powi(-133),
            2f64.powi(-149), 1e-40, 5e-324, 448.0, 57344.0, 65504.0, 1e30, 3.0e38, 1e300,
            f64::INFINITY, f64::NEG_INFINITY, f64::NAN,
        ];
        values.extend(floats.into_iter().map(Scalar::Float));
        values.push(Scalar::Complex(1.0, 1.0));
        values.push(Scalar::Complex(1.0 + 2f64.powi(-52), -0.5));
        values
    }

    /// Elements of `dtype` to check a classification on: every bit pattern
    /// of the one- and two-byte types, the probe values for the others.
    fn samples(dtype: DType) -> Vec<Vec<u8>> {
        match dtype {
            DType::Bool => vec![vec![0], vec![1]],
            DType::Int4 => (-8i8..=7).map(|v| vec![v as u8]).collect(),
            _ if dtype.item_size() == 1 => (0..=255u8).map(|v| vec![v]).collect(),
            _ if dtype.item_size() == 2 => (0..=u16::MAX).map(|v| v.to_le_bytes().to_vec()).collect(),
            _ => probe_values()
                .into_iter()
                .map(|value| {
                    let mut out = vec![0u8; dtype.item_size()];
                    encode(value, dtype, &mut out);
                    out
                })
                .collect(),
        }
    }

    #[test]
    fn classification_matches_values() {
        for from in DType::ALL {
            let samples = samples(from);
            for to in DType::ALL {
                let kind = CastKind::of(from, to);
                let failures: Vec<&Vec<u8>> =
                    samples.iter().filter(|src| !keeps_value(from, src, to)).collect();
                if kind.is_exact() {
                    assert!(failures.is_empty(), "{from} -> {to} is {kind:?} but {:?} changes", failures.first());
                } else {
                    assert!(!failures.is_empty(), "{from} -> {to} is lossy but every sample survives");
                }
            }
        }
    }

    #[test]
    fn classification_examples() {
        let cases = [
            (DType::Int16, DType::Int32, CastKind::Widening),
            (DType::Float16, DType::Float32, CastKind::Widening),
            (DType::BFloat16, DType::Float32, CastKind::Widening),
            (DType::Int16, DType::Float32, CastKind::Widening),
            (DType::UInt8, DType::Int16, CastKind::Widening),
            (DType::Int32, DType::Float32, CastKind::Lossy),
            (DType::Float32, DType::Int32, CastKind::Lossy),
            (DType::Float32, DType::BFloat16, CastKind::Lossy),
            (DType::BFloat16, DType::Float8E4M3Fn, CastKind::Lossy),
            (DType::Int64, DType::Float64, CastKind::Lossy),
            (DType::Int8, DType::UInt8, CastKind::Lossy),
            (DType::Complex64, DType::Float32, CastKind::Lossy),
            (DType::Float32, DType::Float32, CastKind::Identity),
        ];
        for (from, to, expected) in cases {
            assert_eq!(CastKind::of(from, to), expected, "{from} -> {to}");
        }
    }

    #[test]
    fn int32_to_float32_rounds() {
        let out = cast_one(DType::Int32, &16_777_217i32.to_le_bytes(), DType::Float32);
        assert_eq!(f32::from_le_bytes(out.try_into().unwrap()), 16_777_216.0);
    }

    #[test]
    fn float_to_int_edges() {
        let to_i32 = |value: f32| {
            let out = cast_one(DType::Float32, &value.to_le_bytes(), DType::Int32);
            i32::from_le_bytes(out.try_into().unwrap())
        };
        assert_eq!(to_i32(2.7), 2);
        assert_eq!(to_i32(-2.7), -2);
        assert_eq!(to_i32(f32::NAN), 0);
        assert_eq!(to_i32(f32::INFINITY), i32::MAX);
        assert_eq!(to_i32(-1e10), i32::MIN);
        let to_u8 = cast_one(DType::Float32, &(-1.0f32).to_le_bytes(), DType::UInt8);
        assert_eq!(to_u8, [0]);
    }

    #[test]
    fn int_to_int_wraps() {
        assert_eq!(cast_one(DType::Int32, &300i32.to_le_bytes(), DType::Int8), [44]);
        assert_eq!(cast_one(DType::Int8, &[0xff], DType::UInt16), [0xff, 0xff]);
        assert_eq!(cast_one(DType::Int32, &9i32.to_le_bytes(), DType::Int4), [(-7i8) as u8]);
    }

    #[test]
    fn int4_reads_low_nibble() {
        // Only the low nibble is the element; 0x0f is -1 as is 0xff.
        assert_eq!(cast_one(DType::Int4, &[0x0f], DType::Int8), [0xff]);
    }

    #[test]
    fn float8_overflow() {
        let e4m3 = cast_one(DType::Float32, &1000f32.to_le_bytes(), DType::Float8E4M3Fn);
        assert_eq!(e4m3, [0x7f]);
        let e5m2 = cast_one(DType::Float32, &1e6f32.to_le_bytes(), DType::Float8E5M2);
        assert_eq!(e5m2, [0x7c]);
        let below_tie = cast_one(DType::Float32, &464f32.to_le_bytes(), DType::Float8E4M3Fn);
        assert_eq!(below_tie, [0x7e]);
    }

    #[test]
    fn float8_limits() {
        assert_eq!(FloatFormat::E4M3FN.decode(0x7e), 448.0);
        assert_eq!(FloatFormat::E4M3FN.decode(0x01), 2f64.powi(-9));
        assert_eq!(FloatFormat::E5M2.decode(0x7b), 57344.0);
        assert!(FloatFormat::E5M2.decode(0x7c).is_infinite());
    }

    #[test]
    fn ties_round_to_even() {
        // 1 + 2^-8 lies halfway between two bfloat16 values; 1.0 is even.
        let out = cast_one(DType::Float32, &(1.0f32 + 2f32.powi(-8)).to_le_bytes(), DType::BFloat16);
        assert_eq!(bf16::from_le_bytes(out.try_into().unwrap()), bf16::ONE);
        // 65520 is halfway between float16's maximum and the next binade.
        let out = cast_one(DType::Int32, &65520i32.to_le_bytes(), DType::Float16);
        assert!(f16::from_le_bytes(out.try_into().unwrap()).is_infinite());
    }

    #[test]
    fn int64_to_bfloat16_rounds_once() {
        // 2^62 + 2^54 + 1 lies just above a bfloat16 tie; rounding it to f64
        // first would make it the tie and round it down.
        let value = (1i64 << 62) + (1 << 54) + 1;
        let out = cast_one(DType::Int64, &value.to_le_bytes(), DType::BFloat16);
        let expected = 2f32.powi(62) * (1.0 + 2f32.powi(-7));
        assert_eq!(bf16::from_le_bytes(out.try_into().unwrap()).to_f32(), expected);
    }

    #[test]
    fn complex_to_real_keeps_real_part() {
        let mut src = 3f32.to_le_bytes().to_vec();
        src.extend(4f32.to_le_bytes());
        let out = cast_one(DType::Complex64, &src, DType::Float64);
        assert_eq!(f64::from_le_bytes(out.try_into().unwrap()), 3.0);
    }

    #[test]
    fn half_formats_decode_as_half() {
        for bits in 0..=u16::MAX {
            let ours = FloatFormat::F16.decode(u64::from(bits));
            let theirs = f16::from_bits(bits).to_f64();
            assert!(ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()), "f16 {bits:#x}");
            let ours = FloatFormat::BF16.decode(u64::from(bits));
            let theirs = bf16::from_bits(bits).to_f64();
            assert!(ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()), "bf16 {bits:#x}");
        }
    }

    #[test]
    fn wrong_buffer_size_is_rejected() {
        let mut dst = [0u8; 3];
        let err = cast_elements(DType::Int16, &[0; 4], DType::Int8, &mut dst).unwrap_err();
        assert_eq!(err, CoreError::BufferSize { expected: 2, found: 3 });
    }

    proptest! {
        #[test]
        fn exact_casts_round_trip(
            from in prop::sample::select(DType::ALL.to_vec()),
            to in prop::sample::select(DType::ALL.to_vec()),
            raw in prop::collection::vec(any::<u8>(), 16),
        ) {
            prop_assume!(CastKind::of(from, to).is_exact());
            let mut src = raw[..from.item_size()].to_vec();
            // Bool and int4 have one canonical byte per value.
            match from {
                DType::Bool => src[0] &= 1,
                DType::Int4 => src[0] = ((src[0] << 4) as i8 >> 4) as u8,
                _ => {}
            }
            prop_assert!(keeps_value(from, &src, to), "{from} -> {to}: {src:?}");
            prop_assert!(round_trips(from, &src, to), "{from} -> {to} and back: {src:?}");
        }

        #[test]
        fn float32_to_half_matches_half(bits in any::<u32>()) {
            let value = f32::from_bits(bits);
            let ours = cast_one(DType::Float32, &value.to_le_bytes(), DType::Float16);
            let theirs = f16::from_f32(value);
            let ours = f16::from_le_bytes(ours.try_into().unwrap());
            prop_assert!(ours == theirs || (ours.is_nan() && theirs.is_nan()), "{value}");
            let ours = cast_one(DType::Float32, &value.to_le_bytes(), DType::BFloat16);
            let theirs = bf16::from_f32(value);
            let ours = bf16::from_le_bytes(ours.try_into().unwrap());
            prop_assert!(ours == theirs || (ours.is_nan() && theirs.is_nan()), "{value}");
        }
    }
}
