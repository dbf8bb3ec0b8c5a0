//! The built-in type handlers.

mod array;
mod host;
pub(crate) mod string;

pub use self::{
    array::{ArrayHandler, ColocatedArrayHandler},
    host::{HostArrayHandler, ScalarHandler},
    string::StringHandler,
};

/// `value_type` of sharded arrays, as Orbax names `jax.Array` leaves.
pub const ARRAY_VALUE_TYPE: &str = "jax.Array";
/// `value_type` of host arrays, as Orbax names NumPy arrays.
pub const HOST_ARRAY_VALUE_TYPE: &str = "np.ndarray";
/// `value_type` of scalars.
pub const SCALAR_VALUE_TYPE: &str = "scalar";
/// `value_type` of strings.
pub const STRING_VALUE_TYPE: &str = "string";
