"""Generate the Orbax fixtures that testdata/orbax lacks, with real Orbax.

Usage: make_fixtures.py OUT_DIR [--only NAME ...] [--force]

Each fixture becomes OUT_DIR/<name>/ckpt/ (the checkpoint as written) and
OUT_DIR/<name>/expected_values.json (the schema of leaf_records.py, computed
from the saved source values, not from a restore). After writing a fixture
the script restores it with orbax_read.py and checks the result with
compare_values.py, so a fixture that Orbax cannot read back is an error.

Fixtures:
  h_multiprocess          2 JAX processes (gloo on 127.0.0.1) x 4 CPU devices
  i_indirect_subchunk     SaveArgs(chunk_byte_size=1024), out-of-line values
  l_ocdbt_raw_multilevel  raw TensorStore OCDBT database, B+tree height >= 2
  f_dtypes_zarr3          every dtype with use_zarr3=True
  k_colocated             ArrayHandler(dispatcher=ColocatedPythonDispatcher())

Checkpoint bytes differ between runs (OCDBT uuids, data-file names and
timestamps are random or wall-clock); the values and digests do not.
"""

import argparse
import functools
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

DEVICE_COUNT = 8
DEVICES_PER_PROCESS = 4
PROCESS_COUNT = 2
# Wall-clock limit for one multi-process save or one verification run.
SUBPROCESS_TIMEOUT_SECONDS = 600

# JAX reads these when it is imported. The multi-process workers get a
# 4-device flag from their parent, which this keeps.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICE_COUNT}"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import tensorstore as ts  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import leaf_records  # noqa: E402

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# Source trees and their expected records


def tree_a_values():
    """Return the tree of shipped fixture a_pytree_ocdbt, as numpy and Python values."""
    return {
        "params": {
            "dense": {
                "kernel": np.arange(128, dtype=np.float32).reshape(16, 8),
                "bias": (np.arange(8, dtype=np.float32) * 0.5).astype(ml_dtypes.bfloat16),
            }
        },
        "step": 7,
        "lr": 0.125,
        "name": "hello",
        "opt": [
            np.arange(5, dtype=np.int32),
            (np.arange(3, dtype=np.float32) + 0.5, np.arange(4, dtype=np.int64).reshape(2, 2) - 2),
        ],
    }


# Partition specs of the leaves that fixture a saves as jax.Array on a 4x2 mesh.
TREE_A_SPECS = {"params.dense.kernel": P("x", "y"), "params.dense.bias": P()}


def _param_name_of(path):
    return leaf_records.param_name(leaf_records.keypath_record(path))


def _is_tree_leaf(value):
    return leaf_records.is_empty_node(value) or not isinstance(value, (dict, list, tuple))


def place_on_mesh(values, specs, mesh):
    """Turn the leaves named in specs into jax.Arrays on mesh and keep the others unchanged."""

    def place(path, value):
        spec = specs.get(_param_name_of(path))
        if spec is None:
            return value
        sharding = NamedSharding(mesh, spec)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map_with_path(place, values, is_leaf=_is_tree_leaf)


def source_type_of(value):
    """Name the type a source leaf had, like the shipped fixtures do."""
    if isinstance(value, np.ndarray):
        return "np.ndarray"
    if isinstance(value, np.generic):
        return value.dtype.name
    return type(value).__name__


def describe_source(values, specs, mesh, extra_by_name=None):
    """Build the expected leaf records from the saved values.

    specs names the leaves saved as jax.Array on mesh; extra_by_name adds
    fields to the record of a given param name.
    """
    records = []
    for path, value in jax.tree_util.tree_flatten_with_path(values, is_leaf=_is_tree_leaf)[0]:
        keypath = leaf_records.keypath_record(path)
        name = leaf_records.param_name(keypath)
        if leaf_records.is_empty_node(value):
            record = leaf_records.empty_record(keypath, value)
        elif isinstance(value, str):
            record = leaf_records.string_record(keypath, value)
        elif name in specs:
            sharding = NamedSharding(mesh, specs[name])
            record = _with_source_fields(
                leaf_records.array_record(keypath, value),
                source_type="jax.Array",
                source_sharding=leaf_records.sharding_record(sharding, value.shape),
            )
        else:
            record = _with_source_fields(
                leaf_records.array_record(keypath, np.asarray(value)), source_type=source_type_of(value)
            )
            if not isinstance(value, np.ndarray):
                record["python_value"] = value.item() if isinstance(value, np.generic) else value
        record.update((extra_by_name or {}).get(name, {}))
        records.append(record)
    return records


