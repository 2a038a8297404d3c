"""`pcmpipe import-features`: bring your own per-sample or per-class vectors in as a cached modality.

Inputs are either a NumPy array [N, *shape] plus an ids file, or a Parquet table (`import_inputs`). Everything
is validated before the first byte is written, the cache is written by the ordinary `ShardWriter` into a hidden
temp directory beside the target, and only a finished cache is renamed into place, so a failed or killed import
never leaves a half-written modality behind. `--overwrite` swaps the new cache in (pcmpipe.folderswap) with one atomic
exchange (Linux renameat2), so the modality is never missing; where the filesystem cannot exchange, the next run
finishes or rolls back a swap that a kill interrupted.

The import holds the split's lock (`cache.lock.exclusive`, the lock `extract` takes) from the reuse check to the
swap: a second import or an extraction of that split waits for it, and it waits for them, or, with a
`lock_wait` in seconds, refuses in one line. A training reading the split holds the same lock shared
(`cache.lock.shared`) for its whole run, so an overwrite waits for the training to end and never changes the
data under it. A split that is a symbolic link is refused, never followed: replacing it would delete the
files it points to (or leave the link behind under a temp name).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcmpipe import folderswap, tempdirs
from pcmpipe.cache.import_inputs import Table, from_npy, from_parquet, validate
from pcmpipe.cache.layout import cache_dir, manifest_in, refuse_link
from pcmpipe.cache.lock import exclusive
from pcmpipe.cache.manifest import load_manifest
from pcmpipe.cache.writer import FORMATS, NAME_RE, ShardWriter
from pcmpipe.checksums import file_sha256
from pcmpipe.errors import UserError
from pcmpipe.limits import check_memory

FEATURE_NAME = "features"
_KEPT_FLOATS = ("float16", "float32", "float64")  # stored as given; ints and bools become float32
# A shard's rows are held in memory until it is written: wide vectors get fewer rows a shard (the row count of a
# shard is not part of the fingerprint, so this changes no cache's identity).
SHARD_BYTES = 256 << 20


@dataclass
class Inputs:
    """What to import: `npy` + `ids`, or `parquet` with its `vector_column`; `key` names what an id is and
    `links` the coarser id columns to keep (from a TSV ids file or Parquet columns)."""

    npy: str | Path | None = None
    ids: str | Path | None = None
    parquet: str | Path | None = None
    id_column: str = "id"
    vector_column: str | None = None
    key: str = "image_id"
    links: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    path: Path
    rows: int
    shape: tuple[int, ...]
    dtype: str
    fingerprint: str
    skipped: bool  # the same import was already complete: nothing written


def import_features(
    name: str,
    *,
    dataset: str,
    split: str,
    source: Inputs,
    fmt: str = "parquet",
    cache_root: str | Path = "cache",
    overwrite: bool = False,
    rows_per_shard: int = 4096,
    lock_wait: bool | float = True,
) -> ImportResult:
    """Write the vectors of `source` as modality `name` at cache_root/dataset/name/split.

    lock_wait: another job writing the split (an import, an extraction) or a training reading it is waited for
    (True), refused at once (False) or waited for that many seconds, then refused in one line.
    """
    target = cache_dir(cache_root, dataset, name, split)  # refuses names the cache tree reserves
    if not NAME_RE.match(source.key or "") or source.key in (".", ".."):
        raise UserError(f"--key {source.key!r} is not a valid name; use letters, digits, '_', '.', '-'")
    links = [c for c in dict.fromkeys(source.links or []) if c != source.key]
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    table = _read(source, links)
    where = str(table.source[0])
    validate(table, where)
    dtype = table.vectors.dtype.name if table.vectors.dtype.name in _KEPT_FLOATS else "float32"
    shape = tuple(int(d) for d in table.vectors.shape[1:])
    row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    check_memory("--npy" if source.npy is not None else "--parquet", 2 * row_bytes, "one row of its vectors")
    meta = {
        "source": "import-features",
        "dataset": dataset,
        "split": split,
        "modality": name,
        "inputs": {p.name: file_sha256(p) for p in table.source},
        "options": {"id_column": source.id_column, "vector_column": source.vector_column},
    }
    spec = {"features": {FEATURE_NAME: (shape, dtype)}, "key": source.key, "links": links, "meta": meta, "fmt": fmt}
    rows_per_shard = max(1, min(rows_per_shard, SHARD_BYTES // max(1, row_bytes)))
    with exclusive(target, f"cache {dataset}/{name}/{split}", wait=lock_wait):
        return _write_locked(target, split, table, spec, overwrite, rows_per_shard)


def _read(source: Inputs, links: list[str]) -> Table:
    if (source.npy is None) == (source.parquet is None):
        raise UserError("give exactly one input: --npy X.npy --ids IDS, or --parquet T.parquet --vector-column V")
    if source.parquet is not None and source.ids is not None:
        raise UserError("--ids goes with --npy; with --parquet the ids come from --id-column")
    if source.npy is not None:
        return from_npy(source.npy, source.ids, source.id_column, source.key, links)
    return from_parquet(source.parquet, source.id_column, source.vector_column, links)


def _write_locked(
    target: Path, split: str, table: Table, spec: dict, overwrite: bool, rows_per_shard: int
) -> ImportResult:
    """Write the cache into a temp directory and swap it in; the caller holds the split's lock."""
    (shape, dtype) = spec["features"][FEATURE_NAME]
    target.parent.mkdir(parents=True, exist_ok=True)
    folderswap.finish_dead_swaps(target)
    tempdirs.remove_dead(target.parent, f"{split}.import")
    tmp = tempdirs.make(target.parent, f"{split}.import")
    try:
        # lock=False: a private temp directory of this process (the split's own lock is held by the caller)
        writer = ShardWriter(tmp, rows_per_shard=rows_per_shard, expected_rows=len(table.ids), lock=False, **spec)
        if target.is_symlink() or (target.exists() and any(target.iterdir())):
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
        refuse_link(target, "import-features --overwrite")
        for s in range(0, len(table.ids), rows_per_shard):
            part = slice(s, s + rows_per_shard)
            writer.add(
                table.ids[part],
                {c: v[part] for c, v in table.links.items()},
                {FEATURE_NAME: np.asarray(table.vectors[part])},
            )
        writer.close()
        folderswap.swap_in(tmp, target)  # --overwrite: the old cache is dropped, never missing where Linux can
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(target, len(table.ids), shape, dtype, writer.fingerprint, skipped=False)
