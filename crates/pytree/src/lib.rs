//! Pytrees, key paths and the Orbax tree metadata document.
//!
//! A checkpoint item is a pytree: nested dicts, lists, tuples and `None` with
//! arrays, scalars and strings at its leaves. [`PyTree`] models that structure
//! for any leaf type, and [`KeyPath`] names a node by the [`Key`]s that lead to
//! it. Flattening visits leaves in the order of `jax.tree_util.tree_flatten`,
//! so the n-th leaf here is the n-th leaf in JAX and Orbax.
//!
//! Orbax stores each leaf's data under its parameter name, the keys joined
//! with `.` ([`param_name`]). Distinct key paths can share a name, and a name
//! taken from a checkpoint could point outside it, so [`check_param_names`]
//! rejects both before names become storage paths.
//!
//! [`TreeMetadata`] reads and writes `_METADATA`, the file that records the
//! tree structure of a checkpoint item, one entry per leaf and per empty
//! node. Its decoder treats the file as hostile input: it caps the document
//! size and tree depth and returns a [`MetadataError`] for each inconsistency.
//!
//! The crate has no array types and does no I/O.
//!
//! # Example
//!
//! ```
//! use ckpt_pytree::{param_name, PyTree, TreeError};
//!
//! # fn main() -> Result<(), TreeError> {
//! // Leaves are shapes here; in a checkpoint they are arrays.
//! let tree = PyTree::dict([
//!     (
//!         "params",
//!         PyTree::dict([
//!             ("kernel", PyTree::leaf(vec![16, 8])),
//!             ("bias", PyTree::leaf(vec![8])),
//!         ]),
//!     ),
//!     ("opt", PyTree::list([PyTree::leaf(vec![5]), PyTree::tuple([PyTree::leaf(vec![3]), PyTree::None])])),
//!     ("step", PyTree::leaf(vec![])),
//! ]);
//! tree.check_param_names()?;
//!
//! for (path, shape) in tree.flatten() {
//!     println!("{:<14} {:<20} {:?}", param_name(&path), path.to_string(), shape);
//! }
//!
//! let names: Vec<String> = tree.flatten().iter().map(|(path, _)| param_name(path)).collect();
//! assert_eq!(names, ["opt.0", "opt.1.0", "params.bias", "params.kernel", "step"]);
//! # Ok(())
//! # }
//! ```

mod error;
mod flatten;
mod key;
mod metadata;
mod name;
mod prefix;
mod repr;
mod tree;

pub use crate::{
    error::{KeyPathParseError, MetadataError, TreeError},
    flatten::{EmptyNode, FlatNode},
    key::{Key, KeyPath, KeyType},
    metadata::{
        entry_key, MetadataEntry, TreeMetadata, ValueMetadata, ValueType, MAX_METADATA_BYTES,
        MAX_TREE_DEPTH,
    },
    name::{check_param_names, param_name},
    prefix::broadcast_prefix,
    tree::{NodeKind, PyTree},
};
