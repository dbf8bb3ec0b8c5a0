"""Restore a checkpoint with Python Orbax and print its leaves as one JSON document.

The output has the per-leaf schema of testdata/orbax/*/expected_values.json
(see leaf_records.py), so compare_values.py can check it against a fixture.

Modes:
  CKPT_DIR                      PyTreeCheckpointer().restore without a target
                                tree; jax.Array leaves land on the shardings
                                recorded in the checkpoint's _sharding file.
  CKPT_DIR --mesh 4x2           restore with a target tree built from the
                                checkpoint metadata: every non-scalar array
                                leaf becomes a jax.Array on the given mesh.
  ROOT --manager-item state     find the newest step of a CheckpointManager
                                root with Orbax and read that step's item.
  DB_DIR --raw-ocdbt            list every key of a TensorStore OCDBT
                                database with the sha256 of its value.

Run it through python_command() in xtask/src/venv.rs, or set
XLA_FLAGS=--xla_force_host_platform_device_count=8 and JAX_PLATFORMS=cpu
yourself; the script sets both when they are missing.
"""

import argparse
import hashlib
import json
import os
import sys

DEVICE_COUNT = 8
_DEVICE_COUNT_FLAG = f"--xla_force_host_platform_device_count={DEVICE_COUNT}"

# JAX reads these when it is imported, so they must be set before the import.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DEVICE_COUNT_FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import tensorstore as ts  # noqa: E402

import leaf_records  # noqa: E402

# Without x64, JAX would turn 64-bit arrays restored as jax.Array (--mesh)
# into 32-bit ones and change their bytes.
jax.config.update("jax_enable_x64", True)

MESH_AXIS_NAMES = ("x", "y", "z")


def parse_mesh(text):
    """Parse "4x2", "8" or "1" into a jax.sharding.Mesh over the first devices."""
    try:
        shape = tuple(int(part) for part in text.split("x"))
    except ValueError:
        raise SystemExit(f"invalid --mesh {text!r}: expected sizes joined by 'x', such as 4x2 or 8")
    if not shape or len(shape) > len(MESH_AXIS_NAMES) or any(size < 1 for size in shape):
        raise SystemExit(
            f"invalid --mesh {text!r}: expected 1 to {len(MESH_AXIS_NAMES)} positive sizes"
        )
    device_count = int(np.prod(shape))
    devices = jax.devices()
    if device_count > len(devices):
        raise SystemExit(
            f"invalid --mesh {text!r}: it needs {device_count} devices but JAX has {len(devices)}"
        )
    grid = np.array(devices[:device_count], dtype=object).reshape(shape)
    return jax.sharding.Mesh(grid, MESH_AXIS_NAMES[: len(shape)])


def partition_spec_for(shape, mesh):
    """Split dimension i over mesh axis i when the size divides it, else replicate it."""
    spec = []
    for dim, size in enumerate(shape):
        if dim < len(mesh.axis_names):
            axis = mesh.axis_names[dim]
            spec.append(axis if size % mesh.shape[axis] == 0 else None)
        else:
            spec.append(None)
    return jax.sharding.PartitionSpec(*spec)


def _is_tree_leaf(value):
    return leaf_records.is_empty_node(value) or not isinstance(value, (dict, list, tuple))


def build_restore_target(metadata_tree, mesh):
    """Build the (item, restore_args) trees that put array leaves on mesh."""

    def item_for(value):
        if isinstance(value, ocp.metadata.ScalarMetadata):
            return value.dtype.type(0)
        if isinstance(value, ocp.metadata.ArrayMetadata):
            sharding = jax.sharding.NamedSharding(mesh, partition_spec_for(value.shape, mesh))
            return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)
        if isinstance(value, ocp.metadata.StringMetadata):
            return ""
        return value

    def restore_args_for(value):
        if isinstance(value, ocp.metadata.ScalarMetadata):
            return ocp.RestoreArgs()
        if isinstance(value, ocp.metadata.ArrayMetadata):
            sharding = jax.sharding.NamedSharding(mesh, partition_spec_for(value.shape, mesh))
            return ocp.ArrayRestoreArgs(sharding=sharding, global_shape=value.shape, dtype=value.dtype)
        if isinstance(value, ocp.metadata.StringMetadata):
            return ocp.RestoreArgs(restore_type=str)
        return value

    item = jax.tree_util.tree_map(item_for, metadata_tree, is_leaf=_is_tree_leaf)
    restore_args = jax.tree_util.tree_map(restore_args_for, metadata_tree, is_leaf=_is_tree_leaf)
    return item, restore_args


