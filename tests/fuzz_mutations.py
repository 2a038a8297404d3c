"""Hypothesis strategies that damage a file the way disks, copies, editors and attackers do.

A mutation is a plain tuple, so a failing example prints as something a person can redo by hand:
- bytes: ("flip", position, bit), ("truncate", position), ("insert", position, data), ("delete", position, n);
  positions are taken modulo the file's length;
- structure (JSON, JSON lines, YAML, a safetensors header): the file is parsed, one node (by its number in
  depth-first order, modulo the node count) is changed, and the value written back: ("swap", node, value) puts a
  value of another type there, ("drop", node) removes it from its parent, ("nest", node, depth) wraps it in
  `depth` lists (10^5 makes a parser recurse past Python's limit; it is written as text, since json.dumps
  would recurse too), ("add", node, key, value) adds a key to a mapping.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import strategies as st

POSITION = st.integers(0, 2**31)
ODD = st.sampled_from(["", "0", "-1", "\x00", "é", "../../etc/passwd", "a" * 300, "1e400", "null", "[]"])
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 10**30]),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    ODD,
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-3, 3), ODD), max_size=3),
    st.dictionaries(ODD, st.one_of(st.integers(-3, 3), ODD), max_size=2),
)
BYTE_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), POSITION, st.integers(1, 64)),
)
# Nesting depths: past readback's 64 levels, past Python's recursion limit (1,000 frames), and 10^5. PyYAML
# takes seconds to fail on the last two (its scanner looks ahead at every bracket), so YAML files get the
# first two here; tests/cli/test_user_yaml.py and tests/datasets/test_generic_damage.py feed them 10^5.
DEPTHS = {"json": (70, 1000, 100_000), "jsonl": (70, 1000, 100_000), "safetensors": (70, 1000), "yaml": (70, 300)}


def structure_mutations(fmt: str) -> st.SearchStrategy[tuple]:
    return st.one_of(
        st.tuples(st.just("swap"), POSITION, ODD_VALUES),
        st.tuples(st.just("drop"), POSITION),
        st.tuples(st.just("nest"), POSITION, st.sampled_from(DEPTHS[fmt])),
        st.tuples(st.just("add"), POSITION, ODD, ODD_VALUES),
    )


def mutations(fmt: str | None) -> st.SearchStrategy[list[tuple]]:
    """One to three mutations, of bytes or (for a parseable file, `fmt`) of its structure."""
    kinds = BYTE_MUTATIONS if fmt is None else st.one_of(BYTE_MUTATIONS, structure_mutations(fmt))
    return st.lists(kinds, min_size=1, max_size=3)


def mutate_bytes(data: bytes, m: tuple) -> bytes:
    if not data:
        return data + m[2] if m[0] == "insert" else data
    at = m[1] % len(data)
    if m[0] == "flip":
        return data[:at] + bytes([data[at] ^ (1 << m[2])]) + data[at + 1 :]
    if m[0] == "truncate":
        return data[:at]
    if m[0] == "insert":
        return data[:at] + m[2] + data[at:]
    return data[:at] + data[at + m[2] :]


class _Deep:
    """A value to be written wrapped in `depth` lists (as text: the writers recurse)."""

    def __init__(self, value: Any, depth: int) -> None:
        self.value, self.depth = value, depth


def nodes(value: Any) -> list[tuple[Any, Any]]:
    """(parent, key) of every node below the root, depth first; the root is (None, None)."""
    out: list[tuple[Any, Any]] = [(None, None)]
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k in list(node):
                out.append((node, k))
                stack.append(node[k])
        elif isinstance(node, list):
            for i in range(len(node)):
                out.append((node, i))
                stack.append(node[i])
    return out


def mutate_value(value: Any, m: tuple) -> Any:
    """`value` (parsed, owned by the caller) with one node changed as `m` says -> the new root."""
    found = nodes(value)
    parent, key = found[m[1] % len(found)]
    current = value if parent is None else parent[key]
    if m[0] == "swap":
        new = m[2]
    elif m[0] == "nest":
        new = _Deep(current, m[2])
    elif m[0] == "add":
        if isinstance(current, dict):
            current[m[2]] = m[3]
        return value
    else:  # drop
        if parent is None:
            return None
        del parent[key]
        return value
    if parent is None:
        return new
    parent[key] = new
    return value


def dump_json(value: Any, **kw: Any) -> str:
    """json.dumps, with `_Deep` nodes written as nested brackets."""
    deep: list[_Deep] = []

    def default(o: Any) -> str:
        if isinstance(o, _Deep):
            deep.append(o)
            return f"\x00deep{len(deep) - 1}\x00"
        raise TypeError(type(o).__name__)

    text = json.dumps(value, default=default, **kw)
    for i, d in enumerate(deep):
        inner = dump_json(d.value)
        text = text.replace(json.dumps(f"\x00deep{i}\x00"), "[" * d.depth + inner + "]" * d.depth)
    return text


def dump_yaml(value: Any) -> str:
    """YAML (flow style where nested: JSON is YAML), with `_Deep` nodes as nested brackets."""
    import yaml

    if not _has_deep(value):
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    return dump_json(value)


def _has_deep(value: Any) -> bool:
    return any(isinstance(parent[key] if parent is not None else value, _Deep) for parent, key in nodes(value))


def apply(data: bytes, muts: list[tuple], fmt: str | None) -> bytes:
    """The file's bytes after each mutation in turn; structure mutations parse the current bytes as `fmt`
    (json | jsonl | yaml | safetensors) and are skipped when those no longer parse."""
    for m in muts:
        if m[0] in ("flip", "truncate", "insert", "delete"):
            data = mutate_bytes(data, m)
        elif fmt is not None:
            data = _mutate_structure(data, m, fmt)
    return data


def _mutate_structure(data: bytes, m: tuple, fmt: str) -> bytes:
    import yaml

    try:
        if fmt == "safetensors":
            (size,) = struct.unpack("<Q", data[:8])
            header = dump_json(mutate_value(json.loads(data[8 : 8 + size]), m)).encode()
            return struct.pack("<Q", len(header)) + header + data[8 + size :]
        if fmt == "jsonl":
            lines = data.decode().splitlines()
            i = m[1] % max(1, len(lines))
            lines[i : i + 1] = [dump_json(mutate_value(json.loads(lines[i]), m))] if lines else []
            return ("\n".join(lines) + "\n").encode()
        if fmt == "json":
            return dump_json(mutate_value(json.loads(data), m), indent=1).encode()
        return dump_yaml(mutate_value(yaml.safe_load(data), m)).encode()
    except (ValueError, UnicodeDecodeError, RecursionError, struct.error, yaml.YAMLError):
        return data  # an earlier byte mutation left nothing to parse: keep those bytes
