use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DeviceError, DeviceId};

/// The kind of a mesh axis in JAX's type system, as `jax.sharding.AxisType`.
///
/// It does not change which box a device holds. ckpt keeps it so that a
/// sharding read from a checkpoint is written back unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AxisType {
    /// The compiler chooses how to shard along the axis (JAX's default).
    #[default]
    Auto,
    /// Sharding along the axis is part of array types.
    Explicit,
    /// The axis is handled by hand inside `shard_map`.
    Manual,
}

impl AxisType {
    /// The spelling Orbax writes, which is Python's `str(AxisType.Auto)`.
    pub fn orbax_name(self) -> &'static str {
        match self {
            AxisType::Auto => "AxisType.Auto",
            AxisType::Explicit => "AxisType.Explicit",
            AxisType::Manual => "AxisType.Manual",
        }
    }
}

impl fmt::Display for AxisType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.orbax_name())
    }
}

impl FromStr for AxisType {
    type Err = DeviceError;

    fn from_str(name: &str) -> Result<AxisType, DeviceError> {
        match name {
            "AxisType.Auto" => Ok(AxisType::Auto),
            "AxisType.Explicit" => Ok(AxisType::Explicit),
            "AxisType.Manual" => Ok(AxisType::Manual),
            _ => Err(DeviceError::UnknownAxisType {
                axis_type: name.to_owned(),
            }),
        }
    }
}

/// A named, multi-dimensional grid of devices, as `jax.sharding.Mesh`.
///
/// Devices are stored in row-major (C) order of the mesh shape: the device
/// at mesh coordinates `(i, j)` of a `[a, b]` mesh is `devices()[i * b + j]`.
/// A mesh with no axes contains exactly one device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MeshFields", into = "MeshFields")]
pub struct Mesh {
    shape: Vec<usize>,
    axis_names: Vec<String>,
    axis_types: Vec<AxisType>,
    devices: Vec<DeviceId>,
}

impl Mesh {
    /// Creates a mesh with every axis of type [`AxisType::Auto`].
    ///
    /// Rejects a shape and name list of different lengths, a zero extent,
    /// a shape whose product differs from the device count, and repeated
    /// axis names or devices.
    pub fn new<S: Into<String>>(
        shape: Vec<usize>,
        axis_names: impl IntoIterator<Item = S>,
        devices: Vec<DeviceId>,
    ) -> Result<Mesh, DeviceError> {
        let axis_names: Vec<String> = axis_names.into_iter().map(Into::into).collect();
        if shape.len() != axis_names.len() {
            return Err(DeviceError::MeshRankMismatch { shape, axis_names });
        }
        if shape.contains(&0) {
            return Err(DeviceError::EmptyMesh { shape });
        }
        let product = shape
            .iter()
            .try_fold(1usize, |count, &n| count.checked_mul(n));
        if product != Some(devices.len()) {
            return Err(DeviceError::MeshSizeMismatch {
                shape,
                found: devices.len(),
            });
        }

        let mut seen_names = HashSet::with_capacity(axis_names.len());
        for name in &axis_names {
            if !seen_names.insert(name.as_str()) {
                return Err(DeviceError::DuplicateAxisName { axis: name.clone() });
            }
        }
        let mut seen_devices = HashSet::with_capacity(devices.len());
        for &device in &devices {
            if !seen_devices.insert(device) {
                return Err(DeviceError::DuplicateDevice { device });
            }
        }

        let axis_types = vec![AxisType::Auto; shape.len()];
        Ok(Mesh {
            shape,
            axis_names,
            axis_types,
            devices,
        })
    }

    /// Replaces the axis types, one per axis.
    pub fn with_axis_types(mut self, axis_types: Vec<AxisType>) -> Result<Mesh, DeviceError> {
        if axis_types.len() != self.shape.len() {
            return Err(DeviceError::AxisTypesLength {
                axes: self.shape.len(),
                axis_types: axis_types.len(),
            });
        }
        self.axis_types = axis_types;
        Ok(self)
    }

    /// Extent of each axis.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Name of each axis.
    pub fn axis_names(&self) -> &[String] {
        &self.axis_names
    }

    /// Type of each axis.
    pub fn axis_types(&self) -> &[AxisType] {
        &self.axis_types
    }

    /// Devices in row-major order of the mesh shape.
    pub fn devices(&self) -> &[DeviceId] {
        &self.devices
    }

    /// Returns the position of the axis called `name`.
    pub fn axis_index(&self, name: &str) -> Option<usize> {
        self.axis_names.iter().position(|axis| axis == name)
    }

    /// Returns the extent of the axis called `name`.
    pub fn axis_size(&self, name: &str) -> Option<usize> {
        self.axis_index(name).map(|axis| self.shape[axis])
    }

    /// Returns the mesh coordinates of the device at `flat` in [`Mesh::devices`].
    pub(crate) fn coordinates(&self, flat: usize) -> Vec<usize> {
        let mut coordinates = vec![0; self.shape.len()];
        let mut rest = flat;
        for (axis, &extent) in self.shape.iter().enumerate().rev() {
            coordinates[axis] = rest % extent;
            rest /= extent;
        }
        coordinates
    }
}

