"""`pcmpipe embed`: a run's coordinated embeddings of new inputs, written as a cache of the usual format.

The output is one cache directory (docs/cache-format.md) with the single feature `embedding` [dim] (float32 or
float16), L2-normalised, so `pcmpipe index`, `pcmpipe search --gallery`, `pcmpipe.cache.open_cache` and
`pq.read_table` read it as they read any cache. Its meta records the run's fingerprint, the modality and the
source: the raw inputs (a digest of every id with its text, or its file's path, size and mtime) through the
backbone, or a feature cache (its fingerprint and shard checksums) through the head. So the fingerprint
differs whenever the embeddings would, and an identical rerun is recognised as done.

The job holds a lock on the output and writes shard by shard into a hidden temp folder beside it (runs/outdir),
swapped in whole at the end: a killed job's rerun resumes from its finished shards, a second job on the same
output waits and then finds the result, and the output is never half of one result and half of another.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcmpipe import folderswap
from pcmpipe.augment.views import VIEWS_FEATURE
from pcmpipe.backbones.identity import same_encoder
from pcmpipe.cache import ShardWriter, open_cache
from pcmpipe.cache.layout import manifest_in
from pcmpipe.cache.lock import exclusive
from pcmpipe.cache.manifest import load_manifest
from pcmpipe.cache.writer import cache_fingerprint
from pcmpipe.errors import UserError, file_errors
from pcmpipe.extract.sources import Skipped
from pcmpipe.runs.inputs import input_ids, inputs_digest, iter_encoded
from pcmpipe.runs.loaded import Run
from pcmpipe.runs.outdir import (
    check_embed_settings,
    check_out,
    is_empty_dir,
    remove,
    temp_for,
)
from pcmpipe.training.rundir.files import is_run_folder

FEATURE = "embedding"
ROWS_PER_BATCH = 4096  # feature-cache rows per pass through the head (bounded memory on large caches)
Progress = Callable[[int, int], None]  # (inputs done, inputs in all)


def _describe(found: dict, want: dict) -> str:
    """What an output folder holds instead of the embeddings asked for, in words."""
    meta: dict = found["meta"] if isinstance(found.get("meta"), dict) else {}
    if "run_fingerprint" not in meta:
        return "a feature cache, not embeddings"
    if meta["run_fingerprint"] != want["run_fingerprint"]:
        return f"embeddings of another run ({meta.get('run')})"
    if meta.get("modality") != want["modality"]:
        return f"{meta.get('modality')} embeddings, not {want['modality']}"
    if meta.get("source") != want["source"]:
        return "embeddings of other inputs"
    return "embeddings stored in another precision"


class EmbeddingsOut:
    """The output folder of one embedding job, as a context manager (module docstring). After entering:
    `writer` is None when `out` already holds these embeddings whole (`rows` of them), else the ShardWriter of
    the temp folder (its `done_ids` are rows a killed job finished); `replaced` says why an earlier result at
    `out` is being rebuilt. A clean exit completes the temp folder and swaps it in."""

    def __init__(self, out: str | Path, *, features: dict, key: str, links: list[str], meta: dict, rows: int):
        self.out = Path(out)
        self.spec: dict[str, Any] = {"features": features, "key": key, "links": links, "meta": meta}
        self.rows_per_shard = rows
        self.writer: ShardWriter | None = None
        self.rows = 0
        self.replaced: str | None = None
        self._lock = contextlib.ExitStack()

    def __enter__(self) -> EmbeddingsOut:
        check_out(self.out, "--out", "embeddings")
        self._lock.enter_context(exclusive(self.out, f"embeddings {self.out}", wait=True))
        try:
            check_out(self.out, "--out", "embeddings")  # again: the job we waited for may have written it
            folderswap.finish_dead_swaps(self.out)
            if not self._done():
                self.writer = self._open_temp()
            else:  # whole already: a temp folder left beside it (an exchanged-out old result) is only waste
                remove(temp_for(self.out, "embed"))
        except BaseException:
            self._lock.close()
            raise
        return self

    def _done(self) -> bool:
        """True when `out` holds these embeddings, whole (every shard's sha256 checked)."""
        if not self.out.exists() or is_empty_dir(self.out):
            return False
        if is_run_folder(self.out):
            raise UserError(f"--out {self.out} is a run directory; give a new folder for the embeddings")
        if not manifest_in(self.out).is_file():
            raise UserError(f"--out {self.out} is a folder of other files; give a new or empty folder")
        found = load_manifest(manifest_in(self.out))
        if found.get("fingerprint") != cache_fingerprint(**self.spec):
            raise UserError(
                f"--out {self.out} holds {_describe(found, self.spec['meta'])}; choose another --out, or delete "
                "it to write these there"
            )
        try:
            self.rows = open_cache(self.out).num_rows
            return True
        except UserError as e:  # recomputable from the same inputs: rebuilt, as extract rebuilds a damaged split
            self.replaced = str(e).split("; ")[0]  # what was wrong, without the advice to delete it
            return False

    def _open_temp(self) -> ShardWriter:
        temp = temp_for(self.out, "embed")
        if temp.is_symlink() or (temp.exists() and not temp.is_dir()):
            remove(temp)
        try:
            return ShardWriter(temp, **self.spec, rows_per_shard=self.rows_per_shard, lock=False)
        except UserError:  # a killed job's folder for other inputs, or damaged: ours, so started again
            remove(temp)
            return ShardWriter(temp, **self.spec, rows_per_shard=self.rows_per_shard, lock=False)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write names its file as it will be in `out`, not in the temp folder (the CLI guard then
        says which file and how much room is left)."""
        assert self.writer is not None
        temp = self.writer.directory
        try:
            with file_errors(self.out, "write", "embeddings"):
                yield
        except OSError as e:
            if e.errno is None or e.filename is None or Path(os.fsdecode(e.filename)).parent != temp:
                raise
            raise OSError(e.errno, e.strerror, str(self.out / Path(os.fsdecode(e.filename)).name)) from None

    def add(self, ids: list[str], links: dict[str, list[str]], emb: np.ndarray) -> None:
        assert self.writer is not None
        with self._writing():
            self.writer.add(ids, links, {FEATURE: emb})

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        try:
            if self.writer is None:
                return
            if kind is not None:
                self.writer.__exit__(kind, e, tb)  # keeps the rows handed over as a shard, for the rerun
                if not self.writer.num_rows:
                    remove(self.writer.directory)
                return
            self.rows = self.writer.num_rows
            with self._writing():
                self.writer.close()
            folderswap.swap_in(self.writer.directory, self.out)
        finally:
            self._lock.close()


def _meta(run: Run, modality: str, source: dict) -> dict:
    return {
        "run": run.path.name,
        "run_fingerprint": run.fingerprint,
        "modality": modality,
        "normalised": True,
        "source": source,
    }


def _summary(target: EmbeddingsOut, skipped: dict[str, str]) -> dict:
    return {
        "out": str(target.out),
        "rows": target.rows,
        "skipped": skipped,
        "reused": target.writer is None,
        "replaced": target.replaced,
    }


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
    rows_per_shard: int = 4096,
    progress: Progress | None = None,
) -> dict:
    """Raw inputs (texts or files) through the backbone and head into the cache `out` -> summary dict
    {"out", "rows", "skipped": {id: reason}, "reused": out already held them, "replaced": why an earlier,
    damaged result was rebuilt, or None}. workers: decoding processes for files (as `pcmpipe extract`);
    strict: the first unusable input is a UserError. progress(done, total) is called as inputs are done."""
    check_embed_settings(dtype=dtype, batch_size=batch_size, workers=workers, rows_per_shard=rows_per_shard)
    if not inputs:
        raise UserError("nothing to embed: pass files, a folder, --text or --text-file")
    bb = run.backbone(modality)
    kind = bb.modality_kind
    ids = input_ids(kind, inputs, ids)
    source = {
        "inputs": kind,
        "backbone": bb.meta.get("backbone"),
        "weights_sha256": bb.meta.get("weights_sha256"),
        "inputs_sha256": inputs_digest(kind, inputs, ids),
    }
    features = {FEATURE: ((run.dim,), dtype)}
    target = EmbeddingsOut(
        out, features=features, key="id", links=[], meta=_meta(run, modality, source), rows=rows_per_shard
    )
    skipped: dict[str, str] = {}
    report = progress or (lambda done, total: None)
    with target:
        if target.writer is None:
            return _summary(target, skipped)
        # a killed job's finished temp folder (killed before its swap) has nothing left to encode: its skipped
        # inputs stay skipped, as they do for a finished output
        done_ids = set(ids) if target.writer.complete else target.writer.done_ids
        todo = [(i, x) for i, x in zip(ids, inputs) if i not in done_ids]
        done = len(ids) - len(todo)
        report(done, len(ids))
        encoded = iter_encoded(
            bb, [x for _, x in todo], [i for i, _ in todo], batch_size=batch_size, workers=workers,
            head=lambda f: run.project(modality, f),
        )  # fmt: skip
        for item in encoded:
            if isinstance(item, Skipped):
                if strict:
                    raise UserError(
                        f"cannot embed {item.record.id!r}: {item.reason} (without --strict it is skipped and listed)"
                    )
                skipped[item.record.id] = item.reason
                done += 1
            else:
                target.add([r.id for r in item.records], {}, item.features)
                done += len(item.records)
            report(done, len(ids))
        if not target.writer.num_rows:
            first = next(iter(skipped.values()), "no input")
            raise UserError(f"none of the {len(inputs)} inputs could be embedded (first reason: {first})")
    return _summary(target, skipped)


def check_source(run: Run, modality: str, meta: dict, cache: str | Path) -> None:
    """A feature cache's rows go through the head only when they are the features it was trained on: same
    backbone and weights checksum (or, for vectors, the same modality), as its meta records them."""
    want = run.expects(modality)
    spec = run.backbones.get(modality)
    if same_encoder(spec, meta) if spec else meta.get("modality") == modality:
        return

    def said(d: dict) -> str:
        sha = d.get("weights_sha256")
        tail = f" (weights sha256 {str(sha)[:12]})" if sha else ""
        what = f"features of {d['backbone']}{tail}" if d.get("backbone") else "features of no recorded backbone"
        return f"{d['modality']} {what}" if d.get("modality") else what

    raise UserError(
        f"cache {cache} holds {said(meta)}, but the {modality} head of run {run.path.name} was trained on "
        f"{said(want)}; embed a cache extracted with that backbone and weights, or the raw inputs"
    )


def embed_cache_to_cache(
    run: Run,
    modality: str,
    cache: str | Path,
    out: str | Path,
    *,
    dtype: str = "float32",
    rows_per_shard: int = 4096,
    progress: Progress | None = None,
) -> dict:
    """Every row of a feature cache through the modality's head into the cache `out`, keeping the source's key
    and link columns (so evaluation and joins still line rows up) -> the summary of `embed_inputs_to_cache`."""
    check_embed_settings(dtype=dtype, rows_per_shard=rows_per_shard)
    reader = open_cache(cache)  # every shard's sha256 checked
    if "run_fingerprint" in reader.meta:
        raise UserError(f"cache {cache} holds embeddings already, not features; pass the cache they came from")
    check_source(run, modality, reader.meta, cache)
    # a train cache extracted with `--views K` also holds the augmented views: a row's embedding is its clean view's
    names = [n for n in reader.feature_names if n != VIEWS_FEATURE]
    if len(names) != 1:
        raise UserError(f"cache {cache} holds features {reader.feature_names}; embed a cache with one feature")
    shards = "".join(str(s.sha256) for s in reader.iter_shards())
    source = {"cache_fingerprint": reader.fingerprint, "shards_sha256": hashlib.sha256(shards.encode()).hexdigest()}
    features = {FEATURE: ((run.dim,), dtype)}
    meta = _meta(run, modality, source)
    target = EmbeddingsOut(
        out, features=features, key=reader.key, links=list(reader.links), meta=meta, rows=rows_per_shard
    )
    report = progress or (lambda done, total: None)
    with target:
        if target.writer is None:
            return _summary(target, {})
        done = set(target.writer.done_ids)
        seen = 0
        for cols, feats in reader.iter_batches(ROWS_PER_BATCH, [names[0]]):
            keep = [j for j, i in enumerate(cols["id"]) if i not in done]
            if keep:
                emb = run.project(modality, np.asarray(feats[names[0]][keep], dtype=np.float32))
                links = {c: [cols[c][j] for j in keep] for c in reader.links}
                target.add([cols["id"][j] for j in keep], links, emb)
            seen += len(cols["id"])
            report(seen, reader.num_rows)
    return _summary(target, {})
