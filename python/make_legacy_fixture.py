"""Write a legacy msgpack `checkpoint` file with Orbax's own serializer.

Older Flax and Orbax versions saved a whole pytree as one msgpack file
named `checkpoint`. Orbax 0.12 still reads it but never writes it, so this
script calls `orbax.checkpoint.msgpack_utils.msgpack_serialize` directly.

Usage: make_legacy_fixture.py OUT_DIR
Writes OUT_DIR/ckpt/checkpoint and OUT_DIR/expected_values.json.
"""

import json
import os
import sys

import jax
import ml_dtypes
import numpy as np
from orbax.checkpoint import msgpack_utils

import leaf_records


def legacy_tree():
    """Return a tree with every kind of value the legacy format stores."""
    return {
        "params": {
            "kernel": np.arange(1, 13, dtype=np.float32).reshape(3, 4),
            "bias": np.arange(1, 5, dtype=np.float32).astype(ml_dtypes.bfloat16),
        },
        "opt": (np.arange(1, 6, dtype=np.int64), [np.float16(0.5), 7]),
        "step": 1234,
        "lr": 0.125,
        "done": True,
        "name": "héllo ✓",
        "phase": np.complex64(1.5 - 2j),
        "gain": complex(0.25, -4.0),
    }


def records_of(tree):
    """Build expected leaf records, as ckpt reads the file back."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    records = []
    for path, value in leaves:
        keypath = leaf_records.keypath_record(path)
        if isinstance(value, str):
            records.append(leaf_records.string_record(keypath, value))
        elif isinstance(value, complex):
            # Python complex numbers come back as 0-d complex128 arrays.
            records.append(leaf_records.array_record(keypath, np.asarray(value, dtype=np.complex128)))
        elif isinstance(value, np.generic) and value.dtype.kind == "c":
            # NumPy complex scalars keep their dtype as 0-d arrays.
            records.append(leaf_records.array_record(keypath, np.asarray(value)))
        elif isinstance(value, np.generic):
            # NumPy scalars come back as Python scalars: int64, float64 or bool.
            records.append(leaf_records.array_record(keypath, np.asarray(value.item())))
        else:
            records.append(leaf_records.array_record(keypath, np.asarray(value)))
    return records


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "ckpt"), exist_ok=True)
    tree = legacy_tree()
    with open(os.path.join(out, "ckpt", "checkpoint"), "wb") as file:
        file.write(msgpack_utils.msgpack_serialize(tree))
    document = {
        "fixture": os.path.basename(os.path.normpath(out)),
        "checkpoint_dir": "ckpt",
        "generator": "orbax.checkpoint.msgpack_utils.msgpack_serialize",
        "versions": leaf_records.package_versions(),
        "notes": {
            "format": "legacy msgpack aggregate file, read-only in Orbax 0.12",
            "scalars": "NumPy scalars are listed as the Python scalar Orbax restores (int64, float64, bool); NumPy complex scalars keep their dtype and Python complex is complex128",
        },
        "leaves": records_of(tree),
    }
    with open(os.path.join(out, "expected_values.json"), "w", encoding="utf-8") as file:
        json.dump(document, file, indent=1, ensure_ascii=False)
        file.write("\n")


if __name__ == "__main__":
    main()
