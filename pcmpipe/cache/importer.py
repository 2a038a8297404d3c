"""`pcmpipe import-features`: bring your own per-sample or per-class vectors in as a cached modality.

Inputs are either a NumPy array [N, *shape] plus an ids file (one id per line, or a TSV with a header
row when link columns are needed), or a Parquet table with an id column, a list-of-numbers vector column
and optional link columns. Everything is validated before the first byte is written, the cache is written
by the ordinary `ShardWriter` into a hidden temp directory beside the target, and only a finished cache is
renamed into place, so a failed or killed import never leaves a half-written modality behind. `--overwrite`
swaps the new cache in with one atomic exchange (Linux renameat2), so the modality is never missing; where the
filesystem cannot exchange, the next run finishes or rolls back a swap that a kill interrupted.
"""

from __future__ import annotations

import csv
import ctypes
import errno
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcmpipe import tempdirs
from pcmpipe.atomic import fsync_path
from pcmpipe.atomic import replace as durable_replace
from pcmpipe.cache.layout import manifest_in
from pcmpipe.cache.manifest import load_manifest
from pcmpipe.cache.shard import sha256_file
from pcmpipe.cache.writer import FORMATS, MODALITY_RE, NAME_RE, ShardWriter, cache_dir
from pcmpipe.errors import UserError
from pcmpipe.textfile import read_text

FEATURE_NAME = "features"
_KEPT_FLOATS = ("float16", "float32", "float64")  # stored as given; ints and bools become float32


@dataclass
class ImportResult:
    path: Path
    rows: int
    shape: tuple[int, ...]
    dtype: str
    fingerprint: str
    skipped: bool  # the same import was already complete: nothing written


@dataclass
class _Table:
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


def _from_npy(npy, ids, id_column, key, links) -> _Table:
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
    return _Table(id_list, link_cols, vectors, [npy, ids_path])


def _from_parquet(parquet, id_column, vector_column, links) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _need_file(parquet, "--parquet")
    if not vector_column:
        raise UserError("--parquet needs --vector-column: the column holding each row's vector")
    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
        raise UserError(f"{path} is not a readable Parquet file ({type(e).__name__})") from e
    wanted = [id_column, vector_column, *links]
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise UserError(f"{path} has no column {missing[0]!r}; it has {', '.join(schema.names)}")
    table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))
    for c in wanted:
        if table.column(c).null_count:
            raise UserError(
                f"{path} column {c!r} has {table.column(c).null_count} empty values; fill or drop those rows"
            )
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
    shape: tuple[int, ...] = (int(lengths[0]),)
    meta = table.schema.field(vector_column).metadata or {}
    if b"shape" in meta:  # a pcmpipe shard's own column: keep its [L, D] shape
        stored = tuple(json.loads(meta[b"shape"]))
        if int(np.prod(stored)) == shape[0]:
            shape = stored
    vectors = values.to_numpy(zero_copy_only=False).reshape(len(col), *shape)
    id_list = [str(v) for v in table.column(id_column).to_pylist()]
    link_cols = {c: [str(v) for v in table.column(c).to_pylist()] for c in links}
    return _Table(id_list, link_cols, vectors, [path])


def _validate(t: _Table, where: str) -> None:
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
        step = 4096  # chunked so a memory-mapped array is never loaded whole
        for s in range(0, len(t.vectors), step):
            bad = ~np.isfinite(np.asarray(t.vectors[s : s + step]).reshape(min(step, len(t.vectors) - s), -1)).all(1)
            if bad.any():
                k = s + int(np.flatnonzero(bad)[0])
                raise UserError(f"{where}: row {k} (id {t.ids[k]!r}) has NaN or infinite values; clean the input")


_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths in one step
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE); False where the OS or filesystem
    cannot, so the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:  # glibc before 2.28
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(new: Path, target: Path, split: str) -> None:
    """Put the finished cache `new` at `target` and delete the old one, with no moment where `target` is missing.

    With an atomic exchange the old cache ends up in `new`'s temp directory, which a kill leaves for the next
    run to remove. Without one, the old cache is first moved to `.<split>.old-<pid>-*`; a kill between the two
    renames is finished or rolled back by `_finish_dead_swaps` on the next run.
    """
    if _exchange(new, target):
        fsync_path(target.parent)
        shutil.rmtree(new)
        return
    aside = tempdirs.make(target.parent, f"{split}.old")
    os.replace(target, aside / "cache")
    durable_replace(new, target)
    shutil.rmtree(aside)


