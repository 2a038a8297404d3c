"""`pcmpipe embed`: a run's coordinated embeddings of new inputs, written as a cache of the usual format.

The output is one cache directory (docs/cache-format.md) with the single feature `embedding` [dim] (float32 or
float16), L2-normalised, so `pcmpipe index`, `pcmpipe search --gallery`, `pcmpipe.cache.open_cache` and
`pq.read_table` read it as they read any cache. Its meta records the run's fingerprint, the modality and the
source (raw inputs through the backbone, or a feature cache through the head), which makes the fingerprint
differ whenever the embeddings would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pcmpipe.augment.views import VIEWS_FEATURE
from pcmpipe.cache import ShardWriter, open_cache
from pcmpipe.errors import UserError
from pcmpipe.runs.loaded import Run

DTYPES = ("float32", "float16")
FEATURE = "embedding"
ROWS_PER_BATCH = 4096  # feature-cache rows per pass through the head (bounded memory on large caches)


def _writer(run: Run, modality: str, out: Path, dtype: str, key: str, links: list[str], source: dict) -> ShardWriter:
    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    meta = {
        "run": run.path.name,
        "run_fingerprint": run.fingerprint,
        "modality": modality,
        "normalised": True,
        "source": source,
    }
    writer = ShardWriter(out, features={FEATURE: ((run.dim,), dtype)}, key=key, links=links, meta=meta)
    if writer.complete:
        raise UserError(f"{out} already holds these embeddings; nothing to do (delete it to write them again)")
    if writer.num_rows:
        raise UserError(f"{out} holds part of an earlier embedding run; delete it and run again")
    return writer


def embed_inputs_to_cache(
    run: Run,
    modality: str,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    ids: Sequence[str] | None = None,
    dtype: str = "float32",
    batch_size: int = 64,
    workers: int = 0,
    strict: bool = False,
) -> dict:
    """Raw inputs (texts or files) through the backbone and head into the cache `out` -> summary dict
    {"out", "rows", "skipped": {id: reason}}. workers: decoding processes for files (as `pcmpipe extract`);
    strict: the first unusable input is a UserError."""
    if not inputs:
        raise UserError("nothing to embed: pass files, a folder, --text or --text-file")
    bb = run.backbone(modality)
    source = {
        "inputs": bb.modality_kind,
        "backbone": bb.meta.get("backbone"),
        "weights_sha256": bb.meta.get("weights_sha256"),
    }
    kept, emb, skipped = run.embed_inputs(modality, inputs, ids=ids, batch_size=batch_size, workers=workers)
    if strict and skipped:
        first = next(iter(skipped))
        raise UserError(f"cannot embed {first!r}: {skipped[first]} (without --strict it is skipped and listed)")
    if not kept:
        raise UserError(
            f"none of the {len(inputs)} inputs could be embedded (first reason: {next(iter(skipped.values()))})"
        )
    with _writer(run, modality, Path(out), dtype, "id", [], source) as w:
        w.add(kept, {}, {FEATURE: emb})
    return {"out": str(out), "rows": len(kept), "skipped": skipped}


def embed_cache_to_cache(
    run: Run, modality: str, cache: str | Path, out: str | Path, *, dtype: str = "float32"
) -> dict:
    """Every row of a feature cache through the modality's head into the cache `out`, keeping the source's key
    and link columns (so evaluation and joins still line rows up) -> {"out", "rows", "skipped": {}}."""
    reader = open_cache(cache)
    # a train cache extracted with `--views K` also holds the augmented views: a row's embedding is its clean view's
    names = [n for n in reader.feature_names if n != VIEWS_FEATURE]
    if len(names) != 1:
        raise UserError(f"cache {cache} holds features {reader.feature_names}; embed a cache with one feature")
    name = names[0]
    source = {"cache_fingerprint": reader.fingerprint}
    with _writer(run, modality, Path(out), dtype, reader.key, list(reader.links), source) as w:
        for cols, feats in reader.iter_batches(ROWS_PER_BATCH, [name]):
            emb = run.project(modality, np.asarray(feats[name], dtype=np.float32))
            w.add(list(cols["id"]), {c: list(cols[c]) for c in reader.links}, {FEATURE: emb})
        rows = w.num_rows
    return {"out": str(out), "rows": rows, "skipped": {}}