def describe_leaf(path, value, metadata):
    """Describe one restored leaf. The metadata supplies the dtype of scalars."""
    keypath = leaf_records.keypath_record(path)
    if leaf_records.is_empty_node(value):
        return leaf_records.empty_record(keypath, value)
    if isinstance(value, str):
        return leaf_records.string_record(keypath, value)
    if isinstance(value, jax.Array):
        record = leaf_records.array_record(keypath, jax.device_get(value))
        record["restored_sharding"] = leaf_records.sharding_record(value.sharding, value.shape)
        record["restored_type"] = "jax.Array"
        return record
    if isinstance(value, np.ndarray):
        record = leaf_records.array_record(keypath, value)
        record["restored_type"] = "np.ndarray"
        return record
    if isinstance(value, (bool, int, float, np.generic)):
        # Orbax returns Python scalars (value.item()), so the stored dtype
        # comes from the checkpoint metadata: np.float16(0.5) restores as 0.5.
        dtype = getattr(metadata, "dtype", None)
        if dtype is None:
            raise SystemExit(f"no dtype in the metadata of scalar leaf {leaf_records.param_name(keypath)}")
        record = leaf_records.array_record(keypath, np.asarray(value, dtype=dtype))
        record["restored_type"] = type(value).__name__
        return record
    raise SystemExit(
        f"unsupported restored leaf type {type(value).__name__} at {leaf_records.param_name(keypath)}"
    )


def read_pytree(directory, mesh_text):
    """Restore the pytree checkpoint at directory and describe every leaf."""
    # Orbax 0.12.8 finds no item metadata under a relative path.
    directory = os.path.abspath(directory)
    checkpointer = ocp.PyTreeCheckpointer()
    item_metadata = checkpointer.metadata(directory).item_metadata
    if item_metadata is None:
        raise SystemExit(f"Orbax found no pytree metadata (_METADATA) in {directory}")
    metadata_tree = item_metadata.tree
    if mesh_text is None:
        restored = checkpointer.restore(directory)
    else:
        item, restore_args = build_restore_target(metadata_tree, parse_mesh(mesh_text))
        restored = checkpointer.restore(
            directory, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
        )

    metadata_by_path = {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(metadata_tree, is_leaf=_is_tree_leaf)[0]
    }
    leaves = []
    for path, value in jax.tree_util.tree_flatten_with_path(restored, is_leaf=_is_tree_leaf)[0]:
        leaves.append(describe_leaf(path, value, metadata_by_path.get(jax.tree_util.keystr(path))))
    return leaves


def newest_step_directory(root):
    """Find the newest finalized step under a CheckpointManager root with Orbax.

    Uses Orbax's standard step names (the decimal step number, no prefix),
    which is what CheckpointManager writes unless step_prefix or
    step_format_fixed_length is set.
    """
    name_format = ocp.path.step.standard_name_format()
    steps = [metadata.step for metadata in name_format.find_all(root)]
    if not steps:
        raise SystemExit(f"no finalized step found under CheckpointManager root {root}")
    newest = max(steps)
    return newest, str(name_format.find_step(root, newest).path)


def read_raw_ocdbt(directory):
    """List every key of the OCDBT database at directory with its value's digest."""
    spec = {"driver": "ocdbt", "base": f"file://{os.path.abspath(directory)}"}
    kvstore = ts.KvStore.open(spec).result()
    keys = []
    for key in sorted(kvstore.list().result()):
        try:
            text_key = key.decode("utf-8")
        except UnicodeDecodeError:
            raise SystemExit(f"OCDBT key {key!r} in {directory} is not UTF-8, so the JSON output cannot represent it")
        value = kvstore.read(key).result().value
        keys.append(
            {
                "key": text_key,
                "nbytes": len(value),
                "sha256": hashlib.sha256(value).hexdigest(),
            }
        )
    return keys


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt_dir", help="checkpoint item directory (or manager root, or OCDBT directory)")
    parser.add_argument(
        "--mesh",
        help="restore array leaves onto a mesh of the simulated CPU devices: sizes joined by 'x' "
        "with axes named x, y, z (such as 4x2, 8 or 1)",
    )
    parser.add_argument(
        "--manager-item",
        metavar="NAME",
        help="treat CKPT_DIR as a CheckpointManager root and read item NAME of its newest step",
    )
    parser.add_argument(
        "--raw-ocdbt",
        action="store_true",
        help="read CKPT_DIR as a plain TensorStore OCDBT key-value store, not as an Orbax checkpoint",
    )
    args = parser.parse_args()

    if not os.path.isdir(args.ckpt_dir):
        raise SystemExit(f"checkpoint directory not found: {args.ckpt_dir}")
    document = {"checkpoint": os.path.abspath(args.ckpt_dir), "reader": leaf_records.package_versions()}

    if args.raw_ocdbt:
        if args.mesh or args.manager_item:
            raise SystemExit("--raw-ocdbt cannot be combined with --mesh or --manager-item")
        document["keys"] = read_raw_ocdbt(args.ckpt_dir)
    else:
        directory = args.ckpt_dir
        if args.manager_item:
            step, step_dir = newest_step_directory(directory)
            document["step"] = step
            document["item"] = args.manager_item
            directory = os.path.join(step_dir, args.manager_item)
        document["mesh"] = args.mesh
        document["leaves"] = read_pytree(directory, args.mesh)

    json.dump(document, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