def _finish_dead_swaps(target: Path, split: str) -> None:
    """A fallback swap killed between its renames: put the old cache back if nothing replaced it, else drop it."""
    for aside in tempdirs.dead(target.parent, f"{split}.old"):
        if (aside / "cache").is_dir() and not target.exists():
            durable_replace(aside / "cache", target)
        shutil.rmtree(aside, ignore_errors=True)


def import_features(
    name: str,
    *,
    dataset: str,
    split: str,
    npy: str | Path | None = None,
    ids: str | Path | None = None,
    parquet: str | Path | None = None,
    id_column: str = "id",
    vector_column: str | None = None,
    key: str = "image_id",
    links: list[str] | None = None,
    fmt: str = "parquet",
    cache_root: str | Path = "cache",
    overwrite: bool = False,
    rows_per_shard: int = 4096,
) -> ImportResult:
    """Write vectors from `npy`+`ids` or `parquet` as modality `name` at cache_root/dataset/name/split."""
    if not MODALITY_RE.match(name or ""):
        raise UserError(f"modality name {name!r} is not a valid name; use letters, digits, '_', '-'")
    for what, value in (("dataset", dataset), ("split", split), ("--key", key)):
        if not NAME_RE.match(value or "") or value in (".", ".."):
            raise UserError(f"{what} {value!r} is not a valid name; use letters, digits, '_', '.', '-'")
    links = [c for c in dict.fromkeys(links or []) if c != key]
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if (npy is None) == (parquet is None):
        raise UserError("give exactly one input: --npy X.npy --ids IDS, or --parquet T.parquet --vector-column V")
    if parquet is not None and ids is not None:
        raise UserError("--ids goes with --npy; with --parquet the ids come from --id-column")
    table = (
        _from_npy(npy, ids, id_column, key, links)
        if npy is not None
        else _from_parquet(parquet, id_column, vector_column, links)
    )
    where = str(table.source[0])
    _validate(table, where)
    dtype = table.vectors.dtype.name if table.vectors.dtype.name in _KEPT_FLOATS else "float32"
    shape = tuple(int(d) for d in table.vectors.shape[1:])
    meta = {
        "source": "import-features",
        "dataset": dataset,
        "split": split,
        "modality": name,
        "inputs": {p.name: sha256_file(p) for p in table.source},
        "options": {"id_column": id_column, "vector_column": vector_column},
    }

    target = cache_dir(cache_root, dataset, name, split)
    target.parent.mkdir(parents=True, exist_ok=True)
    _finish_dead_swaps(target, split)
    tempdirs.remove_dead(target.parent, f"{split}.import")
    tmp = tempdirs.make(target.parent, f"{split}.import")
    try:
        writer = ShardWriter(
            tmp,
            features={FEATURE_NAME: (shape, dtype)},
            key=key,
            links=links,
            meta=meta,
            fmt=fmt,
            rows_per_shard=rows_per_shard,
            expected_rows=len(table.ids),
            lock=False,  # a private temp directory of this process
        )
        if target.exists() and any(target.iterdir()):
            old = load_manifest(manifest_in(target)) if manifest_in(target).exists() else None
            if old is not None and old["fingerprint"] == writer.fingerprint and old["complete"]:
                shutil.rmtree(tmp)
                return ImportResult(target, old["num_rows"], shape, dtype, writer.fingerprint, skipped=True)
            if not overwrite:
                held = f"fingerprint {old['fingerprint'][:12]}" if old else "no manifest"
                raise UserError(
                    f"{target} already holds other features ({held}, this import "
                    f"{writer.fingerprint[:12]}); pass --overwrite to replace it"
                )
        for s in range(0, len(table.ids), rows_per_shard):
            part = slice(s, s + rows_per_shard)
            writer.add(
                table.ids[part],
                {c: v[part] for c, v in table.links.items()},
                {FEATURE_NAME: np.asarray(table.vectors[part])},
            )
        writer.close()
        if target.exists() and any(target.iterdir()):  # --overwrite: swap directories, drop the old one
            _swap_in(tmp, target, split)
        else:
            durable_replace(tmp, target)  # an empty leftover directory is replaced too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(target, len(table.ids), shape, dtype, writer.fingerprint, skipped=False)
