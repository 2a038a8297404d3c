"""The inputs of `pcmpipe import-features`, read and validated before a byte is written.

Either a NumPy array [N, *shape] plus an ids file (one id per line, or a TSV with a header row when link columns
are needed), or a Parquet table with an id column, a list-of-numbers vector column and optional link columns.
Every defect a user's file can have (wrong shape or type, no rows, ids that do not match the rows, NaN, a
`shape` metadata entry that does not describe the vectors) is one `UserError` line naming the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcmpipe.errors import UserError, file_errors
from pcmpipe.readback import parse_json
from pcmpipe.textfile import read_text


@dataclass
class Table:
    """Validated input: ids [N], link columns -> [N] str, vectors [N, *shape] (possibly memory-mapped)."""

    ids: list[str]
    links: dict[str, list[str]]
    vectors: np.ndarray
    source: list[Path]


def _need_file(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} file {path} does not exist")
    return path


def _load_npy(npy: Path) -> np.ndarray:
    try:
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(
            f"{npy} is not a readable .npy array ({str(e).splitlines()[0][:80]}); save it with numpy.save"
        ) from e
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{npy} holds several arrays; pass one array [N, D] saved with numpy.save")
    if arr.ndim < 2 or 0 in arr.shape[1:]:
        raise UserError(f"{npy} has shape {tuple(arr.shape)}; expected [N, D] or [N, *shape] with one row per id")
    if arr.dtype.kind not in "fiub":
        raise UserError(f"{npy} has dtype {arr.dtype}; expected a numeric array")
    if arr.shape[0] == 0:
        raise UserError(f"{npy} has no rows (shape {tuple(arr.shape)}); a cache needs at least one vector")
    return arr


def _read_ids(path: Path, id_column: str, key: str, links: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """One id per line, or (links given or a .tsv file) a tab-separated table with a header row."""
    text = read_text(path, "--ids file")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not links and path.suffix.lower() != ".tsv":
        for k, line in enumerate(lines, 1):
            if not line.strip() or "\t" in line:
                raise UserError(
                    f"{path} line {k}: expected one id per line (use a .tsv file with a header for link columns)"
                )
        return [line.strip() for line in lines], {}
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise UserError(f"{path} is empty; expected a header row and one row per id")
    header = rows[0]
    id_col = id_column if id_column in header else key if key in header else None
    if id_col is None:
        raise UserError(
            f"{path} has no column {id_column!r} (header: {', '.join(header)}); name the id column with --id-column"
        )
    missing = [c for c in links if c not in header]
    if missing:
        raise UserError(f"{path} has no link column {missing[0]!r} (header: {', '.join(header)})")
    for k, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise UserError(f"{path} line {k} has {len(row)} fields, the header has {len(header)}")
    at = {c: header.index(c) for c in header}
    body = rows[1:]
    return [r[at[id_col]].strip() for r in body], {c: [r[at[c]].strip() for r in body] for c in links}


def from_npy(npy, ids, id_column, key, links) -> Table:
    npy = _need_file(npy, "--npy")
    if ids is None:
        raise UserError("--npy needs --ids: a file with one id per line (or a TSV with a header)")
    ids_path = _need_file(ids, "--ids")
    vectors = _load_npy(npy)
    id_list, link_cols = _read_ids(ids_path, id_column, key, links)
    if len(id_list) != vectors.shape[0]:
        raise UserError(
            f"{ids_path} lists {len(id_list)} ids but {npy} has {vectors.shape[0]} rows; they must match one to one"
        )
    return Table(id_list, link_cols, vectors, [npy, ids_path])


def stored_shape(raw: bytes, length: int, where: str) -> tuple[int, ...]:
    """The [L, D] shape a Parquet vector column's `shape` metadata gives its `length` values (a pcmpipe shard
    records it); one line when it is not a list of positive whole numbers whose product is `length`."""
    fix = "fix or drop that metadata entry"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{where}: its 'shape' metadata is not UTF-8 text; {fix}") from None
    value = parse_json(text, f"{where}: 'shape' metadata", max_depth=2)
    if not (
        isinstance(value, list) and value and all(isinstance(d, int) and not isinstance(d, bool) for d in value)
    ) or any(d < 1 for d in value):
        raise UserError(f"{where}: its 'shape' metadata {text[:60]!r} is not a list of positive whole numbers; {fix}")
    if int(np.prod(value, dtype=object)) != length:
        raise UserError(f"{where}: its 'shape' metadata {value} does not hold the {length} values of a row; {fix}")
    return tuple(value)


def from_parquet(parquet, id_column, vector_column, links) -> Table:
    import pyarrow.parquet as pq

    path = _need_file(parquet, "--parquet")
    if not vector_column:
        raise UserError("--parquet needs --vector-column: the column holding each row's vector")
    with file_errors(path, "read", "--parquet file", "give a Parquet file written by pyarrow, pandas or Spark"):
        schema = pq.read_schema(path)
    wanted = [id_column, vector_column, *links]
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise UserError(f"{path} has no column {missing[0]!r}; it has {', '.join(schema.names)}")
    with file_errors(path, "read", "--parquet file"):
        table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))
    for c in wanted:
        if table.column(c).null_count:
            raise UserError(
                f"{path} column {c!r} has {table.column(c).null_count} empty values; fill or drop those rows"
            )
    flat, length = _vector_values(table, vector_column, path)
    shape: tuple[int, ...] = (length,)
    meta = table.schema.field(vector_column).metadata or {}
    if b"shape" in meta:  # a pcmpipe shard's own column: keep its [L, D] shape
        shape = stored_shape(meta[b"shape"], length, f"{path} column {vector_column!r}")
    vectors = flat.reshape(table.num_rows, *shape)
    id_list = [str(v) for v in table.column(id_column).to_pylist()]
    link_cols = {c: [str(v) for v in table.column(c).to_pylist()] for c in links}
    return Table(id_list, link_cols, vectors, [path])


def _vector_values(table, vector_column: str, path: Path) -> tuple[np.ndarray, int]:
    """The vector column's numbers as one flat array, and the length every row's vector has."""
    import pyarrow as pa

    col = table.column(vector_column).combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise UserError(f"{path} column {vector_column!r} has type {col.type}; expected a list of numbers per row")
    if len(col) == 0:
        raise UserError(f"{path} has no rows")
    lengths = (
        np.asarray(col.value_lengths())
        if not pa.types.is_fixed_size_list(col.type)
        else np.full(len(col), col.type.list_size)
    )
    if lengths.min() != lengths.max() or lengths.min() == 0:
        k = int(np.flatnonzero(lengths != lengths[0])[0]) if lengths.min() != lengths.max() else 0
        raise UserError(
            f"{path} column {vector_column!r}: row {k} has {lengths[k]} values, row 0 has "
            f"{lengths[0]}; every vector needs the same non-zero length"
        )
    values = col.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type) or pa.types.is_boolean(values.type)):
        raise UserError(f"{path} column {vector_column!r} holds {values.type}; expected numbers")
    if values.null_count:
        raise UserError(f"{path} column {vector_column!r} has empty values inside vectors")
    return values.to_numpy(zero_copy_only=False), int(lengths[0])


def validate(t: Table, where: str) -> None:
    """Unique non-empty ids, non-empty link values, finite vectors (checked in chunks: a memory-mapped array is
    never loaded whole)."""
    seen: dict[str, int] = {}
    for k, i in enumerate(t.ids):
        if not i:
            raise UserError(f"{where}: row {k} has an empty id")
        if i in seen:
            raise UserError(f"{where}: id {i!r} appears twice (rows {seen[i]} and {k}); ids must be unique")
        seen[i] = k
    for c, values in t.links.items():
        if any(not v for v in values):
            raise UserError(f"{where}: link column {c!r} has an empty value in row {values.index('')}")
    if t.vectors.dtype.kind == "f":
        step = max(1, (64 << 20) // max(1, t.vectors[:1].nbytes))  # about 64 MB a chunk
        for s in range(0, len(t.vectors), step):
            bad = ~np.isfinite(np.asarray(t.vectors[s : s + step]).reshape(min(step, len(t.vectors) - s), -1)).all(1)
            if bad.any():
                k = s + int(np.flatnonzero(bad)[0])
                raise UserError(f"{where}: row {k} (id {t.ids[k]!r}) has NaN or infinite values; clean the input")
