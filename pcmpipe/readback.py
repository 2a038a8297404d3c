"""Reading back the JSON and YAML files pcmpipe writes or a user hands it: bounded, validated, one line on failure.

Every structured file pcmpipe reads (run configs, exports, index metadata, manifests, dataset specs, settings
YAML) may have been damaged, hand-edited or crafted. Three things go wrong with a plain `json.loads` or
`yaml.safe_load` on such a file, and this module answers each with one `UserError` line naming the file:
- size: a file of gigabytes is refused from its size, before it is read (`max_bytes`);
- shape: 10^5 nested brackets raise RecursionError inside the parser; a YAML alias chain ("billion laughs")
  expands a few hundred bytes into 10^9 nodes; a recursive alias makes a list that contains itself. The parsed
  value's depth, expanded node count and cycles are checked iteratively, sharing work between aliases;
- types: a string where a mapping belongs ends in a KeyError or TypeError deep inside the reader. A pydantic
  model (`model=`) states the format, and a `ValidationError` becomes one line naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pcmpipe.errors import UserError

MAX_DEPTH = 64  # the formats pcmpipe writes nest 6 levels at most; 64 leaves room for users' own metadata
MAX_NODES = 20_000_000  # values after aliases are expanded: a 10^6-row ids.json is 10^6
MAX_BYTES = 1 << 30  # 1 GiB: a manifest of 10^5 shards or an ids file of 10^7 rows is far below it

M = TypeVar("M", bound=BaseModel)


def check_shape(value: Any, where: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Refuse a parsed value nested deeper than `max_depth`, larger than `max_nodes` once YAML aliases are
    expanded, or containing itself. Iterative (no recursion), and each shared node is measured once."""
    height: dict[int, int] = {}
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, dict | list | tuple):
            continue
        key = id(node)
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else list(node)
        if children_done:
            on_path.discard(key)
            inner = [c for c in children if isinstance(c, dict | list | tuple)]
            height[key] = 1 + max((height[id(c)] for c in inner), default=0)
            size[key] = 1 + len(children) + sum(size[id(c)] - 1 for c in inner)
            if height[key] > max_depth:
                raise UserError(f"{where} is nested deeper than {max_depth} levels; it is not a file pcmpipe reads")
            if size[key] > max_nodes:
                raise UserError(f"{where} expands to more than {max_nodes:,} values; it is not a file pcmpipe reads")
            continue
        if key in height:
            continue
        if key in on_path:
            raise UserError(f"{where} refers to itself (a recursive alias); it is not a file pcmpipe reads")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, dict | list | tuple) and id(c) not in height)
        if len(on_path) > max_depth + 1:
            raise UserError(f"{where} is nested deeper than {max_depth} levels; it is not a file pcmpipe reads")


def parse_json(text: str | bytes, where: str, **limits: int) -> Any:
    """JSON text -> value, shape-checked; UserError naming `where` on any defect."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to read; it is not a file pcmpipe reads") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"{where} is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    check_shape(value, where, **limits)
    return value


def parse_yaml(text: str, where: str, **limits: int) -> Any:
    """YAML text -> value with `yaml.safe_load` (no tags, no objects), shape-checked; UserError on any defect."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to read; it is not a file pcmpipe reads") from None
    except (yaml.YAMLError, ValueError, OverflowError) as e:  # ValueError: a bad escape, date or huge number
        raise UserError(f"{where} is not valid YAML: {(str(e).splitlines() or [''])[0][:160]}") from None
    check_shape(value, where, **limits)
    return value


def read_bytes(path: str | Path, what: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a file pcmpipe reads back, refused from its size before reading when over `max_bytes`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} is missing")
    size = path.stat().st_size
    if size > max_bytes:
        raise UserError(f"{what} {path} is {size:,} bytes, more than the {max_bytes:,} such a file can be")
    return path.read_bytes()


def read_json(path: str | Path, what: str, *, max_bytes: int = MAX_BYTES, **limits: int) -> Any:
    """A JSON file: size-bounded, UTF-8 (a BOM is accepted), shape-checked. UserError naming the file."""
    data = read_bytes(path, what, max_bytes=max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    return parse_json(text, f"{what} {path}", **limits)


def read_yaml(path: str | Path, what: str, *, max_bytes: int = MAX_BYTES, **limits: int) -> Any:
    """A YAML file a user wrote (settings, pipelines, dataset specs): size-bounded, UTF-8 (a BOM is accepted),
    `yaml.safe_load`ed and shape-checked. UserError naming the file."""
    from pcmpipe.textfile import decode_text

    data = read_bytes(path, what, max_bytes=max_bytes)
    return parse_yaml(decode_text(data, path, what), f"{what} {path}", **limits)


def validate(model: type[M], value: Any, where: str) -> M:
    """`value` as an instance of the pydantic `model`; a `ValidationError` becomes one line naming the field."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise UserError(f"{where} is not a valid {model.__name__}: {first_error(e)}") from None


def first_error(e: ValidationError) -> str:
    """'backbones.T.weights: Input should be a valid string' (the first of pydantic's errors, one line)."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{loc}: {err.get('msg', 'invalid')}{more}"


def read_model(path: str | Path, model: type[M], what: str, *, max_bytes: int = MAX_BYTES) -> M:
    """A JSON file validated by `model` (see `read_json` and `validate`)."""
    return validate(model, read_json(path, what, max_bytes=max_bytes), f"{what} {path}")