def _with_source_fields(record, **fields):
    """Insert fields after keypath and param_name, in the shipped fixtures' order."""
    head = {"keypath": record.pop("keypath"), "param_name": record.pop("param_name"), **fields}
    return {**head, **record}


def make_mesh(shape):
    """Build a mesh with axes x, y over the first devices of jax.devices(), row-major."""
    devices = jax.devices()
    count = int(np.prod(shape))
    grid = np.array(devices[:count], dtype=object).reshape(shape)
    return jax.sharding.Mesh(grid, ("x", "y")[: len(shape)])


# ---------------------------------------------------------------------------
# Writing and checking fixture directories


def fixture_document(name, notes, leaves=None, keys=None):
    """Assemble an expected_values.json document with the shipped header fields."""
    versions = leaf_records.package_versions()
    document = {
        "fixture": name,
        "checkpoint_dir": "ckpt",
        "generator": (
            f"python/make_fixtures.py with orbax-checkpoint {versions['orbax-checkpoint']}, "
            f"jax {versions['jax']} on CPU, tensorstore {versions['tensorstore']}"
        ),
        "orbax_checkpoint_version": versions["orbax-checkpoint"],
        "jax_version": versions["jax"],
        "tensorstore_version": versions["tensorstore"],
        "checksum": leaf_records.CHECKSUM_DESCRIPTION,
        "notes": notes,
    }
    if leaves is not None:
        document["leaves"] = leaves
    if keys is not None:
        document["keys"] = keys
    return document


def write_json(path, document):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=1, ensure_ascii=False)
        file.write("\n")


def run_checked(command, program, stdin_text=None):
    """Run a subprocess and raise with its output when it fails or times out."""
    try:
        result = subprocess.run(
            command, input=stdin_text, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{program} timed out after {SUBPROCESS_TIMEOUT_SECONDS} s: {command}") from error
    if result.returncode != 0:
        raise RuntimeError(
            f"{program} failed with exit status {result.returncode}: {command}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{_tail(result.stderr)}"
        )
    return result.stdout


def _tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def verify_fixture(fixture_dir, read_options):
    """Restore the fixture with orbax_read.py and compare it to its expected values.

    Each entry of read_options is one extra argument list for orbax_read.py,
    such as [] (no target tree) or ["--mesh", "4x2"].
    """
    checked = []
    expected = os.path.join(fixture_dir, "expected_values.json")
    for options in read_options:
        command = [sys.executable, os.path.join(SCRIPT_DIR, "orbax_read.py"),
                   os.path.join(fixture_dir, "ckpt"), *options]
        actual_json = run_checked(command, "orbax_read.py")
        run_checked([sys.executable, os.path.join(SCRIPT_DIR, "compare_values.py"), "-", expected],
                    "compare_values.py", stdin_text=actual_json)
        checked.append(" ".join(["orbax_read.py ckpt", *options]))
    return checked


def record_verification(fixture_dir, checked):
    path = os.path.join(fixture_dir, "expected_values.json")
    with open(path, encoding="utf-8") as file:
        document = json.load(file)
    document["verification"] = {"matches_after_generation": checked}
    write_json(path, document)


def ocdbt_summary(directory):
    """Summarize the latest version of an OCDBT database with tensorstore.ocdbt.dump."""
    base = ts.KvStore.open(f"file://{os.path.abspath(directory)}/").result()
    manifest = ts.ocdbt.dump(base).result()
    latest = manifest["versions"][-1]
    counts = {"inline_values": 0, "indirect_values": 0, "btree_nodes": 0}
    indirect_files = set()

    def walk(location):
        node = ts.ocdbt.dump(base, location).result()
        counts["btree_nodes"] += 1
        for entry in node["entries"]:
            if node["height"] > 0:
                walk(entry["location"])
            elif "inline_value" in entry:
                counts["inline_values"] += 1
            else:
                counts["indirect_values"] += 1
                indirect_files.add(_data_file_of(entry["indirect_value"]))

    if "location" in latest["root"]:
        walk(latest["root"]["location"])
    return {
        "generation_number": latest["generation_number"],
        "root_height": latest["root_height"],
        "inline_versions": len(manifest["versions"]),
        "version_tree_nodes": len(manifest["version_tree_nodes"]),
        "btree_nodes": counts["btree_nodes"],
        "inline_values": counts["inline_values"],
        "indirect_values": counts["indirect_values"],
        "indirect_value_files": len(indirect_files),
        "indirect_value_base_paths": sorted({base_path for base_path, _ in indirect_files}),
        "num_keys": latest["root"]["statistics"]["num_keys"],
    }


def _data_file_of(location):
    """Split a dump location "value:<base path>:<relative path>:<offset>:<length>"."""
    path, _offset, _length = location.split(":", 1)[1].rsplit(":", 2)
    base_path, relative_path = path.split(":", 1)
    return base_path, relative_path


def directory_size(path):
    return sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
    )


