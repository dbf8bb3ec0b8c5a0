use std::fmt;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::DeviceError;

/// Alignment of an owned [`HostBuffer`] in bytes, enough for any element type and for SIMD loads.
pub const HOST_BUFFER_ALIGN: usize = 64;

/// One aligned unit of an owned buffer's storage.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Block([u8; HOST_BUFFER_ALIGN]);

/// Bytes that another crate owns and shares read-only, such as a memory map.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Bytes in host memory, viewed as raw bytes or as a slice of a plain-old-data type.
///
/// An owned buffer starts on a 64-byte boundary, so typed views of it fail
/// on alignment only for element types aligned to more than 64 bytes. A
/// shared buffer wraps bytes owned elsewhere, such as a memory map. It is
/// read-only: [`HostBuffer::as_bytes_mut`] returns
/// [`DeviceError::ReadOnlyBuffer`] for it rather than copying behind the
/// caller's back. Call [`HostBuffer::into_owned`] to get a writable copy.
#[derive(Clone)]
pub struct HostBuffer {
    storage: Storage,
}

#[derive(Clone)]
enum Storage {
    /// Blocks holding `len` bytes followed by zero padding.
    Owned {
        blocks: Vec<Block>,
        len: usize,
    },
    Shared(SharedBytes),
}

impl HostBuffer {
    /// Allocates a zero-filled owned buffer of `len` bytes.
    ///
    /// Returns [`DeviceError::AllocationFailed`] instead of aborting when
    /// the allocator cannot provide the memory.
    pub fn zeroed(len: usize) -> Result<HostBuffer, DeviceError> {
        let blocks = zeroed_blocks(len)?;
        Ok(HostBuffer {
            storage: Storage::Owned { blocks, len },
        })
    }

    /// Copies `bytes` into a new owned buffer.
    pub fn from_slice(bytes: &[u8]) -> Result<HostBuffer, DeviceError> {
        let len = bytes.len();
        let mut blocks = zeroed_blocks(len)?;
        bytemuck::cast_slice_mut(&mut blocks)[..len].copy_from_slice(bytes);
        Ok(HostBuffer {
            storage: Storage::Owned { blocks, len },
        })
    }

    /// Wraps bytes owned elsewhere without copying them, as a read-only buffer.
    pub fn shared(bytes: SharedBytes) -> HostBuffer {
        HostBuffer {
            storage: Storage::Shared(bytes),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Owned { len, .. } => *len,
            Storage::Shared(bytes) => bytes.as_ref().as_ref().len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the buffer wraps shared bytes and so cannot be written.
    pub fn is_read_only(&self) -> bool {
        matches!(self.storage, Storage::Shared(_))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned { blocks, len } => &bytemuck::cast_slice(blocks)[..*len],
            Storage::Shared(bytes) => bytes.as_ref().as_ref(),
        }
    }

    /// Returns the bytes for writing, or [`DeviceError::ReadOnlyBuffer`] for a shared buffer.
    pub fn as_bytes_mut(&mut self) -> Result<&mut [u8], DeviceError> {
        match &mut self.storage {
            Storage::Owned { blocks, len } => Ok(&mut bytemuck::cast_slice_mut(blocks)[..*len]),
            Storage::Shared(_) => Err(DeviceError::ReadOnlyBuffer),
        }
    }

    /// Returns an owned buffer with the same bytes, copying them only if they are shared.
    pub fn into_owned(self) -> Result<HostBuffer, DeviceError> {
        match &self.storage {
            Storage::Owned { .. } => Ok(self),
            Storage::Shared(bytes) => HostBuffer::from_slice(bytes.as_ref().as_ref()),
        }
    }

    /// Views the bytes as a slice of `T`.
    ///
    /// Fails if the length is not a multiple of `size_of::<T>()`, or, for a
    /// shared buffer, if its start is not aligned for `T`.
    pub fn as_slice<T: Pod>(&self) -> Result<&[T], DeviceError> {
        let bytes = self.as_bytes();
        check_view::<T>(bytes)?;
        bytemuck::try_cast_slice(bytes).map_err(|_| DeviceError::ViewAlignment {
            align: align_of::<T>(),
        })
    }

    /// Views the bytes as a writable slice of `T`, failing as [`HostBuffer::as_slice`] and [`HostBuffer::as_bytes_mut`] do.
    pub fn as_mut_slice<T: Pod>(&mut self) -> Result<&mut [T], DeviceError> {
        let bytes = self.as_bytes_mut()?;
        check_view::<T>(bytes)?;
        bytemuck::try_cast_slice_mut(bytes).map_err(|_| DeviceError::ViewAlignment {
            align: align_of::<T>(),
        })
    }
}

/// Allocates enough zeroed blocks for `len` bytes, reporting allocation failure as an error.
fn zeroed_blocks(len: usize) -> Result<Vec<Block>, DeviceError> {
    let count = len.div_ceil(HOST_BUFFER_ALIGN);
    let mut blocks = Vec::new();
    blocks
        .try_reserve_exact(count)
        .map_err(|_| DeviceError::AllocationFailed { bytes: len })?;
    blocks.resize(count, Block::zeroed());
    Ok(blocks)
}

/// Checks that `bytes` is a whole number of `T`, so a cast can fail only on alignment.
fn check_view<T: Pod>(bytes: &[u8]) -> Result<(), DeviceError> {
    let item_size = size_of::<T>();
    if item_size == 0 || !bytes.len().is_multiple_of(item_size) {
        return Err(DeviceError::ViewSize {
            len: bytes.len(),
            item_size,
        });
    }
    Ok(())
}

impl fmt::Debug for HostBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuffer")
            .field("len", &self.len())
            .field("read_only", &self.is_read_only())
            .finish()
    }
}

