"""Stage one: dataset records -> backbone -> feature shards, resumable at any point (`pcmpipe extract`).

    summary = extract("flickr8k", "data/flickr8k", modalities=["I", "T", "S"], cache_root="cache")

Per (modality, split) the cache `cache_root/dataset/modality/split` is written by one `ShardWriter`:
  * a complete cache with the same fingerprint is skipped without reading any input;
  * otherwise ids in finished shards (`done_ids`) are skipped and the rest encoded, so a run killed at any
    moment (SIGKILL included) and started again ends with exactly the rows of an uninterrupted run;
  * a cache built with other settings (weights, preprocessing, precision, format, limit) is never mixed
    in: UserError, unless `overwrite=True`, which deletes that one cache directory and rebuilds it.
Inputs that cannot be encoded are skipped and listed in `.errors.jsonl` beside the manifest (or, with
`strict=True`, the first one ends the run with a UserError).

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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from pcmpipe import distributed as D
from pcmpipe.augment.views import VIEWS_FEATURE, ViewSpec
from pcmpipe.backbones import Backbone, create_backbone, resolve_device
from pcmpipe.backbones.hubert import HubertBackbone
from pcmpipe.cache.layout import check_name, manifest_in, refuse_link
from pcmpipe.cache.lock import exclusive
from pcmpipe.cache.manifest import hide_legacy_names, load_manifest
from pcmpipe.cache.writer import FORMATS, ShardWriter
from pcmpipe.datasets import SPLITS, open_dataset
from pcmpipe.datasets.synthetic import SYNTHETIC_MARKER
from pcmpipe.errors import UserError
from pcmpipe.extract import bounds
from pcmpipe.extract.batching import PaddingMeter
from pcmpipe.extract.plan import FEATURE, SplitSpec, choose_backbone, compare, split_spec, split_views
from pcmpipe.extract.record_source import RecordSource, record_source
from pcmpipe.extract.sources import (
    SPEECH_MAX_PADDING,
    Encoded,
    Skipped,
    audio_batches,
    image_batches,
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
STORED_DTYPES = ("float32", "float16")  # encoders compute in float32 (autocast on CUDA); float16 halves the cache


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


def extract(
    dataset: str,
    root: str | Path,
    *,
    modalities: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    backbones: Mapping[str, str] | None = None,
    weights: Mapping[str, str] | None = None,
    device: str = "auto",
    fmt: str = "parquet",
    batch_size: int = 64,
    workers: int | None = None,
    cache_root: str | Path = "cache",
    strict: bool = False,
    limit: int | None = None,
    overwrite: bool = False,
    rows_per_shard: int = 4096,
    dataset_options: Mapping | None = None,
    max_padding: float | None = SPEECH_MAX_PADDING,
    dtype: str = "float32",
    progress: ExtractProgress | None = None,
    lock_wait: bool | float = True,
    views: int = 0,
    views_seed: int = 0,
) -> ExtractSummary:
    """Extract every requested (modality, split) of `dataset` into `cache_root`; returns the summary.

    backbones / weights: keyed by modality ('I', 'T', 'P', 'S') or kind ('image', 'text', 'audio'), the
    modality winning; missing entries take the paper's backbone and 'default' weights. limit: only the
    first `limit` records (by id) of each (modality, split), recorded in the fingerprint. max_padding: at
    most this fraction of each speech batch is padding (in [0, 1); None: no bound); features do not depend on
    it (HuBERT's padding is masked), only the speed does, so it is not part of the fingerprint. dtype: how the
    features are stored, float32 or float16 (half the bytes; part of the fingerprint).
    progress(task, done, total) is called as items finish ('flickr8k I train', rows done, rows of this
    process); under torchrun only rank 0 reports. lock_wait: another job writing the same split is waited for
    (True), refused at once (False) or waited for that many seconds, then refused in one line.
    views: K augmented views (timm images, EDA captions, seeded by views_seed, item id and view) of every image
    and caption of the train split, stored beside the clean features (`plan.split_views`; docs/extraction.md).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype not in STORED_DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(STORED_DTYPES)}, got {dtype!r}")
    bounds.check_settings(
        batch_size=batch_size, workers=workers, rows_per_shard=rows_per_shard, limit=limit, views=views,
        max_padding=max_padding, lock_wait=lock_wait,
    )  # fmt: skip
    ds = open_dataset(dataset, root, **dict(dataset_options or {}))
    modalities = list(modalities or ds.modalities)
    splits = list(splits or SPLITS)
    check_name("dataset", ds.name)  # the cache tree's reserved names ("runs", hidden names), before any work
    for m in modalities:
        ds.key(m)  # UserError naming the dataset's modalities
        check_name("modality", m)
    for s in splits:
        if s not in SPLITS:
            raise UserError(f"unknown split {s!r}; choose from {', '.join(SPLITS)}")
    dist = D.init_from_env()  # one process: nothing to join
    dev = D.device_for(dist) if dist.world_size > 1 and device == "auto" else resolve_device(device)
    workers = default_workers(dev) if workers is None else workers
    # modalities without a kind carry precomputed vectors: no backbone
    kinds = {m: ds.kind(m) for m in modalities}
    choice = {m: choose_backbone(m, k, backbones or {}, weights or {}) for m, k in kinds.items() if k is not None}
    summary = ExtractSummary(dataset, str(cache_root), str(dev))
    models = _backbones(modalities, splits, choice, kinds, dev, views=views, batch_size=batch_size,
                        workers=workers, rows_per_shard=rows_per_shard)  # fmt: skip
    report = progress if progress is not None and dist.is_main else _silent
    for m in modalities:
        for split in splits:
            backbone = models[choice[m]] if m in choice else None
            part = _extract_part(
                ds,
                m,
                split,
                backbone,
                report=report,
                summary=summary,
                fmt=fmt,
                batch_size=batch_size,
                workers=workers,
                cache_root=Path(cache_root),
                strict=strict,
                limit=limit,
                overwrite=overwrite,
                rows_per_shard=rows_per_shard,
                dataset_options=dict(dataset_options or {}),
                max_padding=max_padding,
                lock_wait=lock_wait,
                dtype=dtype,
                views=split_views(views, views_seed, m, kinds[m], split),
            )
            summary.parts.append(part)
    return summary