/// The serialized form of a [`Mesh`], validated by [`Mesh::new`] when read.
#[derive(Serialize, Deserialize)]
struct MeshFields {
    shape: Vec<usize>,
    axis_names: Vec<String>,
    axis_types: Vec<AxisType>,
    devices: Vec<DeviceId>,
}

impl TryFrom<MeshFields> for Mesh {
    type Error = DeviceError;

    fn try_from(fields: MeshFields) -> Result<Mesh, DeviceError> {
        Mesh::new(fields.shape, fields.axis_names, fields.devices)?
            .with_axis_types(fields.axis_types)
    }
}

impl From<Mesh> for MeshFields {
    fn from(mesh: Mesh) -> MeshFields {
        MeshFields {
            shape: mesh.shape,
            axis_names: mesh.axis_names,
            axis_types: mesh.axis_types,
            devices: mesh.devices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<u32>) -> Vec<DeviceId> {
        range.map(DeviceId).collect()
    }

    #[test]
    fn axis_size_by_name() {
        let mesh = Mesh::new(vec![4, 2], ["x", "y"], ids(0..8)).unwrap();
        assert_eq!(mesh.axis_size("x"), Some(4));
        assert_eq!(mesh.axis_size("y"), Some(2));
        assert_eq!(mesh.axis_size("z"), None);
    }

    #[test]
    fn coordinates_are_row_major() {
        let mesh = Mesh::new(vec![2, 3], ["x", "y"], ids(0..6)).unwrap();
        assert_eq!(mesh.coordinates(0), vec![0, 0]);
        assert_eq!(mesh.coordinates(4), vec![1, 1]);
        assert_eq!(mesh.coordinates(5), vec![1, 2]);
    }

    #[test]
    fn scalar_mesh_has_one_device() {
        let mesh = Mesh::new(Vec::new(), Vec::<String>::new(), ids(7..8)).unwrap();
        assert_eq!(mesh.coordinates(0), Vec::<usize>::new());
        let err = Mesh::new(Vec::new(), Vec::<String>::new(), ids(0..2)).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::MeshSizeMismatch { found: 2, .. }
        ));
    }

    #[test]
    fn size_mismatch() {
        let err = Mesh::new(vec![4, 2], ["x", "y"], ids(0..6)).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::MeshSizeMismatch { found: 6, .. }
        ));
    }

    #[test]
    fn size_overflow_is_mismatch() {
        let err = Mesh::new(vec![usize::MAX, 2], ["x", "y"], ids(0..2)).unwrap_err();
        assert!(matches!(err, DeviceError::MeshSizeMismatch { .. }));
    }

    #[test]
    fn zero_extent_is_empty() {
        let err = Mesh::new(vec![0, 2], ["x", "y"], Vec::new()).unwrap_err();
        assert!(matches!(err, DeviceError::EmptyMesh { .. }));
    }

    #[test]
    fn rank_mismatch() {
        let err = Mesh::new(vec![8], ["x", "y"], ids(0..8)).unwrap_err();
        assert!(matches!(err, DeviceError::MeshRankMismatch { .. }));
    }

    #[test]
    fn duplicate_axis_name() {
        let err = Mesh::new(vec![2, 2], ["x", "x"], ids(0..4)).unwrap_err();
        assert!(matches!(err, DeviceError::DuplicateAxisName { axis } if axis == "x"));
    }

    #[test]
    fn duplicate_device() {
        let devices = vec![DeviceId(0), DeviceId(1), DeviceId(1), DeviceId(3)];
        let err = Mesh::new(vec![2, 2], ["x", "y"], devices).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::DuplicateDevice {
                device: DeviceId(1)
            }
        ));
    }

    #[test]
    fn axis_types_length() {
        let mesh = Mesh::new(vec![2, 2], ["x", "y"], ids(0..4)).unwrap();
        assert_eq!(mesh.axis_types(), &[AxisType::Auto, AxisType::Auto]);
        let err = mesh.with_axis_types(vec![AxisType::Explicit]).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::AxisTypesLength {
                axes: 2,
                axis_types: 1
            }
        ));
    }

    #[test]
    fn axis_type_names_round_trip() {
        for axis_type in [AxisType::Auto, AxisType::Explicit, AxisType::Manual] {
            assert_eq!(
                axis_type.orbax_name().parse::<AxisType>().unwrap(),
                axis_type
            );
        }
        let err = "Auto".parse::<AxisType>().unwrap_err();
        assert!(matches!(err, DeviceError::UnknownAxisType { .. }));
    }

    #[test]
    fn serde_validates() {
        let mesh = Mesh::new(vec![2], ["x"], ids(0..2)).unwrap();
        let text = serde_json::to_string(&mesh).unwrap();
        assert_eq!(serde_json::from_str::<Mesh>(&text).unwrap(), mesh);
        let bad = text.replace("[2]", "[3]");
        assert!(serde_json::from_str::<Mesh>(&bad).is_err());
    }
}
