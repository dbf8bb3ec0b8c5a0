use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DeviceError, Mesh};

/// How one array dimension is split over mesh axes: one entry of a [`PartitionSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PartitionDim {
    /// Not split, so every device has the whole dimension (`None` in JAX).
    Unsharded,
    /// Split over one mesh axis (`'x'` in JAX).
    Axis(String),
    /// Split over several mesh axes, major to minor (`('x', 'y')` in JAX).
    ///
    /// An empty list is unsharded. A one-axis list shards like
    /// [`PartitionDim::Axis`] and is kept apart only so that it is written
    /// back as a list.
    Axes(Vec<String>),
}

impl PartitionDim {
    /// Creates an entry that splits the dimension over one mesh axis.
    pub fn axis(name: impl Into<String>) -> PartitionDim {
        PartitionDim::Axis(name.into())
    }

    /// Creates an entry that splits the dimension over several mesh axes, major to minor.
    pub fn axes<S: Into<String>>(names: impl IntoIterator<Item = S>) -> PartitionDim {
        PartitionDim::Axes(names.into_iter().map(Into::into).collect())
    }

    /// The mesh axes of this entry, major to minor, or none when unsharded.
    pub fn axis_names(&self) -> &[String] {
        match self {
            PartitionDim::Unsharded => &[],
            PartitionDim::Axis(name) => std::slice::from_ref(name),
            PartitionDim::Axes(names) => names,
        }
    }
}

impl<S: Into<String>> From<Option<S>> for PartitionDim {
    fn from(axis: Option<S>) -> PartitionDim {
        match axis {
            Some(name) => PartitionDim::Axis(name.into()),
            None => PartitionDim::Unsharded,
        }
    }
}

impl fmt::Display for PartitionDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionDim::Unsharded => f.write_str("None"),
            PartitionDim::Axis(name) => write!(f, "'{name}'"),
            PartitionDim::Axes(names) => {
                f.write_str("(")?;
                for (index, name) in names.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "'{name}'")?;
                }
                // Python writes a one-element tuple with a trailing comma.
                if names.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Which mesh axes split each array dimension, as `jax.sharding.PartitionSpec`.
///
/// A spec shorter than the array rank leaves the remaining dimensions
/// unsharded, so the empty spec replicates an array over the whole mesh.
///
/// ```
/// use ckpt_device::{PartitionDim, PartitionSpec};
///
/// // P('x', None)
/// let rows = PartitionSpec::new([Some("x"), None]);
/// // P(('x', 'y'), 'z')
/// let blocks = PartitionSpec::from_dims([
///     PartitionDim::axes(["x", "y"]),
///     PartitionDim::axis("z"),
/// ]);
/// assert_eq!(rows.to_string(), "P('x', None)");
/// assert_eq!(blocks.to_string(), "P(('x', 'y'), 'z')");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionSpec {
    dims: Vec<PartitionDim>,
}

impl PartitionSpec {
    /// Creates a spec with at most one mesh axis per dimension (`None` for unsharded).
    pub fn new<S: Into<String>>(dims: impl IntoIterator<Item = Option<S>>) -> PartitionSpec {
        PartitionSpec {
            dims: dims.into_iter().map(PartitionDim::from).collect(),
        }
    }

    /// Creates a spec from arbitrary entries, including multi-axis ones.
    pub fn from_dims(dims: impl IntoIterator<Item = PartitionDim>) -> PartitionSpec {
        PartitionSpec {
            dims: dims.into_iter().collect(),
        }
    }

    /// Creates the empty spec, which replicates an array over its mesh.
    pub fn replicated() -> PartitionSpec {
        PartitionSpec::default()
    }

    /// The entries, one per leading array dimension.
    pub fn dims(&self) -> &[PartitionDim] {
        &self.dims
    }

    /// Number of entries, which may be less than the array's rank.
    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Whether the spec has no entries, so it replicates the array.
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// Iterates over every mesh axis named in the spec, in order.
    pub fn used_axes(&self) -> impl Iterator<Item = &str> {
        self.dims
            .iter()
            .flat_map(|dim| dim.axis_names().iter().map(String::as_str))
    }

