"""Stage one: dataset records -> backbone -> feature shards, resumable at any point (`pcmpipe extract`).

    summary = extract(ExtractConfig.from_dict({"dataset": "flickr8k", "modalities": "I,T,S", "cache_root": "cache"}))

Per (modality, split) the cache `cache_root/dataset/modality/split` is written by one `ShardWriter`:
  * a complete cache with the same fingerprint is skipped without reading any input;
  * otherwise ids in finished shards (`done_ids`) are skipped and the rest encoded, so a run killed at any
    moment (SIGKILL included) and started again ends with exactly the rows of an uninterrupted run;
  * a cache built with other settings (weights, preprocessing, precision, format, limit) is never mixed
    in: UserError, unless `cfg.overwrite`, which deletes that one cache directory and rebuilds it.
Inputs that cannot be encoded are skipped and listed in `.errors.jsonl` beside the manifest (or, with
`cfg.strict`, the first one ends the run with a UserError).

Modalities: I (image tower), T and P (text tower), S (speech encoder), A and C (the dataset's own
vectors, written as they are). Every cache has the feature `features`, float32 [N, *shape] (or float16); with
`views=K` the train split's I and T caches also hold `views` [N, K, *shape], K augmented views per item.

Under torchrun every rank encodes its `distributed.rank_blocks` part (blocks of `rows_per_shard` records by
global position, each batched on its own and written as one shard) into its own shards and manifest; rank 0
merges them (`distributed.finish_part`) into the cache one process would write, shard for shard the same bytes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pcmpipe import distributed as D
from pcmpipe.augment.views import VIEWS_FEATURE, ViewSpec
from pcmpipe.backbones import Backbone, create_backbone, resolve_device
from pcmpipe.cache.layout import check_name, manifest_in, refuse_link
from pcmpipe.cache.lock import exclusive
from pcmpipe.cache.manifest import hide_legacy_names, load_manifest
from pcmpipe.cache.writer import ShardWriter
from pcmpipe.config.extract import ExtractConfig
from pcmpipe.datasets import open_dataset
from pcmpipe.datasets.synthetic import SYNTHETIC_MARKER
from pcmpipe.errors import UserError
from pcmpipe.extract import bounds
from pcmpipe.extract import precision as arithmetic
from pcmpipe.extract.batching import PaddingMeter
from pcmpipe.extract.decode import image_batches
from pcmpipe.extract.plan import FEATURE, SplitSpec, choose_backbone, compare, split_spec, split_views
from pcmpipe.extract.record_source import RecordSource, record_source
from pcmpipe.extract.sources import (
    Encoded,
    Skipped,
    audio_batches,
    text_batches,
    vector_batches,
)
from pcmpipe.extract.summary import (
    ERRORS_FILE,
    ExtractProgress,
    ExtractSummary,
    PartSummary,
    read_errors,
    write_errors,
)


class _BlockEnd:
    """Marks the end of a block's batches in the stream of encoded items."""


_BLOCK_END = _BlockEnd()


