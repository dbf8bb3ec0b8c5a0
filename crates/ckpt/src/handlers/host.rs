use ckpt_core::{zeroed_bytes, IndexBox};
use ckpt_storage::StoredArray;

use super::{HOST_ARRAY_VALUE_TYPE, SCALAR_VALUE_TYPE};
use crate::{
    CkptError, HostArray, Leaf, RestoreContext, RestoreEntry, Result, SaveContext, SaveEntry,
    SavedLeaf, Scalar, TypeHandler,
};

/// Saves arrays held in the controller's memory as one-chunk zarr arrays,
/// written by the controller (Orbax's `np.ndarray` handler).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostArrayHandler;

/// Saves scalars as 0-d zarr arrays (Orbax's scalar handler): integers as
/// int64, floats as float64, booleans as bool.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScalarHandler;

impl TypeHandler for HostArrayHandler {
    fn value_type(&self) -> &str {
        HOST_ARRAY_VALUE_TYPE
    }

    fn save(&self, context: &SaveContext<'_>, entries: &[SaveEntry<'_>]) -> Result<Vec<SavedLeaf>> {
        entries
            .iter()
            .map(|entry| {
                let Leaf::HostArray(array) = entry.leaf else {
                    return Err(wrong_leaf(entry, "host array"));
                };
                write_whole(context, entry, array.shape(), array.dtype(), array.bytes())?;
                Ok(SavedLeaf {
                    value_type: HOST_ARRAY_VALUE_TYPE.to_owned(),
                    ..SavedLeaf::default()
                })
            })
            .collect()
    }

    fn restore(
        &self,
        context: &RestoreContext<'_>,
        entries: &[RestoreEntry<'_>],
    ) -> Result<Vec<Leaf>> {
        entries
            .iter()
            .map(|entry| Ok(Leaf::HostArray(read_whole(context, entry)?)))
            .collect()
    }
}

impl TypeHandler for ScalarHandler {
    fn value_type(&self) -> &str {
        SCALAR_VALUE_TYPE
    }

    fn save(&self, context: &SaveContext<'_>, entries: &[SaveEntry<'_>]) -> Result<Vec<SavedLeaf>> {
        entries
            .iter()
            .map(|entry| {
                let Leaf::Scalar(scalar) = entry.leaf else {
                    return Err(wrong_leaf(entry, "scalar"));
                };
                write_whole(context, entry, &[], scalar.dtype(), &scalar.to_bytes())?;
                Ok(SavedLeaf {
                    value_type: SCALAR_VALUE_TYPE.to_owned(),
                    ..SavedLeaf::default()
                })
            })
            .collect()
    }

    fn restore(
        &self,
        context: &RestoreContext<'_>,
        entries: &[RestoreEntry<'_>],
    ) -> Result<Vec<Leaf>> {
        entries
            .iter()
            .map(|entry| {
                let array = read_whole(context, entry)?;
                if !array.shape().is_empty() {
                    return Err(CkptError::InvalidMetadata {
                        path: format!("{}/{}", context.item.url(), entry.param_name),
                        reason: format!(
                            "a scalar is stored with shape {:?}; scalars are 0-d arrays",
                            array.shape()
                        ),
                    });
                }
                match Scalar::from_element(array.dtype(), array.bytes()) {
                    Some(scalar) => Ok(Leaf::Scalar(scalar)),
                    // Scalars of dtypes without a scalar form stay 0-d arrays.
                    None => Ok(Leaf::HostArray(array)),
                }
            })
            .collect()
    }
}

fn wrong_leaf(entry: &SaveEntry<'_>, expected: &str) -> CkptError {
    CkptError::InvalidLeaf {
        key_path: entry.key_path.to_string(),
        reason: format!("the {expected} handler was given a {:?} leaf", entry.leaf.leaf_type()),
    }
}

/// Writes an array as one chunk covering all of it.
fn write_whole(
    context: &SaveContext<'_>,
    entry: &SaveEntry<'_>,
    shape: &[u64],
    dtype: ckpt_core::DType,
    bytes: &[u8],
) -> Result<()> {
    if shape.contains(&0) {
        return Err(CkptError::InvalidLeaf {
            key_path: entry.key_path.to_string(),
            reason: format!(
                "its shape {shape:?} has a zero-size dimension, which the Orbax format cannot store; drop the leaf or give it at least one element"
            ),
        });
    }
    let stored = StoredArray {
        shape: shape.to_vec(),
        dtype,
        chunk_shape: shape.to_vec(),
    };
    context.writer.create_array(entry.param_name, &stored)?;
    context
        .writer
        .write_region(entry.param_name, &stored, &IndexBox::full(shape), bytes)?;
    Ok(())
}

/// Reads a whole stored array into the controller's memory.
pub(crate) fn read_whole(context: &RestoreContext<'_>, entry: &RestoreEntry<'_>) -> Result<HostArray> {
    let stored = context.reader.array(entry.param_name)?;
    let mut bytes = zeroed_bytes(&stored.shape, stored.dtype)?;
    context.reader.read_region(
        entry.param_name,
        &stored,
        &IndexBox::full(&stored.shape),
        &mut bytes,
    )?;
    Ok(HostArray::from_bytes(stored.shape, stored.dtype, bytes)?)
}