# ---------------------------------------------------------------------------
# h_multiprocess


def free_loopback_port():
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tree_h_values():
    values = tree_a_values()
    values["rows"] = np.arange(32 * 64, dtype=np.float32).reshape(32, 64) + 1.0
    return values


TREE_H_SPECS = {**TREE_A_SPECS, "rows": P("x", None)}


def make_h_multiprocess(fixture_dir):
    """Save tree a plus rows from two JAX processes and verify the result."""
    port = free_loopback_port()
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"
    env["JAX_PLATFORMS"] = "cpu"
    # The output goes to files, because a pipe that is not read while waiting
    # would block a worker once it fills.
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(PROCESS_COUNT)]
    workers = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--multiprocess-worker",
             str(process_id), str(port), fixture_dir],
            env=env, stdout=logs[process_id], stderr=subprocess.STDOUT,
        )
        for process_id in range(PROCESS_COUNT)
    ]
    failure = wait_for_workers(workers)
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    if failure:
        details = "\n".join(f"process {index}:\n{_tail(text)}" for index, text in enumerate(outputs))
        raise RuntimeError(f"multi-process save {failure}:\n{details}")

    # Target-less restore needs the saved device ids (0..3 and the second
    # process's ids), which a single 8-device process does not have.
    return verify_fixture(fixture_dir, [["--mesh", "4x2"], ["--mesh", "8"]])


