"""Bounds on every `extract` setting that sizes processes, memory or output, checked before any work starts.

`check_settings` takes the flags alone, before the dataset is opened: `--workers` (4 decoding processes per core:
`extract --workers 100000` once started thousands and the machine's OOM killer ended other people's jobs),
`--batch-size`, `--rows-per-shard`, `--limit`, `--views`, `--max-padding` and `--lock-timeout`. `check_memory_use`
then sizes what one split holds at once with the backbone's real feature and input sizes, before any split is
read, and `check_disk` what a split will write against the free space of its filesystem. Each refusal is one
line naming the setting, the limit and where the limit comes from (pcmpipe.limits).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from pcmpipe.errors import UserError
from pcmpipe.extract.sources import VIEW_CHUNK
from pcmpipe.limits import check_int, check_memory, check_positive, check_workers

# Items per forward pass: 65,536 images at 224 x 224 are 39 GB of input tensors; no encoder needs more.
MAX_BATCH = 1 << 16
# Rows a shard holds in memory until it is written (the unit of resume): 2^20 rows of 512-d float32 are 2 GiB.
MAX_ROWS_PER_SHARD = 1 << 20
# Stage two draws one view per item per epoch and trains at most a few hundred epochs; every view is a full copy
# of the split's features in the cache (`--views 1000000000` once grew past 1 GB in 60 s before writing a row).
MAX_VIEWS = 1000
PREFETCH = 4  # batches each decoding process keeps ready (extract.sources.decoding_loader's default)


def check_settings(
    *,
    batch_size: int,
    workers: int | None,
    rows_per_shard: int,
    limit: int | None,
    views: int,
    max_padding: float | None,
    lock_wait: bool | float,
) -> None:
    """One UserError line for the first setting out of bounds; nothing is opened or started before this."""
    check_workers("--workers", workers)
    check_int("--batch-size", batch_size, low=1, high=MAX_BATCH, why="65,536 images at 224 x 224 are 39 GB of input")
    check_int(
        "--rows-per-shard",
        rows_per_shard,
        low=1,
        high=MAX_ROWS_PER_SHARD,
        why="a shard's rows are held in memory until written: 2^20 rows of 512 floats are 2 GiB",
    )
    if limit is not None and (check_positive("--limit", limit) != int(limit) or isinstance(limit, float)):
        raise UserError(f"--limit must be a whole number of items per modality and split, got {limit!r}")
    check_int(
        "--views", views, low=0, high=MAX_VIEWS, why="stage two draws one per epoch; each is a copy of the features"
    )
    if max_padding is not None:
        if isinstance(max_padding, bool) or not isinstance(max_padding, int | float) or not math.isfinite(max_padding):
            raise UserError(f"--max-padding must be a fraction in [0, 1), e.g. 0.05, got {max_padding!r}")
        if not 0.0 <= max_padding < 1.0:
            raise UserError(f"--max-padding must be a fraction in [0, 1), e.g. 0.05, got {max_padding}")
    if not isinstance(lock_wait, bool):
        check_positive("--lock-timeout", lock_wait, allow_zero=True)


def _input_side(backbone) -> int:
    """The side in pixels of the image tower's input (CLIP ViT-B/32: 224)."""
    size = (backbone.meta.get("preprocess") or {}).get("size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)


def check_memory_use(backbone, *, views: int, batch_size: int, workers: int, rows_per_shard: int) -> None:
    """What extraction with `backbone` holds at once, against this machine's memory: the rows of a shard until it
    is written ([rows, views + 1, *feature_shape] float32), the decoded images in flight (each decoding process
    keeps PREFETCH batches of [batch, views + 1, 3, S, S] float32 ready) and, with views, the captions' views
    encoded together."""
    feature = 4 * math.prod(backbone.feature_shape)
    copies = views + 1
    shard = rows_per_shard * copies * feature
    parts = [f"{rows_per_shard:,} rows a shard x {copies:,} views x {feature:,} bytes"]
    inputs = 0
    if backbone.modality_kind == "image":
        side = _input_side(backbone)
        in_flight = workers * PREFETCH + 1
        inputs = in_flight * batch_size * copies * 3 * side * side * 4
        parts.append(f"{in_flight} batches of {batch_size} images x {copies:,} views at {side}x{side} in flight")
    elif backbone.modality_kind == "text" and views:
        inputs = 2 * VIEW_CHUNK * copies * feature
        parts.append(f"{VIEW_CHUNK} captions x {copies:,} views encoded together")
    if views:
        flag = "--views"
    else:
        flag = "--rows-per-shard" if shard >= inputs else ("--batch-size" if workers == 0 else "--batch-size/--workers")
    check_memory(flag, shard + inputs, f"{backbone.name} ({' plus '.join(parts)})")


def check_disk(directory: Path, rows: int, features: dict, what: str) -> None:
    """Refuse a split whose rows would not fit on the filesystem that will hold `directory`. Shards are written
    uncompressed, so rows x (each feature's values x its dtype's bytes) is what they take, give or take the id
    columns; shards already there (a resume keeps them, a rebuild frees them) count as room."""
    import numpy as np

    row_bytes = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in features.values())
    there = sum(f.stat().st_size for f in directory.glob("part-*")) if directory.is_dir() else 0
    need = rows * row_bytes - there
    folder = next((p for p in (directory, *directory.parents) if p.is_dir()), None)
    if folder is None or need <= 0:
        return
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserError(
            f"{what} needs about {need / 1e9:.1f} GB more ({rows:,} rows x {row_bytes:,} bytes) than the "
            f"{free / 1e9:.1f} GB free on {folder}; free some space, lower --views or --limit, or choose another "
            "--cache-root"
        )