def default_workers(device: object = "cpu") -> int:
    """Image-decoding processes. On a GPU the forward pass is fast and decoding is the bottleneck: up to 8. On
    CPU the forward pass already uses every core (torch's threads), so each decoding process takes cores from
    it: one per 4 cores is enough to keep up (about 10 ms of decoding per 500 x 375 JPEG against about 80 ms
    of ViT-B/32 forward per image per core); on 2 cores, 2 workers made extraction 0.84x the bare forward and
    1 worker 0.91x (docs/performance.md)."""
    cores = os.cpu_count() or 1
    if str(device).startswith("cuda"):
        return min(8, cores)
    return max(1, min(4, cores // 4))


def extract(cfg: ExtractConfig, *, progress: ExtractProgress | None = None) -> ExtractSummary:
    """Extract every requested (modality, split) of `cfg.dataset` into `cfg.cache_root`; returns the summary.

    The settings are `pcmpipe.config.ExtractConfig`'s (the same as `pcmpipe extract`'s flags): backbones and
    weights per kind, or per modality in `cfg.backbones` / `cfg.weights` (the modality winning); `limit` keeps the
    first records (by id) of each (modality, split) and is part of the fingerprint; `max_padding` bounds each speech
    batch's padding (only the speed depends on it); `dtype` is how features are stored (float16: half the bytes;
    fingerprinted); `lock_timeout` refuses another job's split after that many seconds (None: wait); `views` adds
    K augmented views of the train split's images and captions (`plan.split_views`; docs/extraction.md).
    progress(task, done, total) is called as items finish ('flickr8k I train', rows done, rows of this
    process); under torchrun only rank 0 reports.
    """
    bounds.check_settings(
        batch_size=cfg.batch_size, workers=cfg.workers, rows_per_shard=cfg.rows_per_shard, limit=cfg.limit,
        views=cfg.views, max_padding=cfg.max_padding, lock_wait=cfg.lock_wait(),
    )  # fmt: skip
    ds = open_dataset(cfg.dataset, cfg.dataset_root(), **cfg.dataset_options)
    modalities = list(cfg.modalities or ds.modalities)
    check_name("dataset", ds.name)  # the cache tree's reserved names ("runs", hidden names), before any work
    for m in modalities:
        ds.key(m)  # UserError naming the dataset's modalities
        check_name("modality", m)
    dist = D.init_from_env()  # one process: nothing to join
    dev = D.device_for(dist) if dist.world_size > 1 and cfg.device == "auto" else resolve_device(cfg.device)
    workers = default_workers(dev) if cfg.workers is None else cfg.workers
    # modalities without a kind carry precomputed vectors: no backbone
    kinds = {m: ds.kind(m) for m in modalities}
    names, weights = cfg.backbone_names(), cfg.weights_names()
    choice = {m: choose_backbone(m, k, names, weights) for m, k in kinds.items() if k is not None}
    summary = ExtractSummary(cfg.dataset, str(cfg.cache_root), str(dev))
    models = _backbones(modalities, cfg.splits, choice, kinds, dev, views=cfg.views, batch_size=cfg.batch_size,
                        workers=workers, rows_per_shard=cfg.rows_per_shard)  # fmt: skip
    for bb in models.values():
        arithmetic.prepare(bb, cfg.precision)
    report = progress if progress is not None and dist.is_main else _silent
    for m in modalities:
        for split in cfg.splits:
            part = _Part(
                cfg,
                ds,
                m,
                split,
                models[choice[m]] if m in choice else None,
                workers,
                split_views(cfg.views, cfg.views_seed, m, kinds[m], split),
                report,
                summary,
            )
            summary.parts.append(_extract_part(part))
    return summary


@dataclass(frozen=True)
class _Part:
    """One (modality, split) of an extraction: the settings, what encodes it and where it reports."""

    cfg: ExtractConfig
    ds: Any  # the opened dataset (pcmpipe.datasets)
    m: str
    split: str
    backbone: Backbone | None  # None: the dataset's own vectors
    workers: int  # resolved from cfg.workers and the device
    views: ViewSpec | None
    report: ExtractProgress
    summary: ExtractSummary

    @property
    def task(self) -> str:
        """How progress names the part: 'flickr8k I train'."""
        return f"{self.ds.name} {self.m} {self.split}"

    @property
    def where(self) -> str:
        """How messages name the part's cache: 'cache flickr8k/I/train'."""
        return f"cache {self.ds.name}/{self.m}/{self.split}"


def _backbones(
    modalities: list[str],
    splits: Sequence[str],
    choice: dict[str, tuple[str, str, str]],
    kinds: dict[str, str | None],
    dev: str | torch.device,
    **sizes: int,
) -> dict[tuple[str, str, str], Backbone]:
    """Every backbone the run needs (T and P share one text tower), each checked against this machine's memory
    with the settings it runs with, before any split is read (`bounds.check_memory_use`)."""
    models: dict[tuple[str, str, str], Backbone] = {}
    for m in modalities:
        if m not in choice:
            continue
        if choice[m] not in models:
            name, w, kind = choice[m]
            models[choice[m]] = create_backbone(name, w, device=dev, kind=kind)
        views = sizes["views"]
        k = max((v.k for s in splits if (v := split_views(views, 0, m, kinds[m], s)) is not None), default=0)
        bounds.check_memory_use(
            models[choice[m]],
            views=k,
            batch_size=sizes["batch_size"],
            workers=sizes["workers"],
            rows_per_shard=sizes["rows_per_shard"],
        )
    return models


def _silent(task: str, done: int, total: int) -> None:
    """The progress callback of a caller that asked for none (and of ranks other than 0)."""


def _extract_part(p: _Part) -> PartSummary:
    started = time.perf_counter()
    cfg = p.cfg
    # the listing, or this rank's shards of a streamed dataset, in blocks that become one cache shard each
    source = record_source(p.ds, p.m, p.split, cfg.limit, block=cfg.rows_per_shard)
    spec = split_spec(
        p.ds, p.m, p.split, source.listed, p.backbone, cache_root=Path(cfg.cache_root), fmt=cfg.fmt,
        limit=cfg.limit, options=cfg.dataset_options, dtype=cfg.dtype, listing=source.listing, views=p.views,
    )  # fmt: skip
    if source.rows:  # a streamed dataset does not know its rows before reading them
        bounds.check_disk(spec.directory, source.rows, spec.features, p.where)
    with contextlib.ExitStack() as held:
        if D.is_main():  # one lock per split; the other ranks wait for rank 0's verdict below
            held.enter_context(exclusive(spec.directory, p.where, wait=cfg.lock_wait()))
        return _write_part(p, source, spec, started)


def _write_part(p: _Part, source: RecordSource, spec: SplitSpec, started: float) -> PartSummary:
    """Encode one split into its cache, under the split's lock (held by the caller on rank 0)."""
    directory = spec.directory
    rebuilt = _clear_stale(p.cfg, spec)
    name = p.backbone.name if p.backbone is not None else "vectors"
    part = PartSummary(p.m, p.split, name, "rebuilt" if rebuilt else "new", directory=str(directory), reason=rebuilt)
    total = source.rows or 0
    meter = PaddingMeter()
    with ShardWriter(
        directory,
        features=spec.features,
        key=spec.key,
        links=spec.links,
        meta=spec.meta,
        fmt=spec.fmt,
        rows_per_shard=p.cfg.rows_per_shard,
        rank=D.writer_rank(),
        expected_rows=source.rows,
        listing=spec.listing,
        lock=False,  # held above, around the reuse check too
        origin="synthetic" if (Path(p.ds.root) / SYNTHETIC_MARKER).is_file() else "real",
    ) as writer:
        writer.record_data_root(p.ds.root)
        if writer.complete:  # every rank sees the same merged manifest, so all of them return here
            part.status, part.rows = "cached", writer.num_rows
            part.skipped = len(read_errors(directory))
            p.report(p.task, total, total)
            part.seconds = time.perf_counter() - started
            return part
        if writer.done_ids:
            part.status = "resumed"
        errors: list[dict] = []
        try:
            _encode_into(p, writer, source, spec, part, meter, errors)
            if not D.is_distributed():  # every input seen: the errors file is final, listed in the manifest
                write_errors(directory, errors)
                writer.add_side_file(ERRORS_FILE)
        finally:
            if not D.is_distributed():  # interrupted: list what was skipped so far (not final, not listed)
                write_errors(directory, errors)
    if D.is_distributed():
        D.finish_part(directory)
        errors = [e for rank_errors in D.gather_objects(errors) for e in rank_errors]
        if D.is_main():
            write_errors(directory, errors)
        part.rows = load_manifest(manifest_in(directory))["num_rows"]
    else:
        part.rows = writer.num_rows
    part.skipped = len(errors)
    part.padding = meter.fraction
    part.seconds = time.perf_counter() - started
    p.summary.errors.extend(errors)
    return part


def _clear_stale(cfg: ExtractConfig, spec: SplitSpec) -> str:
    """Whether the split's cache may be reused: rank 0 deletes one to rebuild (returning why) or refuses one
    built with other settings unless `cfg.overwrite`; the other ranks wait for its verdict."""
    directory = spec.directory
    problem, rebuilt = None, ""
    if D.is_main():  # one process decides (and deletes what is rebuilt); the others wait for its verdict
        hide_legacy_names(directory)  # a cache written before its files were hidden: same shards, hidden names
        plan = compare(spec)
        if plan.action == "refuse" and not cfg.overwrite:
            problem = f"{plan.reason}; use another --cache-root or --overwrite to rebuild it"
        elif plan.action in ("rebuild", "refuse"):  # refuse with overwrite: the user asked for a fresh cache
            refuse_link(directory, "extract (rebuilding a split)")
            shutil.rmtree(directory)  # the lock file lies beside the directory: the lock stays held
            rebuilt = plan.reason if plan.action == "rebuild" else ""
    problem = D.gather_objects(problem)[0]  # also the barrier after a deletion
    if problem:
        raise UserError(problem)
    return rebuilt


def _encode_into(
    p: _Part,
    writer: ShardWriter,
    source: RecordSource,
    spec: SplitSpec,
    part: PartSummary,
    meter: PaddingMeter,
    errors: list[dict],
) -> None:
    """Encode the records the writer has not got, one block (one shard) at a time; skipped inputs go to
    `errors` (the first one ends the run with --strict)."""
    task, total, done = p.task, source.rows or 0, len(writer.done_ids)
    p.report(task, done, total)
    shape = spec.features[FEATURE][0]
    items = (
        item
        for pending in source.chunks(writer.done_ids)  # one block at a time, then its shard is written
        for item in itertools.chain(_batches(p, pending, shape, meter), (_BLOCK_END,))
    )
    for item in items:
        if isinstance(item, _BlockEnd):  # a block is one shard, even when skipped inputs left it short
            writer.end_shard()
            continue
        if isinstance(item, Skipped):
            err = {"modality": p.m, "split": p.split, "id": item.record.id, "reason": item.reason}
            if item.record.path is not None:
                err["path"] = str(item.record.path)
            errors.append(err)
            done += 1
            p.report(task, done, total)
            if p.cfg.strict:
                raise UserError(
                    f"{task} id {item.record.id}: {item.reason} "
                    "(--strict stops at the first bad input; drop it to skip and list them)"
                )
            continue
        arrays = {FEATURE: item.features}
        if item.views is not None:
            arrays[VIEWS_FEATURE] = item.views
        links = spec.links
        writer.add([r.id for r in item.records], {c: [r.links[c] for r in item.records] for c in links}, arrays)
        part.new_rows += len(item.records)
        part.decode_fallback += item.fallback
        done += len(item.records)
        p.report(task, done, total)


def _batches(p: _Part, records: list, shape: tuple[int, ...], meter: PaddingMeter) -> Iterator[Encoded | Skipped]:
    backbone, batch_size = p.backbone, p.cfg.batch_size
    if backbone is None:
        yield from vector_batches(records, shape)
    elif backbone.modality_kind == "image":
        yield from image_batches(backbone, records, batch_size, p.workers, p.views)
    elif backbone.modality_kind == "text":
        yield from text_batches(backbone, records, batch_size, p.views)
    else:
        yield from audio_batches(backbone, records, batch_size, p.workers, meter, p.cfg.max_padding)