def wait_for_workers(workers):
    """Wait for all workers and return None, or a failure description.

    The first failure or the timeout kills the workers still running, because
    a worker whose peer died would otherwise wait at a barrier.
    """
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_SECONDS
    while True:
        # Poll every worker, so that each returncode is current.
        status = [worker.poll() for worker in workers]
        if all(code is not None for code in status):
            break
        failed = [index for index, code in enumerate(status) if code not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            if failed:
                return f"failed in process {failed[0]} with exit status {workers[failed[0]].returncode}"
            return f"timed out after {SUBPROCESS_TIMEOUT_SECONDS} s"
        time.sleep(0.2)
    for index, worker in enumerate(workers):
        if worker.returncode != 0:
            return f"failed in process {index} with exit status {worker.returncode}"
    return None


def use_loopback_gloo():
    """Make JAX's gloo CPU collectives bind to 127.0.0.1 instead of the host name.

    NOTE: uses private jax 0.10.2 functions (xla_bridge.make_cpu_client with
    a collectives argument, _jax.make_gloo_tcp_collectives). Without it gloo
    resolves the machine's host name, which may be a non-loopback address.
    """
    from jax._src import distributed, xla_bridge
    from jax._src.lib import _jax

    collectives = _jax.make_gloo_tcp_collectives(
        distributed_client=distributed.global_state.client, hostname="127.0.0.1"
    )
    factory = functools.partial(xla_bridge.make_cpu_client, collectives=collectives)
    xla_bridge.register_backend_factory("cpu", factory, priority=0)


def run_multiprocess_worker(process_id, port, fixture_dir):
    """Run one of the two h_multiprocess processes: join, save, and (process 0) describe."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        coordinator_bind_address=f"127.0.0.1:{port}",
        num_processes=PROCESS_COUNT,
        process_id=process_id,
        initialization_timeout=120,
    )
    use_loopback_gloo()

    mesh = make_mesh((4, 2))
    values = tree_h_values()
    tree = place_on_mesh(values, TREE_H_SPECS, mesh)
    ocp.PyTreeCheckpointer().save(os.path.join(fixture_dir, "ckpt"), tree)

    if process_id == 0:
        notes = {
            "api": "ocp.PyTreeCheckpointer().save(path, tree) called by both processes",
            "processes": (
                f"{PROCESS_COUNT} processes x {DEVICES_PER_PROCESS} CPU devices; jax.distributed.initialize "
                "with coordinator and gloo collectives on 127.0.0.1"
            ),
            "mesh": "4x2 (x,y) over jax.devices() in order, row-major",
            "device_ids_by_process": {
                str(index): [d.id for d in jax.devices() if d.process_index == index]
                for index in range(PROCESS_COUNT)
            },
            "tree": "fixture a plus rows f32[32,64] P('x', None)",
            "restore": (
                "the saved _sharding names device ids of both processes, so a target-less restore "
                "in one 8-device process fails; verified with orbax_read.py --mesh"
            ),
        }
        write_json(
            os.path.join(fixture_dir, "expected_values.json"),
            fixture_document("h_multiprocess", notes, describe_source(values, TREE_H_SPECS, mesh)),
        )
    jax.distributed.shutdown()


# ---------------------------------------------------------------------------
# i_indirect_subchunk


def incompressible_floats(count):
    """Return arange-based float32 values whose zstd output stays near full size."""
    return (np.arange(count, dtype=np.float64) * 1.000123 + 0.5).astype(np.float32)


def make_i_indirect_subchunk(fixture_dir):
    """Save sub-chunked arrays and values too large to stay inline in OCDBT nodes."""
    mesh = make_mesh((4, 2))
    values = {
        "rows": incompressible_floats(64 * 64).reshape(64, 64),
        "rows_subchunked": incompressible_floats(64 * 64).reshape(64, 64) + 1.0,
        "replicated_subchunked": incompressible_floats(64 * 64).reshape(64, 64) + 2.0,
        # Multiplicative hashing of arange keeps the bytes hard to compress.
        "numpy_u32": (np.arange(32 * 32, dtype=np.uint64) * 2654435761 % 2**32).astype(np.uint32).reshape(32, 32),
    }
    specs = {"rows": P("x", None), "rows_subchunked": P("x", None), "replicated_subchunked": P()}
    chunked = ocp.SaveArgs(chunk_byte_size=1024)
    save_args = {
        "rows": ocp.SaveArgs(),
        "rows_subchunked": chunked,
        "replicated_subchunked": chunked,
        "numpy_u32": ocp.SaveArgs(),
    }
    tree = place_on_mesh(values, specs, mesh)
    ckpt = os.path.join(fixture_dir, "ckpt")
    ocp.PyTreeCheckpointer().save(ckpt, args=ocp.args.PyTreeSave(tree, save_args=save_args))

    summary = ocdbt_summary(ckpt)
    if summary["indirect_values"] == 0:
        raise RuntimeError(f"i_indirect_subchunk has no out-of-line value: {summary}")
    notes = {
        "api": "ocp.PyTreeCheckpointer().save(path, args=PyTreeSave(tree, save_args=...))",
        "mesh": "4x2 (x,y) over devices 0..7 row-major",
        "save_args": "SaveArgs(chunk_byte_size=1024) for rows_subchunked and replicated_subchunked",
        "chunks": _zarr_chunk_shapes(ckpt, values),
        "root_ocdbt": summary,
        "values": "float32 arange*1.000123+0.5 (+1, +2); numpy_u32 = arange*2654435761 mod 2^32. "
        "zstd leaves the 2048-byte rows chunks and the 4096-byte numpy_u32 chunk above the "
        "1024-byte inline limit, so they are stored out-of-line in ocdbt.process_0/d/; the "
        "1024-byte sub-chunks compress below it and stay inline",
    }
    write_json(
        os.path.join(fixture_dir, "expected_values.json"),
        fixture_document("i_indirect_subchunk", notes, describe_source(values, specs, mesh)),
    )
    return verify_fixture(fixture_dir, [[], ["--mesh", "8"]])


def _zarr_chunk_shapes(ckpt, values):
    """Read each array's zarr chunk shape back from the root OCDBT database."""
    kvstore = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{os.path.abspath(ckpt)}"}).result()
    shapes = {}
    for name in values:
        metadata = json.loads(kvstore.read(f"{name}/.zarray").result().value)
        shapes[name] = {"shape": metadata["shape"], "chunks": metadata["chunks"]}
    return shapes


# ---------------------------------------------------------------------------
# l_ocdbt_raw_multilevel

# Small limits so that about 200 keys need several B+tree levels and 41 commits
# need version-tree nodes.
RAW_OCDBT_CONFIG = {
    "max_decoded_node_bytes": 512,
    "max_inline_value_bytes": 32,
    "version_tree_arity_log2": 1,
}
RAW_OCDBT_TRANSACTIONS = 41


def raw_ocdbt_value(generation, index):
    """Return the bytes stored for key index in a generation (lengths 1..96)."""
    length = 1 + (generation * 7 + index * 13) % 96
    return bytes((generation * 31 + index * 17 + offset) % 251 + 1 for offset in range(length))


def make_l_ocdbt_raw_multilevel(fixture_dir):
    """Write a raw OCDBT database in many transactions, with overwrites and deletes."""
    ckpt = os.path.join(fixture_dir, "ckpt")
    os.makedirs(ckpt)
    spec = {"driver": "ocdbt", "base": f"file://{ckpt}", "config": RAW_OCDBT_CONFIG}
    kvstore = ts.KvStore.open(spec).result()

    expected = {}
    for generation in range(RAW_OCDBT_TRANSACTIONS):
        transaction = ts.Transaction(atomic=True)
        view = kvstore.with_transaction(transaction)
        # Five new keys per transaction, spread over several prefixes.
        for index in range(5):
            key = f"group{(generation + index) % 4}/item{generation:03d}_{index}"
            expected[key] = raw_ocdbt_value(generation, index)
            view.write(key, expected[key]).result()
        # Overwrite a key of an earlier transaction, so only the latest value counts.
        if generation >= 3:
            key = f"group{(generation - 3) % 4}/item{generation - 3:03d}_0"
            expected[key] = raw_ocdbt_value(generation, 100)
            view.write(key, expected[key]).result()
        # Delete a key every fifth transaction.
        if generation >= 5 and generation % 5 == 0:
            key = f"group{(generation - 5 + 1) % 4}/item{generation - 5:03d}_1"
            expected.pop(key)
            view.delete_range(ts.KvStore.KeyRange(key, key + "\0")).result()
        transaction.commit_async().result()

    summary = ocdbt_summary(ckpt)
    if summary["root_height"] < 2 or summary["version_tree_nodes"] == 0:
        raise RuntimeError(f"l_ocdbt_raw_multilevel is too shallow: {summary}")
    keys = [
        {"key": key, "nbytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
        for key, value in sorted(expected.items())
    ]
    notes = {
        "api": "tensorstore.KvStore.open({'driver': 'ocdbt', 'base': 'file://<ckpt>', 'config': ...}); "
        f"{RAW_OCDBT_TRANSACTIONS} atomic transactions",
        "config": RAW_OCDBT_CONFIG,
        "writes": "5 new keys per transaction; from transaction 3 on, one earlier key is overwritten; "
        "every fifth transaction from 5 on deletes one earlier key",
        "schema": "not an Orbax checkpoint: 'keys' replaces 'leaves' and lists every key of the latest "
        "version in byte order with nbytes and sha256 of its value; keys are ASCII",
        "latest_version": summary,
    }
    write_json(
        os.path.join(fixture_dir, "expected_values.json"),
        fixture_document("l_ocdbt_raw_multilevel", notes, keys=keys),
    )
    return verify_fixture(fixture_dir, [["--raw-ocdbt"]])


# ---------------------------------------------------------------------------
# f_dtypes_zarr3

# Values follow the shipped f_dtypes_zarr2 fixture, so both have the same
# digests: a = arange(24).reshape(4, 6), and jax leaves are a[:, :4].
DTYPE_RECIPES = {
    "float32": lambda a: ((a - 8) * 0.25).astype(np.float32),
    "float64": lambda a: ((a - 8) * 0.125).astype(np.float64),
    "float16": lambda a: ((a - 6) * 0.5).astype(np.float16),
    "bfloat16": lambda a: ((a - 6) * 0.5).astype(ml_dtypes.bfloat16),
    "float8_e4m3fn": lambda a: ((a - 8) * 0.25).astype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": lambda a: ((a - 8) * 0.25).astype(ml_dtypes.float8_e5m2),
    "int8": lambda a: (a - 12).astype(np.int8),
    "uint8": lambda a: (a * 10).astype(np.uint8),
    "int16": lambda a: ((a - 12) * 1000).astype(np.int16),
    "uint16": lambda a: (a * 2000).astype(np.uint16),
    "int32": lambda a: ((a - 12) * 100000).astype(np.int32),
    "uint32": lambda a: (a * 100000000).astype(np.uint32),
    "int64": lambda a: ((a - 12) * 10**12).astype(np.int64),
    "uint64": lambda a: (a.astype(np.uint64) * 10**17).astype(np.uint64),
    "bool": lambda a: a % 3 == 0,
    "complex64": lambda a: (a + 1j * (a - 5)).astype(np.complex64),
    "complex128": lambda a: (a - 1j * a).astype(np.complex128),
    "int4": lambda a: (a % 16 - 8).astype(ml_dtypes.int4),
}
# JAX without x64 would silently narrow these, so there are no jax leaves of them.
X64_DTYPES = ("float64", "int64", "uint64", "complex128")


def make_f_dtypes_zarr3(fixture_dir):
    """Save one numpy and one sharded jax leaf per dtype with zarr v3."""
    mesh = make_mesh((2, 4))
    base = np.arange(24, dtype=np.int64).reshape(4, 6)
    values = {"jax": {}, "np": {}}
    specs = {}
    for dtype, recipe in DTYPE_RECIPES.items():
        array = recipe(base)
        values["np"][dtype] = array
        if dtype not in X64_DTYPES:
            values["jax"][dtype] = np.ascontiguousarray(array[:, :4])
            specs[f"jax.{dtype}"] = P("x", "y")
    tree = place_on_mesh(values, specs, mesh)
    ckpt = os.path.join(fixture_dir, "ckpt")
    ocp.PyTreeCheckpointer(use_zarr3=True).save(ckpt, tree)

    kvstore = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{os.path.abspath(ckpt)}"}).result()
    stored = {}
    for group, leaves in values.items():
        for dtype in leaves:
            name = f"{group}.{dtype}"
            metadata = json.loads(kvstore.read(f"{name}/zarr.json").result().value)
            stored[name] = {"stored_dtype": metadata["data_type"], "stored_fill_value": metadata["fill_value"]}
    notes = {
        "api": "ocp.PyTreeCheckpointer(use_zarr3=True).save(path, tree); np.* leaves are np.ndarray (4,6); "
        "jax.* leaves are (4,4) sharded P(x,y) on a 2x4 mesh",
        "values": "same recipes as f_dtypes_zarr2, so the digests match that fixture",
        "unsupported_or_failed": {
            f"jax:{dtype}": "skipped: JAX x64 disabled, jnp would silently downcast this dtype"
            for dtype in X64_DTYPES
        },
    }
    write_json(
        os.path.join(fixture_dir, "expected_values.json"),
        fixture_document("f_dtypes_zarr3", notes, describe_source(values, specs, mesh, stored)),
    )
    return verify_fixture(fixture_dir, [[], ["--mesh", "4x2"]])


# ---------------------------------------------------------------------------
# k_colocated


def colocated_registry():
    """Build a type handler registry whose jax.Array handler uses ColocatedPythonDispatcher.

    Returns the registry and the dispatcher, which records the names of the
    functions it dispatched.

    NOTE: ColocatedPythonDispatcher and the array metadata Store are not in
    the public orbax.checkpoint API of 0.12.8; the imports follow
    _src/serialization/pathways_handler_registry.py.
    """
    from orbax.checkpoint._src.metadata import array_metadata_store
    from orbax.checkpoint._src.multihost import dispatchers

    class RecordingDispatcher(dispatchers.ColocatedPythonDispatcher):
        def __init__(self):
            super().__init__()
            self.dispatched = []

        def dispatch(self, func, **kwargs):
            self.dispatched.append(getattr(func, "__name__", repr(func)))
            return super().dispatch(func, **kwargs)

    dispatcher = RecordingDispatcher()
    handlers = ocp.type_handlers
    array_handler = handlers.ArrayHandler(
        dispatcher=dispatcher,
        array_metadata_store=array_metadata_store.Store(),
    )
    registry = handlers.create_type_handler_registry(
        (int, handlers.ScalarHandler()),
        (float, handlers.ScalarHandler()),
        (bytes, handlers.ScalarHandler()),
        (np.number, handlers.ScalarHandler()),
        (np.ndarray, handlers.NumpyHandler()),
        (jax.Array, array_handler),
        (str, handlers.StringHandler()),
    )
    return registry, dispatcher


def make_k_colocated(fixture_dir):
    """Save tree a through the colocated Python dispatcher and cross-check both handlers."""
    mesh = make_mesh((4, 2))
    values = tree_a_values()
    tree = place_on_mesh(values, TREE_A_SPECS, mesh)
    ckpt = os.path.join(fixture_dir, "ckpt")
    registry, dispatcher = colocated_registry()
    handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry)
    with ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(ckpt, args=ocp.args.PyTreeSave(tree))
        saved_through = list(dispatcher.dispatched)
        # The colocated handler must also restore what it wrote.
        restored = checkpointer.restore(ckpt, args=ocp.args.PyTreeRestore(item=tree))
    if not saved_through:
        raise RuntimeError("the colocated dispatcher was not called during the save")
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]:
        if isinstance(leaf, jax.Array):
            original = np.asarray(jax.device_get(_lookup(tree, path)))
            if not np.array_equal(np.asarray(jax.device_get(leaf)), original):
                raise RuntimeError(f"colocated restore of {jax.tree_util.keystr(path)} differs from the saved value")

    notes = {
        "api": "PyTreeCheckpointHandler(type_handler_registry=...) with "
        "ArrayHandler(dispatcher=ColocatedPythonDispatcher(), array_metadata_store=Store())",
        "mesh": "4x2 (x,y) over devices 0..7 row-major",
        "tree": "fixture a",
        "dispatched_functions": {"save": saved_through, "restore": dispatcher.dispatched[len(saved_through):]},
        "cpu_behaviour": "on CPU, jax colocated_python runs the dispatched function in the same process",
        "cross_check": "restored with the colocated handler (values equal) and with the default handler "
        "(orbax_read.py)",
    }
    write_json(
        os.path.join(fixture_dir, "expected_values.json"),
        fixture_document("k_colocated", notes, describe_source(values, TREE_A_SPECS, mesh)),
    )
    return verify_fixture(fixture_dir, [[], ["--mesh", "8"]])


