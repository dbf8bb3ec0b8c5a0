use std::fmt::Debug;
use std::sync::Arc;

use crate::{DeviceError, DeviceId, HostBuffer};

/// The bytes of one shard in the memory of one device.
///
/// A framework implements this for its device arrays. Implementations must
/// report the same [`DeviceBuffer::len`] for the buffer's whole life, and
/// [`DeviceBuffer::copy_to_host`] must copy exactly that many bytes in C order.
pub trait DeviceBuffer: Send + Sync + Debug {
    /// The device holding the bytes.
    fn device(&self) -> DeviceId;

    /// Length in bytes.
    fn len(&self) -> usize;

    /// Whether the buffer is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the bytes into `dst`, which must be exactly [`DeviceBuffer::len`] bytes long.
    fn copy_to_host(&self, dst: &mut [u8]) -> Result<(), DeviceError>;

    /// Returns the bytes without a copy when they already live in host memory.
    fn host_bytes(&self) -> Option<&[u8]> {
        None
    }

    /// Copies the bytes into a new host buffer, reading them through [`DeviceBuffer::host_bytes`] when it returns them.
    fn to_host_buffer(&self) -> Result<HostBuffer, DeviceError> {
        if let Some(bytes) = self.host_bytes() {
            return HostBuffer::from_slice(bytes);
        }
        let mut buffer = HostBuffer::zeroed(self.len())?;
        self.copy_to_host(buffer.as_bytes_mut()?)?;
        Ok(buffer)
    }
}

/// Moves data from host memory onto devices: the part of a framework that ckpt calls.
///
/// Restores build each shard in a [`HostBuffer`] and upload it here. Saves
/// read shards back with [`DeviceBuffer::copy_to_host`].
pub trait DeviceMemory: Send + Sync + Debug {
    /// Places `data` on `device` and returns the device buffer holding it.
    fn upload(
        &self,
        device: DeviceId,
        data: HostBuffer,
    ) -> Result<Arc<dyn DeviceBuffer>, DeviceError>;
}

/// Device memory that is host memory: each "device" buffer is a [`HostBuffer`].
///
/// This simulates devices for tests, for the demo and for CPU-only hosts.
/// It accepts any device id.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostMemory;

impl DeviceMemory for HostMemory {
    fn upload(
        &self,
        device: DeviceId,
        data: HostBuffer,
    ) -> Result<Arc<dyn DeviceBuffer>, DeviceError> {
        Ok(Arc::new(HostDeviceBuffer { device, data }))
    }
}

/// A buffer of [`HostMemory`]: a [`HostBuffer`] tagged with a simulated device.
#[derive(Clone, Debug)]
pub struct HostDeviceBuffer {
    device: DeviceId,
    data: HostBuffer,
}

impl HostDeviceBuffer {
    /// Creates a buffer holding `data` on the simulated `device`.
    pub fn new(device: DeviceId, data: HostBuffer) -> HostDeviceBuffer {
        HostDeviceBuffer { device, data }
    }

    /// The host buffer holding the bytes.
    pub fn host_buffer(&self) -> &HostBuffer {
        &self.data
    }
}

impl DeviceBuffer for HostDeviceBuffer {
    fn device(&self) -> DeviceId {
        self.device
    }

    fn len(&self) -> usize {
        self.data.len()
    }

    fn copy_to_host(&self, dst: &mut [u8]) -> Result<(), DeviceError> {
        if dst.len() != self.data.len() {
            return Err(DeviceError::BufferLength {
                expected: self.data.len() as u64,
                found: dst.len() as u64,
            });
        }
        dst.copy_from_slice(self.data.as_bytes());
        Ok(())
    }

    fn host_bytes(&self) -> Option<&[u8]> {
        Some(self.data.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device buffer that keeps its bytes out of reach of `host_bytes`, like a GPU buffer.
    #[derive(Debug)]
    struct OpaqueBuffer(Vec<u8>);

    impl DeviceBuffer for OpaqueBuffer {
        fn device(&self) -> DeviceId {
            DeviceId(9)
        }

        fn len(&self) -> usize {
            self.0.len()
        }

        fn copy_to_host(&self, dst: &mut [u8]) -> Result<(), DeviceError> {
            if dst.len() != self.0.len() {
                return Err(DeviceError::Backend {
                    device: DeviceId(9),
                    source: "length mismatch".into(),
                });
            }
            dst.copy_from_slice(&self.0);
            Ok(())
        }
    }

    #[test]
    fn host_memory_upload_keeps_bytes() {
        let data = HostBuffer::from_slice(&[1, 2, 3]).unwrap();
        let buffer = HostMemory.upload(DeviceId(4), data).unwrap();
        assert_eq!(buffer.device(), DeviceId(4));
        assert_eq!(buffer.len(), 3);
        assert_eq!(buffer.host_bytes(), Some(&[1u8, 2, 3][..]));
    }

    #[test]
    fn host_copy_to_host() {
        let buffer = HostDeviceBuffer::new(DeviceId(0), HostBuffer::from_slice(&[7, 8]).unwrap());
        let mut dst = [0u8; 2];
        buffer.copy_to_host(&mut dst).unwrap();
        assert_eq!(dst, [7, 8]);
    }

    #[test]
    fn host_copy_to_host_wrong_length() {
        let buffer = HostDeviceBuffer::new(DeviceId(0), HostBuffer::from_slice(&[7, 8]).unwrap());
        let err = buffer.copy_to_host(&mut [0u8; 3]).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::BufferLength {
                expected: 2,
                found: 3
            }
        ));
    }

    #[test]
    fn to_host_buffer_without_host_bytes() {
        let buffer = OpaqueBuffer(vec![4, 5, 6]);
        assert!(buffer.host_bytes().is_none());
        assert_eq!(buffer.to_host_buffer().unwrap().as_bytes(), &[4, 5, 6]);
        assert!(!buffer.is_empty());
    }

    #[test]
    fn backend_error_keeps_source() {
        let buffer = OpaqueBuffer(vec![1]);
        let err = buffer.copy_to_host(&mut []).unwrap_err();
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("length mismatch"));
    }
}