impl PartialEq for HostBuffer {
    fn eq(&self, other: &HostBuffer) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for HostBuffer {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_is_zero_and_aligned() {
        let buffer = HostBuffer::zeroed(100).unwrap();
        assert_eq!(buffer.len(), 100);
        assert!(buffer.as_bytes().iter().all(|&b| b == 0));
        assert_eq!(buffer.as_bytes().as_ptr() as usize % HOST_BUFFER_ALIGN, 0);
    }

    #[test]
    fn zeroed_empty() {
        let buffer = HostBuffer::zeroed(0).unwrap();
        assert!(buffer.is_empty());
        assert_eq!(buffer.as_slice::<f64>().unwrap(), &[] as &[f64]);
    }

    #[test]
    fn zeroed_too_large_fails() {
        let err = HostBuffer::zeroed(usize::MAX).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::AllocationFailed { bytes: usize::MAX }
        ));
    }

    #[test]
    fn from_slice_copies() {
        let buffer = HostBuffer::from_slice(&[1, 2, 3]).unwrap();
        assert_eq!(buffer.as_bytes(), &[1, 2, 3]);
        assert!(!buffer.is_read_only());
    }

    #[test]
    fn typed_views() {
        let mut buffer = HostBuffer::zeroed(16).unwrap();
        buffer.as_mut_slice::<u32>().unwrap()[1] = 0x0403_0201;
        assert_eq!(&buffer.as_bytes()[4..8], &[1, 2, 3, 4]);
        assert_eq!(buffer.as_slice::<u64>().unwrap().len(), 2);
        assert_eq!(buffer.as_slice::<f32>().unwrap()[0], 0.0);
    }

    #[test]
    fn typed_view_size_mismatch() {
        let buffer = HostBuffer::zeroed(6).unwrap();
        let err = buffer.as_slice::<u32>().unwrap_err();
        assert!(matches!(
            err,
            DeviceError::ViewSize {
                len: 6,
                item_size: 4
            }
        ));
    }

    #[test]
    fn typed_view_of_zero_sized_type() {
        let buffer = HostBuffer::zeroed(4).unwrap();
        let err = buffer.as_slice::<()>().unwrap_err();
        assert!(matches!(err, DeviceError::ViewSize { item_size: 0, .. }));
    }

    #[test]
    fn shared_is_read_only() {
        let bytes: SharedBytes = Arc::new(vec![5u8, 6, 7, 8]);
        let mut buffer = HostBuffer::shared(bytes);
        assert!(buffer.is_read_only());
        assert_eq!(buffer.as_bytes(), &[5, 6, 7, 8]);
        let err = buffer.as_bytes_mut().unwrap_err();
        assert!(matches!(err, DeviceError::ReadOnlyBuffer));
        let err = buffer.as_mut_slice::<u8>().unwrap_err();
        assert!(matches!(err, DeviceError::ReadOnlyBuffer));
    }

    #[test]
    fn shared_into_owned_is_writable() {
        let bytes: SharedBytes = Arc::new(vec![5u8, 6]);
        let mut buffer = HostBuffer::shared(bytes).into_owned().unwrap();
        buffer.as_bytes_mut().unwrap()[0] = 9;
        assert_eq!(buffer.as_bytes(), &[9, 6]);
    }

    #[test]
    fn shared_misaligned_view() {
        // A slice starting one byte into an aligned allocation cannot be viewed as u32.
        struct Offset(HostBuffer);
        impl AsRef<[u8]> for Offset {
            fn as_ref(&self) -> &[u8] {
                &self.0.as_bytes()[1..9]
            }
        }
        let inner = HostBuffer::zeroed(9).unwrap();
        let buffer = HostBuffer::shared(Arc::new(Offset(inner)));
        let err = buffer.as_slice::<u32>().unwrap_err();
        assert!(matches!(err, DeviceError::ViewAlignment { align: 4 }));
        assert_eq!(buffer.as_slice::<u8>().unwrap().len(), 8);
    }

    #[test]
    fn clone_of_owned_is_independent() {
        let mut original = HostBuffer::from_slice(&[1, 2]).unwrap();
        let copy = original.clone();
        original.as_bytes_mut().unwrap()[0] = 7;
        assert_eq!(copy.as_bytes(), &[1, 2]);
    }
}