def _lookup(tree, path):
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            tree = tree[entry.key]
        else:
            tree = tree[entry.idx]
    return tree


# ---------------------------------------------------------------------------
# Command line

FIXTURES = {
    "h_multiprocess": make_h_multiprocess,
    "i_indirect_subchunk": make_i_indirect_subchunk,
    "l_ocdbt_raw_multilevel": make_l_ocdbt_raw_multilevel,
    "f_dtypes_zarr3": make_f_dtypes_zarr3,
    "k_colocated": make_k_colocated,
}


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--multiprocess-worker":
        run_multiprocess_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="directory that receives one subdirectory per fixture")
    parser.add_argument("--only", nargs="+", choices=sorted(FIXTURES), help="generate only these fixtures")
    parser.add_argument("--force", action="store_true", help="replace fixture directories that already exist")
    args = parser.parse_args()

    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    names = args.only or list(FIXTURES)
    for name in names:
        fixture_dir = os.path.join(out_dir, name)
        if os.path.exists(fixture_dir):
            if not args.force:
                raise SystemExit(f"fixture directory already exists: {fixture_dir}. Remove it or pass --force.")
            shutil.rmtree(fixture_dir)
        os.makedirs(fixture_dir)
        print(f"{name}: writing {fixture_dir}", flush=True)
        checked = FIXTURES[name](fixture_dir)
        record_verification(fixture_dir, checked)
        print(f"{name}: {directory_size(os.path.join(fixture_dir, 'ckpt'))} bytes, verified with "
              f"{'; '.join(checked)}", flush=True)


if __name__ == "__main__":
    main()
