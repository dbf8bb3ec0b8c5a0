"""Compare two leaf documents in the expected_values.json schema.

ACTUAL is usually the output of orbax_read.py and EXPECTED a fixture's
expected_values.json. Leaves are matched by keypath (keys and key types).
For each leaf the script compares kind, param_name, dtype, shape and sha256,
python_type for empty nodes, and the text of string leaves. Documents with
a "keys" list (raw OCDBT databases) are matched by key and compare nbytes
and sha256. The "values" lists are not compared, because sha256 already
covers the same bytes.

When the expected leaves carry "step" and "item" (a CheckpointManager
fixture such as d_manager), only the leaves of the step and item named in
ACTUAL are expected. Pass --step and --item when ACTUAL lacks them.

Exit status: 0 when the documents match, 1 on any mismatch (listed on
stdout), 2 on unreadable input.
"""

import argparse
import json
import sys

LEAF_FIELDS = ("kind", "param_name", "dtype", "shape", "sha256", "python_type", "value")
KEY_FIELDS = ("nbytes", "sha256")


def display_name(path):
    return "stdin" if path == "-" else path


def load_document(path):
    """Read one JSON document ("-" is stdin), exiting with status 2 when it is unusable."""
    try:
        if path == "-":
            document = json.load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as file:
                document = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        print(f"cannot read {display_name(path)}: {error}", file=sys.stderr)
        sys.exit(2)
    if not isinstance(document, dict) or not ("leaves" in document or "keys" in document):
        print(f"invalid document {display_name(path)}: expected an object with a 'leaves' or 'keys' list", file=sys.stderr)
        sys.exit(2)
    return document


def keypath_id(leaf):
    """Identify a leaf by its keys and key types, e.g. params(dict).0(sequence)."""
    return "/".join(f"{entry['key']}({entry['key_type']})" for entry in leaf["keypath"])


def select_step_leaves(expected_leaves, actual, step, item):
    """Keep the expected leaves of one manager step and item, if they are tagged."""
    if not any("step" in leaf for leaf in expected_leaves):
        return expected_leaves
    step = step if step is not None else actual.get("step")
    item = item if item is not None else actual.get("item")
    if step is None or item is None:
        print(
            "the expected leaves belong to several CheckpointManager steps: pass --step and --item, "
            "or read the manager root with orbax_read.py --manager-item",
            file=sys.stderr,
        )
        sys.exit(2)
    return [leaf for leaf in expected_leaves if leaf.get("step") == step and leaf.get("item") == item]


def index_by(records, identify, label, source):
    """Map each record to its identity, exiting with status 2 on duplicates."""
    index = {}
    for record in records:
        identity = identify(record)
        if identity in index:
            print(f"duplicate {label} {identity} in {source}", file=sys.stderr)
            sys.exit(2)
        index[identity] = record
    return index


def diff_records(actual_index, expected_index, fields, label):
    """List the differences between two indexed record sets as text lines."""
    problems = []
    for identity in expected_index:
        if identity not in actual_index:
            problems.append(f"missing {label} {identity}")
    for identity in actual_index:
        if identity not in expected_index:
            problems.append(f"unexpected {label} {identity}")
    for identity, expected in expected_index.items():
        actual = actual_index.get(identity)
        if actual is None:
            continue
        for field in fields:
            if field not in expected:
                continue
            if field not in actual:
                problems.append(f"{label} {identity}: {field} missing, expected {expected[field]!r}")
            elif actual[field] != expected[field]:
                problems.append(
                    f"{label} {identity}: {field} is {actual[field]!r}, expected {expected[field]!r}"
                )
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("actual", help="JSON document to check, such as orbax_read.py output; - reads stdin")
    parser.add_argument("expected", help="reference document, such as a fixture's expected_values.json")
    parser.add_argument("--step", type=int, help="manager step whose expected leaves apply")
    parser.add_argument("--item", help="manager item whose expected leaves apply")
    args = parser.parse_args()

    actual_name = display_name(args.actual)
    actual = load_document(args.actual)
    expected = load_document(args.expected)

    if "keys" in expected or "keys" in actual:
        if "keys" not in expected or "keys" not in actual:
            print("one document lists OCDBT keys and the other lists pytree leaves", file=sys.stderr)
            sys.exit(2)
        label = "key"
        actual_index = index_by(actual["keys"], lambda record: record["key"], label, actual_name)
        expected_index = index_by(expected["keys"], lambda record: record["key"], label, args.expected)
        problems = diff_records(actual_index, expected_index, KEY_FIELDS, label)
    else:
        label = "leaf"
        expected_leaves = select_step_leaves(expected["leaves"], actual, args.step, args.item)
        actual_index = index_by(actual["leaves"], keypath_id, label, actual_name)
        expected_index = index_by(expected_leaves, keypath_id, label, args.expected)
        problems = diff_records(actual_index, expected_index, LEAF_FIELDS, label)

    if problems:
        print(f"{len(problems)} mismatches between {actual_name} and {args.expected}:")
        for problem in problems:
            print(f"  {problem}")
        sys.exit(1)
    plural = "leaves" if label == "leaf" else "keys"
    print(f"match: {len(expected_index)} {plural} in {actual_name} equal {args.expected}")


if __name__ == "__main__":
    main()
