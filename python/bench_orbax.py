"""Time Python Orbax saving and restoring a model-like tree for `cargo xtask bench`.

The tree has the layout that xtask/src/bench_phase.rs restores. It starts
with an f32 embedding [8192, 1024]. Each layer has an f32 attention qkv
[1024, 3072] sharded on both mesh axes, a bf16 attention out [1024, 1024]
sharded by rows, an f32 mlp up [1024, 4096] sharded by columns, a bf16 mlp
down [4096, 1024] sharded by rows and two replicated f32 norms [1024]. The
tree also has an int step and a float learning rate. Values are normal with
standard deviation 0.02, like initialized weights, so they are non-zero and
not trivially compressible.
The arrays live on a 4x2 mesh of 8 simulated CPU devices.

Modes:
  save     save the tree `--runs` times after one warm-up save into
           OUT/orbax-default (or OUT/orbax-raw with --no-compression), and
           keep the last checkpoint there.
  restore  restore that checkpoint onto the same 4x2 sharding `--runs`
           times after one warm-up restore.

Prints one JSON object: mode, compression, bytes (array bytes), seconds
(one time.perf_counter duration per timed run), rss_before (VmRSS in bytes
with the tree live, or before the first restore) and peak_rss (VmHWM in
bytes over the timed and warm-up runs; the peak is reset from
/proc/self/clear_refs before the first run when the kernel allows it).
"""

import argparse
import json
import os
import shutil
import sys
import time

DEVICE_COUNT = 8
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICE_COUNT}"
    )
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

HIDDEN = 1024
VOCAB = 8192
# Bytes of one layer: qkv f32 [h, 3h], out bf16 [h, h], up f32 [h, 4h],
# down bf16 [4h, h] and two f32 norms [h]. bench_phase.rs uses the same formula.
LAYER_BYTES = HIDDEN * HIDDEN * (3 * 4 + 2 + 4 * 4 + 4 * 2) + 2 * HIDDEN * 4
EMBEDDING_BYTES = VOCAB * HIDDEN * 4


def layer_count(size):
    """Return how many layers fit in size bytes next to the embedding, at least one."""
    return max((size - EMBEDDING_BYTES) // LAYER_BYTES, 1)


def leaf_specs(size):
    """Return (path, shape, dtype, partition spec) of every array leaf, as nested keys."""
    h = HIDDEN
    specs = [(("params", "embedding"), (VOCAB, h), np.float32, P("x", None))]
    for layer in range(layer_count(size)):
        prefix = ("params", "layers", layer)
        specs += [
            (prefix + ("attention", "qkv"), (h, 3 * h), np.float32, P("x", "y")),
            (prefix + ("attention", "out"), (h, h), ml_dtypes.bfloat16, P("x", None)),
            (prefix + ("mlp", "up"), (h, 4 * h), np.float32, P(None, "y")),
            (prefix + ("mlp", "down"), (4 * h, h), ml_dtypes.bfloat16, P("x", None)),
            (prefix + ("norm1",), (h,), np.float32, P()),
            (prefix + ("norm2",), (h,), np.float32, P()),
        ]
    return specs


def insert(tree, path, value):
    """Store value at path in a tree of dicts, where an int key indexes the layers list."""
    node = tree
    for key, next_key in zip(path[:-1], path[1:]):
        if isinstance(next_key, int):
            node = node.setdefault(key, [])
        elif isinstance(key, int):
            while len(node) <= key:
                node.append({})
            node = node[key]
        else:
            node = node.setdefault(key, {})
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def make_mesh():
    grid = np.array(jax.devices()[:DEVICE_COUNT], dtype=object).reshape(4, 2)
    return jax.sharding.Mesh(grid, ("x", "y"))


def build_tree(size, mesh):
    """Return the tree with generated arrays on mesh, and its array bytes."""
    rng = np.random.default_rng(7)
    tree = {}
    total = 0
    for path, shape, dtype, spec in leaf_specs(size):
        values = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)
        total += values.nbytes
        sharding = NamedSharding(mesh, spec)
        array = jax.make_array_from_callback(shape, sharding, lambda index, v=values: v[index])
        insert(tree, path, array)
    tree["step"] = 1000
    tree["learning_rate"] = 3e-4
    return tree, total


def abstract_tree(size, mesh):
    """Return the restore target: ShapeDtypeStructs on mesh, and the scalars."""
    tree = {}
    total = 0
    for path, shape, dtype, spec in leaf_specs(size):
        total += int(np.prod(shape)) * np.dtype(dtype).itemsize
        sharding = NamedSharding(mesh, spec)
        insert(tree, path, jax.ShapeDtypeStruct(shape, dtype, sharding=sharding))
    tree["step"] = 0
    tree["learning_rate"] = 0.0
    return tree, total


def proc_status_bytes(field):
    """Return a kB field of /proc/self/status in bytes, or 0 where it is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss():
    """Reset VmHWM to the current RSS; ignored where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def block_on(tree):
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()


def run_save(args, mesh, path):
    tree, total = build_tree(args.size, mesh)
    block_on(tree)
    checkpointer = ocp.PyTreeCheckpointer(use_compression=not args.no_compression)
    rss_before = proc_status_bytes("VmRSS")
    reset_peak_rss()
    seconds = []
    for run in range(args.runs + 1):
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        checkpointer.save(path, tree)
        elapsed = time.perf_counter() - started
        if run > 0:
            seconds.append(elapsed)
    return total, seconds, rss_before


def run_restore(args, mesh, path):
    target, total = abstract_tree(args.size, mesh)
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    checkpointer = ocp.PyTreeCheckpointer()
    rss_before = proc_status_bytes("VmRSS")
    reset_peak_rss()
    seconds = []
    for run in range(args.runs + 1):
        started = time.perf_counter()
        restored = checkpointer.restore(
            path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args)
        )
        block_on(restored)
        elapsed = time.perf_counter() - started
        del restored
        if run > 0:
            seconds.append(elapsed)
    return total, seconds, rss_before


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["save", "restore"])
    parser.add_argument("out", help="directory that contains the checkpoints")
    parser.add_argument("--size", type=int, default=1 << 30, help="approximate array bytes")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up run")
    parser.add_argument("--no-compression", action="store_true", help="save with use_compression=False")
    args = parser.parse_args()
    if len(jax.devices()) < DEVICE_COUNT:
        sys.exit(f"need {DEVICE_COUNT} JAX devices, found {len(jax.devices())}: check XLA_FLAGS")

    mesh = make_mesh()
    name = "orbax-raw" if args.no_compression else "orbax-default"
    path = os.path.join(os.path.abspath(args.out), name)
    if args.mode == "save":
        total, seconds, rss_before = run_save(args, mesh, path)
    else:
        total, seconds, rss_before = run_restore(args, mesh, path)
    result = {
        "mode": args.mode,
        "compression": not args.no_compression,
        "bytes": total,
        "seconds": seconds,
        "rss_before": rss_before,
        "peak_rss": proc_status_bytes("VmHWM"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
