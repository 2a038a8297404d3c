"""What `pcmpipe run` changes in a pipeline file before it is validated: `--set` and `--root` (pipelines.spec)."""

from __future__ import annotations

from pcmpipe.config import parse_set
from pcmpipe.errors import UserError


def apply_overrides(doc: dict, overrides: list[str], where: str) -> list[str]:
    """Dotted keys edit `doc` in place; plain `key=value` items are returned, TrainConfig settings for every run."""
    settings: list[str] = []
    for item in overrides:
        key, value = parse_set(item)
        if "." not in key:
            settings.append(item)
            continue
        node = doc
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise UserError(f"--set {key}: {where} has no mapping at {p!r}")
            node = node[p]
        node[parts[-1]] = value
    return settings


def apply_roots(doc: dict, roots: list[str], where: str) -> None:
    """`--root PATH` (a pipeline of one dataset) or `--root DATASET=PATH` sets that dataset's root in `doc`."""
    data = doc.get("data") or {}
    for item in roots:
        ds, sep, value = item.partition("=")
        if sep and ds in data:
            data[ds]["root"] = value
        elif len(data) == 1:
            next(iter(data.values()))["root"] = item
        else:
            raise UserError(f"{where} uses datasets {', '.join(data)}: give --root DATASET=PATH for each")