def _backbones(
    modalities: list[str],
    splits: list[str],
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


def _extract_part(
    ds,
    m: str,
    split: str,
    backbone: Backbone | None,
    *,
    report: ExtractProgress,
    summary: ExtractSummary,
    fmt: str,
    batch_size: int,
    workers: int,
    cache_root: Path,
    strict: bool,
    limit: int | None,
    overwrite: bool,
    rows_per_shard: int,
    dataset_options: dict,
    max_padding: float | None,
    lock_wait: bool | float,
    dtype: str = "float32",
    views: ViewSpec | None = None,
) -> PartSummary:
    started = time.perf_counter()
    # the listing, or this rank's shards of a streamed dataset, in blocks that become one cache shard each
    source = record_source(ds, m, split, limit, block=rows_per_shard)
    spec = split_spec(
        ds, m, split, source.listed, backbone, cache_root=cache_root, fmt=fmt, limit=limit,
        options=dataset_options, dtype=dtype, listing=source.listing, views=views,
    )  # fmt: skip
    name = backbone.name if backbone is not None else "vectors"
    if source.rows:  # a streamed dataset does not know its rows before reading them
        bounds.check_disk(spec.directory, source.rows, spec.features, f"cache {ds.name}/{m}/{split}")
    with contextlib.ExitStack() as held:
        if D.is_main():  # one lock per split; the other ranks wait for rank 0's verdict below
            held.enter_context(exclusive(spec.directory, f"cache {ds.name}/{m}/{split}", wait=lock_wait))
        return _write_part(
            ds, m, split, backbone, source, spec, name, started, report=report, summary=summary,
            batch_size=batch_size, workers=workers, strict=strict, overwrite=overwrite,
            rows_per_shard=rows_per_shard, max_padding=max_padding, views=views,
        )  # fmt: skip


def _write_part(
    ds,
    m: str,
    split: str,
    backbone: Backbone | None,
    source: RecordSource,
    spec: SplitSpec,
    name: str,
    started: float,
    *,
    report: ExtractProgress,
    summary: ExtractSummary,
    batch_size: int,
    workers: int,
    strict: bool,
    overwrite: bool,
    rows_per_shard: int,
    max_padding: float | None,
    views: ViewSpec | None = None,
) -> PartSummary:
    """Encode one split into its cache, under the split's lock (held by the caller on rank 0)."""
    directory, key, links, features, fmt = spec.directory, spec.key, spec.links, spec.features, spec.fmt
    meta = spec.meta
    problem, rebuilt = None, ""
    if D.is_main():  # one process decides (and deletes what is rebuilt); the others wait for its verdict
        hide_legacy_names(directory)  # a cache written before its files were hidden: same shards, hidden names
        plan = compare(spec)
        if plan.action == "refuse" and not overwrite:
            problem = f"{plan.reason}; use another --cache-root or --overwrite to rebuild it"
        elif plan.action in ("rebuild", "refuse"):  # refuse with overwrite: the user asked for a fresh cache
            refuse_link(directory, "extract (rebuilding a split)")
            shutil.rmtree(directory)  # the lock file lies beside the directory: the lock stays held
            rebuilt = plan.reason if plan.action == "rebuild" else ""
    problem = D.gather_objects(problem)[0]  # also the barrier after a deletion
    if problem:
        raise UserError(problem)
    part = PartSummary(m, split, name, "rebuilt" if rebuilt else "new", directory=str(directory), reason=rebuilt)
    task, total = f"{ds.name} {m} {split}", source.rows or 0
    errors: list[dict] = []
    meter = PaddingMeter()
    with ShardWriter(
        directory,
        features=features,
        key=key,
        links=links,
        meta=meta,
        fmt=fmt,
        rows_per_shard=rows_per_shard,
        rank=D.writer_rank(),
        expected_rows=source.rows,
        listing=spec.listing,
        lock=False,  # held above, around the reuse check too
        origin="synthetic" if (Path(ds.root) / SYNTHETIC_MARKER).is_file() else "real",
    ) as writer:
        writer.record_data_root(ds.root)
        if writer.complete:  # every rank sees the same merged manifest, so all of them return here
            part.status, part.rows = "cached", writer.num_rows
            part.skipped = len(read_errors(directory))
            report(task, total, total)
            part.seconds = time.perf_counter() - started
            return part
        if writer.done_ids:
            part.status = "resumed"
        done = len(writer.done_ids)
        report(task, done, total)
        shape = features[FEATURE][0]
        items = (
            item
            for pending in source.chunks(writer.done_ids)  # one block at a time, then its shard is written
            for item in itertools.chain(
                _batches(backbone, pending, shape, batch_size, workers, meter, max_padding, views), (_BLOCK_END,)
            )
        )
        try:
            for item in items:
                if isinstance(item, _BlockEnd):  # a block is one shard, even when skipped inputs left it short
                    writer.end_shard()
                    continue
                if isinstance(item, Skipped):
                    err = {"modality": m, "split": split, "id": item.record.id, "reason": item.reason}
                    if item.record.path is not None:
                        err["path"] = str(item.record.path)
                    errors.append(err)
                    done += 1
                    report(task, done, total)
                    if strict:
                        raise UserError(
                            f"{ds.name} {m} {split} id {item.record.id}: {item.reason} "
                            "(--strict stops at the first bad input; drop it to skip and list them)"
                        )
                    continue
                arrays = {FEATURE: item.features}
                if item.views is not None:
                    arrays[VIEWS_FEATURE] = item.views
                writer.add([r.id for r in item.records], {c: [r.links[c] for r in item.records] for c in links}, arrays)
                part.new_rows += len(item.records)
                done += len(item.records)
                report(task, done, total)
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
    summary.errors.extend(errors)
    return part


def _batches(
    backbone: Backbone | None,
    records: list,
    shape: tuple[int, ...],
    batch_size: int,
    workers: int,
    meter: PaddingMeter,
    max_padding: float | None,
    views: ViewSpec | None = None,
) -> Iterator[Encoded | Skipped]:
    if backbone is None:
        yield from vector_batches(records, shape)
    elif backbone.modality_kind == "image":
        yield from image_batches(backbone, records, batch_size, workers, views)
    elif backbone.modality_kind == "text":
        yield from text_batches(backbone, records, batch_size, views)
    else:
        assert isinstance(backbone, HubertBackbone)  # the registry's only audio backbone
        yield from audio_batches(backbone, records, batch_size, workers, meter, max_padding)
