use crate::{CoreError, DType};

/// Returns the number of elements of `shape`, or an error if the product overflows.
///
/// A 0-d shape (a scalar) has one element.
pub fn num_elements(shape: &[u64]) -> Result<u64, CoreError> {
    shape
        .iter()
        .try_fold(1u64, |count, &extent| count.checked_mul(extent))
        .ok_or_else(|| CoreError::ShapeOverflow {
            shape: shape.to_vec(),
        })
}

/// Returns the byte size of a C-order array of `shape` and `dtype`, checked for overflow.
pub fn num_bytes(shape: &[u64], dtype: DType) -> Result<u64, CoreError> {
    num_elements(shape)?
        .checked_mul(dtype.item_size() as u64)
        .ok_or_else(|| CoreError::ShapeOverflow {
            shape: shape.to_vec(),
        })
}

/// Returns the byte size of an array as a `usize`, for allocating a buffer of it.
pub fn num_bytes_usize(shape: &[u64], dtype: DType) -> Result<usize, CoreError> {
    let bytes = num_bytes(shape, dtype)?;
    usize::try_from(bytes).map_err(|_| CoreError::ShapeOverflow {
        shape: shape.to_vec(),
    })
}

/// Allocates a zeroed buffer for an array of `shape` and `dtype`.
///
/// A shape read from a file can claim more bytes than the machine has, so
/// a failed allocation is an error here instead of an abort.
pub fn zeroed_bytes(shape: &[u64], dtype: DType) -> Result<Vec<u8>, CoreError> {
    let len = num_bytes_usize(shape, dtype)?;
    bytemuck::allocation::try_zeroed_vec(len).map_err(|()| CoreError::AllocationFailed {
        shape: shape.to_vec(),
        bytes: len as u64,
    })
}

/// Returns the C-order strides of `shape`, in elements.
///
/// Callers check the element count with [`num_elements`] first; the strides
/// of a shape whose count fits in `u64` never overflow.
pub fn c_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for dim in (0..shape.len().saturating_sub(1)).rev() {
        strides[dim] = strides[dim + 1].saturating_mul(shape[dim + 1]);
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_bytes_allocates_zeros() {
        let bytes = zeroed_bytes(&[3, 2], DType::Float32).expect("24 bytes");
        assert_eq!(bytes, vec![0u8; 24]);
    }

    #[test]
    fn zeroed_bytes_too_large_fails() {
        // 2^62 bytes is more than any machine's address space provides.
        let shape = [1u64 << 60, 4];
        let error = zeroed_bytes(&shape, DType::UInt8).expect_err("an impossible allocation");
        assert_eq!(
            error,
            CoreError::AllocationFailed {
                shape: shape.to_vec(),
                bytes: 1 << 62
            }
        );
    }

    #[test]
    fn scalar_has_one_element() {
        assert_eq!(num_elements(&[]), Ok(1));
    }

    #[test]
    fn zero_extent_has_no_elements() {
        assert_eq!(num_elements(&[4, 0, 3]), Ok(0));
    }

    #[test]
    fn overflow_is_an_error() {
        let err = num_elements(&[u64::MAX, 2]).unwrap_err();
        assert!(matches!(err, CoreError::ShapeOverflow { .. }));
        let err = num_bytes(&[u64::MAX / 2 + 1], DType::Float32).unwrap_err();
        assert!(matches!(err, CoreError::ShapeOverflow { .. }));
    }

    #[test]
    fn strides_are_c_order() {
        assert_eq!(c_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(c_strides(&[]), Vec::<u64>::new());
    }
}
