use half::{bf16, f16};

use crate::DType;

/// A Rust type whose values are elements of one [`DType`].
///
/// Lets typed host data (`Vec<f32>`, `&[bf16]`) be viewed as the
/// little-endian element bytes that checkpoints store. Implemented for the
/// primitive numeric types and `half`'s `f16` and `bf16`; `bool`, int4,
/// float8 and complex elements have no Rust type here and are handled as
/// bytes.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The dtype of this type's values.
    const DTYPE: DType;
}

macro_rules! impl_element {
    ($($ty:ty => $dtype:expr),* $(,)?) => {
        $(impl Element for $ty {
            const DTYPE: DType = $dtype;
        })*
    };
}

impl_element! {
    i8 => DType::Int8,
    i16 => DType::Int16,
    i32 => DType::Int32,
    i64 => DType::Int64,
    u8 => DType::UInt8,
    u16 => DType::UInt16,
    u32 => DType::UInt32,
    u64 => DType::UInt64,
    f16 => DType::Float16,
    bf16 => DType::BFloat16,
    f32 => DType::Float32,
    f64 => DType::Float64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_dtypes() {
        assert_eq!(std::mem::size_of::<bf16>(), <bf16 as Element>::DTYPE.item_size());
        assert_eq!(std::mem::size_of::<f64>(), <f64 as Element>::DTYPE.item_size());
        assert_eq!(std::mem::size_of::<u16>(), <u16 as Element>::DTYPE.item_size());
    }
}
