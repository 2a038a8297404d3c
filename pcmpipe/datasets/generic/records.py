"""Rows of a user's data -> `Record`s per (modality, split): the one conversion the three forms share.

Every form (table, Hugging Face dataset, webdataset shards) reads its samples as `Row`s: a dict of column ->
value plus where the row came from. From here on they are alike: ids are strings, a modality's rows are
deduplicated by its id column (the images of a captions table), and its links are the other id columns that
hold one value per id (a caption names one image; an image has many captions, so caption_id is no link of I).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcmpipe.datasets.base import Blob, Record
from pcmpipe.datasets.generic.spec import DatasetSpec, ModalitySpec, split_name
from pcmpipe.errors import UserError


@dataclass(frozen=True)
class Row:
    split: str
    values: dict[str, Any]
    where: str  # 'captions.csv:12', 'shard-000.tar sample 0003': for messages


def is_missing(value: Any) -> bool:
    """No value: None, an empty string (CSV), a float NaN (Parquet nulls read through pandas-like writers)."""
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def id_of(row: Row, column: str) -> str:
    value = row.values.get(column)
    if is_missing(value):
        present = ", ".join(sorted(str(c) for c in row.values)[:12])
        raise UserError(f"{row.where}: no value in id column {column!r} (columns: {present})")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 7.0 from a float column is the id 7
    return str(value).strip()


def row_split(spec: DatasetSpec, given: str, values: dict[str, Any], where: str) -> str:
    """A row's split: its split column's value where the spec names one, else the split its file was given for
    ('*': a file for every split, whose rows must then say their split)."""
    if spec.split_column and not is_missing(values.get(spec.split_column)):
        return split_name(values[spec.split_column], where)
    if given == "*":
        raise UserError(f"{where}: no value in split column {spec.split_column!r}")
    return split_name(given, where)


def parse_vector(value: Any) -> np.ndarray | None:
    """A list of numbers, an array, or a string of them ('[0.1, 0.2]' or '0.1 0.2') -> float32 [D]; None if missing.
    Unparseable values become an empty vector, which the extraction skips and lists ('no vector')."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = json.loads(text) if text.startswith("[") else [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            return np.zeros(0, np.float32)
        value = parsed
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        return np.zeros(0, np.float32)


def _payload(m: ModalitySpec, value: Any, root: Path) -> dict[str, Any]:
    """Record keyword arguments for one cell of modality `m`."""
    if m.kind == "text":
        return {"text": None if is_missing(value) else str(value)}
    if m.kind == "vector":
        return {"vector": parse_vector(value)}
    if is_missing(value):
        return {"path": None}
    if hasattr(value, "open") and hasattr(value, "describe"):
        blob: Blob = value
        return {"blob": blob}
    path = Path(str(value)).expanduser()
    return {"path": path if path.is_absolute() else root / path}


def links_of(spec: DatasetSpec, rows: list[Row]) -> dict[str, list[str]]:
    """modality -> the id columns it links to: present in every row, with one value per value of its own key."""
    candidates = spec.id_columns
    out: dict[str, list[str]] = {}
    for m in spec.modalities.values():
        seen: dict[str, dict[str, str]] = {}
        links = []
        for c in candidates:
            if c == m.id:
                continue
            ok = True
            for row in rows:
                value = row.values.get(c)
                if is_missing(value):
                    ok = False
                    break
                if seen.setdefault(id_of(row, m.id), {}).setdefault(c, id_of(row, c)) != id_of(row, c):
                    ok = False
                    break
            if ok and rows:
                links.append(c)
        out[m.name] = sorted(links)
    return out


def build_records(spec: DatasetSpec, rows: list[Row]) -> dict[tuple[str, str], list[Record]]:
    """(modality, split) -> its records (one per distinct id; the first row of an id gives the payload)."""
    links = links_of(spec, rows)
    out: dict[tuple[str, str], list[Record]] = {}
    for m in spec.modalities.values():
        if rows and not any(m.column in r.values for r in rows):
            columns = ", ".join(sorted(str(c) for c in rows[0].values)[:20])
            raise UserError(
                f"{spec.where}: modality {m.name} reads column {m.column!r}, which the data lacks ({columns})"
            )
        split_of: dict[str, str] = {}  # id -> its split; an id seen before is a repeat (an image's next caption)
        for row in rows:
            rid = id_of(row, m.id)
            if rid in split_of:
                if split_of[rid] != row.split:
                    raise UserError(
                        f"{row.where}: {m.id} {rid} is in two splits ({split_of[rid]}, {row.split}); "
                        "give each one split"
                    )
                continue
            split_of[rid] = row.split
            out.setdefault((m.name, row.split), []).append(
                Record(
                    id=rid,
                    links={m.id: rid, **{c: id_of(row, c) for c in links[m.name]}},
                    **_payload(m, row.values.get(m.column), spec.root),
                )
            )
    return out