    /// Checks that every axis the spec names is in `mesh` and appears once.
    pub fn validate(&self, mesh: &Mesh) -> Result<(), DeviceError> {
        let mut seen = HashSet::new();
        for axis in self.used_axes() {
            if mesh.axis_index(axis).is_none() {
                return Err(DeviceError::UnknownAxis {
                    axis: axis.to_owned(),
                    mesh_axes: mesh.axis_names().to_vec(),
                });
            }
            if !seen.insert(axis) {
                return Err(DeviceError::AxisUsedTwice {
                    axis: axis.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Returns one entry per dimension of a rank-`rank` array, padding with [`PartitionDim::Unsharded`].
    pub fn padded(&self, rank: usize) -> Result<Vec<PartitionDim>, DeviceError> {
        if self.dims.len() > rank {
            return Err(DeviceError::SpecTooLong {
                spec_rank: self.dims.len(),
                array_rank: rank,
            });
        }
        let mut dims = self.dims.clone();
        dims.resize(rank, PartitionDim::Unsharded);
        Ok(dims)
    }
}

impl fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P(")?;
        for (index, dim) in self.dims.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;

    fn mesh() -> Mesh {
        let devices = (0..8).map(DeviceId).collect();
        Mesh::new(vec![2, 2, 2], ["x", "y", "z"], devices).unwrap()
    }

    #[test]
    fn new_maps_options() {
        let spec = PartitionSpec::new([Some("x"), None]);
        assert_eq!(
            spec.dims(),
            &[PartitionDim::axis("x"), PartitionDim::Unsharded]
        );
    }

    #[test]
    fn used_axes_in_order() {
        let spec = PartitionSpec::from_dims([
            PartitionDim::axes(["y", "x"]),
            PartitionDim::Unsharded,
            PartitionDim::axis("z"),
        ]);
        assert_eq!(spec.used_axes().collect::<Vec<_>>(), ["y", "x", "z"]);
    }

    #[test]
    fn validate_accepts_known_axes() {
        let spec =
            PartitionSpec::from_dims([PartitionDim::axes(["x", "z"]), PartitionDim::axis("y")]);
        assert!(spec.validate(&mesh()).is_ok());
    }

    #[test]
    fn validate_unknown_axis() {
        let spec = PartitionSpec::new([Some("x"), Some("w")]);
        let err = spec.validate(&mesh()).unwrap_err();
        assert!(matches!(err, DeviceError::UnknownAxis { axis, .. } if axis == "w"));
    }

    #[test]
    fn validate_axis_used_twice() {
        let spec =
            PartitionSpec::from_dims([PartitionDim::axes(["x", "y"]), PartitionDim::axis("x")]);
        let err = spec.validate(&mesh()).unwrap_err();
        assert!(matches!(err, DeviceError::AxisUsedTwice { axis } if axis == "x"));
    }

    #[test]
    fn padded_fills_unsharded() {
        let spec = PartitionSpec::new([Some("x")]);
        let dims = spec.padded(3).unwrap();
        assert_eq!(dims.len(), 3);
        assert_eq!(dims[0], PartitionDim::axis("x"));
        assert_eq!(dims[2], PartitionDim::Unsharded);
    }

    #[test]
    fn padded_rejects_long_spec() {
        let spec = PartitionSpec::new([Some("x"), None]);
        let err = spec.padded(1).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::SpecTooLong {
                spec_rank: 2,
                array_rank: 1
            }
        ));
    }

    #[test]
    fn display_like_python() {
        let spec = PartitionSpec::from_dims([
            PartitionDim::axes(["x"]),
            PartitionDim::Unsharded,
            PartitionDim::axis("y"),
        ]);
        assert_eq!(spec.to_string(), "P(('x',), None, 'y')");
        assert_eq!(PartitionSpec::replicated().to_string(), "P()");
    }
}
