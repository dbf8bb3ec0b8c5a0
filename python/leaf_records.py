"""Build the per-leaf JSON records shared by orbax_read.py and make_fixtures.py.

A record describes one pytree leaf in the schema of
testdata/orbax/*/expected_values.json:

- keypath: list of {"key", "key_type", "orbax_key_type"}, where key_type is
  "dict" (Orbax key type 2) or "sequence" (Orbax key type 1).
- param_name: the keys joined with ".", as Orbax names the stored array.
- kind: "array" (rank >= 1), "array0d" (rank 0, including Python and numpy
  scalars), "string", or "empty" (an empty dict, list or tuple, or None).
- dtype, shape, nbytes, sha256 for arrays. The digest covers the C-order
  little-endian element bytes: bool is one byte 0/1, int4 is one byte per
  element (low nibble), bfloat16 and float8 are raw bit patterns, and complex
  is (re, im) pairs. For strings the digest covers the UTF-8 bytes.
- values: the elements in C order for arrays of at most MAX_LISTED_VALUES
  elements, for reading only. compare_values.py does not compare them.
"""

import hashlib
import importlib.metadata
import math

import jax
import numpy as np

# Arrays with more elements than this get no "values" list. The shipped
# fixtures list up to 128 elements (f32[16,8]) and omit 1024 (u32[32,32]).
MAX_LISTED_VALUES = 256

CHECKSUM_DESCRIPTION = (
    "sha256 of the C-order, little-endian element bytes in the listed dtype "
    "(bool = 1 byte 0/1; int4 = 1 byte per element; bfloat16/float8 = raw bit "
    "patterns; complex = (re, im) pairs; strings = UTF-8)"
)


def package_versions():
    """Return the installed versions of the packages that read or write."""
    names = ("orbax-checkpoint", "jax", "jaxlib", "tensorstore", "numpy", "ml_dtypes")
    return {name: importlib.metadata.version(name) for name in names}


def is_empty_node(value):
    """Tell whether Orbax stores value as an empty node (no data)."""
    if value is None:
        return True
    return isinstance(value, (dict, list, tuple)) and len(value) == 0


def keypath_record(path):
    """Convert a JAX key path into the keypath list of expected_values.json."""
    record = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            record.append({"key": str(entry.key), "key_type": "dict", "orbax_key_type": 2})
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            # Orbax stores attribute keys (dataclasses, namedtuples) as dict keys.
            record.append({"key": entry.name, "key_type": "dict", "orbax_key_type": 2})
        elif isinstance(entry, jax.tree_util.SequenceKey):
            record.append({"key": str(entry.idx), "key_type": "sequence", "orbax_key_type": 1})
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            record.append({"key": str(entry.key), "key_type": "sequence", "orbax_key_type": 1})
        else:
            raise TypeError(f"unsupported key type {type(entry).__name__} in key path {path!r}")
    return record


def param_name(keypath):
    """Join the keys of a keypath record with "." like Orbax's param names."""
    return ".".join(entry["key"] for entry in keypath)


def element_bytes(array):
    """Return the C-order little-endian bytes of a numpy array."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


def _json_number(value):
    """Map a Python float to JSON, spelling NaN and infinities as strings."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def listed_values(array):
    """Return the elements of a numpy array as JSON values in C order."""
    flat = np.ascontiguousarray(array).reshape(-1)
    kind = flat.dtype.kind
    if kind == "b":
        return [bool(v) for v in flat]
    if kind in "iu":
        return [int(v) for v in flat]
    if kind == "c":
        return [[_json_number(float(v.real)), _json_number(float(v.imag))] for v in flat]
    # float16/32/64 and the ml_dtypes types (bfloat16, float8, int4) convert
    # exactly to float64.
    return [_json_number(float(v)) for v in flat.astype(np.float64)]


def array_record(keypath, array):
    """Describe a numpy array leaf (rank 0 gives kind "array0d")."""
    array = np.asarray(array)
    record = {
        "keypath": keypath,
        "param_name": param_name(keypath),
        "kind": "array0d" if array.ndim == 0 else "array",
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "nbytes": int(array.nbytes),
        "sha256": hashlib.sha256(element_bytes(array)).hexdigest(),
    }
    if array.size <= MAX_LISTED_VALUES:
        record["values"] = listed_values(array)
    return record


def string_record(keypath, value):
    """Describe a str leaf."""
    return {
        "keypath": keypath,
        "param_name": param_name(keypath),
        "kind": "string",
        "value": value,
        "sha256": hashlib.sha256(value.encode("utf-8")).hexdigest(),
    }


def empty_record(keypath, value):
    """Describe an empty container or None leaf."""
    return {
        "keypath": keypath,
        "param_name": param_name(keypath),
        "kind": "empty",
        "python_type": type(value).__name__,
    }


def sharding_record(sharding, shape):
    """Describe how a jax.sharding.Sharding splits an array of the given shape.

    The fields follow the shipped fixtures' source_sharding: mesh_shape,
    mesh_device_ids, partition_spec and shard_shape for a NamedSharding,
    device_id and shard_shape for a SingleDeviceSharding.
    """
    if isinstance(sharding, jax.sharding.NamedSharding):
        mesh = sharding.mesh
        spec = [list(entry) if isinstance(entry, tuple) else entry for entry in sharding.spec]
        record = {
            "mesh_shape": {name: int(size) for name, size in mesh.shape.items()},
            "mesh_device_ids": np.vectorize(lambda device: device.id, otypes=[int])(mesh.devices).tolist(),
            "partition_spec": spec,
        }
    elif isinstance(sharding, jax.sharding.SingleDeviceSharding):
        (device,) = sharding.device_set
        record = {"device_id": int(device.id)}
    else:
        record = {"type": type(sharding).__name__}
    record["shard_shape"] = list(sharding.shard_shape(tuple(shape)))
    return record
