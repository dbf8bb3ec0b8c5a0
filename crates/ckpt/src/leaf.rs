use std::fmt;

use ckpt_colocated::ShardedArray;
use ckpt_core::{num_bytes_usize, CoreError, DType, Element};

/// A leaf of a checkpointed pytree.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Leaf {
    /// An array sharded over devices (Orbax `jax.Array`).
    Array(ShardedArray),
    /// An array in the controller's memory (Orbax `np.ndarray`).
    HostArray(HostArray),
    /// A scalar (Orbax `scalar`).
    Scalar(Scalar),
    /// A string (Orbax `string`).
    String(String),
}

impl Leaf {
    /// The leaf type that selects its type handler.
    pub fn leaf_type(&self) -> LeafType {
        match self {
            Leaf::Array(_) => LeafType::Array,
            Leaf::HostArray(_) => LeafType::HostArray,
            Leaf::Scalar(_) => LeafType::Scalar,
            Leaf::String(_) => LeafType::String,
        }
    }
}

impl From<ShardedArray> for Leaf {
    fn from(array: ShardedArray) -> Leaf {
        Leaf::Array(array)
    }
}

impl From<HostArray> for Leaf {
    fn from(array: HostArray) -> Leaf {
        Leaf::HostArray(array)
    }
}

impl From<Scalar> for Leaf {
    fn from(scalar: Scalar) -> Leaf {
        Leaf::Scalar(scalar)
    }
}

impl From<String> for Leaf {
    fn from(value: String) -> Leaf {
        Leaf::String(value)
    }
}

impl From<&str> for Leaf {
    fn from(value: &str) -> Leaf {
        Leaf::String(value.to_owned())
    }
}

/// The kinds of leaf a type handler can be registered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LeafType {
    /// [`Leaf::Array`].
    Array,
    /// [`Leaf::HostArray`].
    HostArray,
    /// [`Leaf::Scalar`].
    Scalar,
    /// [`Leaf::String`].
    String,
}

impl fmt::Display for LeafType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeafType::Array => "sharded arrays",
            LeafType::HostArray => "host arrays",
            LeafType::Scalar => "scalars",
            LeafType::String => "strings",
        })
    }
}

/// An array in host memory: shape, dtype and C-order little-endian bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct HostArray {
    shape: Vec<u64>,
    dtype: DType,
    bytes: Vec<u8>,
}

impl HostArray {
    /// Creates an array from its element bytes, checking their length.
    pub fn from_bytes(shape: Vec<u64>, dtype: DType, bytes: Vec<u8>) -> Result<HostArray, CoreError> {
        let expected = num_bytes_usize(&shape, dtype)?;
        if bytes.len() != expected {
            return Err(CoreError::BufferSize {
                expected: expected as u64,
                found: bytes.len() as u64,
            });
        }
        Ok(HostArray {
            shape,
            dtype,
            bytes,
        })
    }

    /// Creates an array from typed values, checking their count.
    pub fn from_vec<T: Element>(shape: Vec<u64>, values: Vec<T>) -> Result<HostArray, CoreError> {
        HostArray::from_bytes(shape, T::DTYPE, bytemuck::cast_slice(&values).to_vec())
    }

    /// Shape.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Element bytes in C order.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Returns the elements as typed values, or `None` if `T` is not the array's dtype.
    pub fn to_vec<T: Element>(&self) -> Option<Vec<T>> {
        if T::DTYPE != self.dtype {
            return None;
        }
        Some(bytemuck::pod_collect_to_vec(&self.bytes))
    }
}

impl fmt::Debug for HostArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostArray")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// A scalar value, stored by Orbax as a 0-d array.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Scalar {
    /// An integer, stored as int64.
    Int(i64),
    /// A float, stored as float64.
    Float(f64),
    /// A boolean, stored as bool.
    Bool(bool),
}

impl Scalar {
    /// The dtype this scalar is stored with, as Orbax stores Python scalars.
    pub fn dtype(self) -> DType {
        match self {
            Scalar::Int(_) => DType::Int64,
            Scalar::Float(_) => DType::Float64,
            Scalar::Bool(_) => DType::Bool,
        }
    }

    /// The stored element bytes.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            Scalar::Int(value) => value.to_le_bytes().to_vec(),
            Scalar::Float(value) => value.to_le_bytes().to_vec(),
            Scalar::Bool(value) => vec![u8::from(value)],
        }
    }

    /// Decodes a stored 0-d array of any numeric dtype into a scalar, as
    /// Orbax's restore does with `.item()`; `None` for dtypes without a
    /// scalar form here (complex, float8, int4).
    pub fn from_element(dtype: DType, bytes: &[u8]) -> Option<Scalar> {
        let array = |n: usize| -> Option<[u8; 8]> {
            let mut out = [0u8; 8];
            out[..n].copy_from_slice(bytes.get(..n)?);
            Some(out)
        };
        Some(match dtype {
            DType::Bool => Scalar::Bool(*bytes.first()? != 0),
            DType::Int8 => Scalar::Int(i64::from(*bytes.first()? as i8)),
            DType::Int16 => Scalar::Int(i64::from(i16::from_le_bytes(bytes.get(..2)?.try_into().ok()?))),
            DType::Int32 => Scalar::Int(i64::from(i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))),
            DType::Int64 => Scalar::Int(i64::from_le_bytes(array(8)?)),
            DType::UInt8 => Scalar::Int(i64::from(*bytes.first()?)),
            DType::UInt16 => Scalar::Int(i64::from(u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?))),
            DType::UInt32 => Scalar::Int(i64::from(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))),
            DType::UInt64 => Scalar::Int(i64::try_from(u64::from_le_bytes(array(8)?)).ok()?),
            DType::Float16 => Scalar::Float(half::f16::from_le_bytes(bytes.get(..2)?.try_into().ok()?).to_f64()),
            DType::BFloat16 => Scalar::Float(half::bf16::from_le_bytes(bytes.get(..2)?.try_into().ok()?).to_f64()),
            DType::Float32 => Scalar::Float(f64::from(f32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))),
            DType::Float64 => Scalar::Float(f64::from_le_bytes(array(8)?)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_array_rejects_wrong_length() {
        let err = HostArray::from_bytes(vec![2, 2], DType::Float32, vec![0; 15]).unwrap_err();
        assert!(matches!(err, CoreError::BufferSize { expected: 16, found: 15 }));
    }

    #[test]
    fn host_array_typed_round_trip() {
        let array = HostArray::from_vec(vec![3], vec![1.5f32, 2.5, 3.5]).unwrap();
        assert_eq!(array.dtype(), DType::Float32);
        assert_eq!(array.to_vec::<f32>(), Some(vec![1.5, 2.5, 3.5]));
        assert_eq!(array.to_vec::<i32>(), None);
    }

    #[test]
    fn scalar_round_trips_through_bytes() {
        for scalar in [Scalar::Int(-7), Scalar::Float(0.125), Scalar::Bool(true)] {
            let back = Scalar::from_element(scalar.dtype(), &scalar.to_bytes());
            assert_eq!(back, Some(scalar));
        }
    }

    #[test]
    fn narrow_scalars_widen() {
        assert_eq!(
            Scalar::from_element(DType::Int32, &(-3i32).to_le_bytes()),
            Some(Scalar::Int(-3))
        );
        assert_eq!(
            Scalar::from_element(DType::Float16, &half::f16::from_f32(0.5).to_le_bytes()),
            Some(Scalar::Float(0.5))
        );
    }
}
