"""How a run loads its training split: in memory or streamed, decided once when it starts (`resolve_stream`).

The mode is the `stream` setting: `true` streams, `false` loads, and the default `null` streams when the
training split's features (as held: fp16 caches at 2 bytes a value) exceed `memory_budget_mb`. The two modes
draw another shuffled order (a permutation of the whole split against seeded windows of shards), so the mode a
run used is part of its fingerprint: `stream` resolves to True (streamed) or None (in memory, the value every
run had before streaming existed, which the fingerprint leaves out), and `stream: false` fingerprints as the
in-memory run it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcmpipe.samples.memory import SplitData, load_split
from pcmpipe.samples.rowstore import memory_dtype
from pcmpipe.samples.stream import StreamedSplit


def held_bytes(cache_root: str | Path, dataset: str, modalities: list[str], split: str) -> int:
    """Bytes a split's features take in memory (fp16 caches at 2 bytes a value), from the manifests alone."""
    from pcmpipe.cache.reader import read_manifest

    total = 0
    for m in modalities:
        manifest = read_manifest(cache_root, dataset, m, split)
        if manifest is None:
            continue  # reported, with the command that makes it, when the split is opened
        for f in manifest["features"].values():
            total += manifest["num_rows"] * int(np.prod(f["shape"])) * np.dtype(memory_dtype(f["dtype"])).itemsize
    return total


def resolve_stream(cfg):
    """The config with its loading mode decided: `stream` True (streamed) or None (in memory)."""
    stream = cfg.stream
    if stream is None:
        stream = auto_streams(cfg)
    return cfg.model_copy(update={"stream": True if stream else None})


def auto_streams(cfg) -> bool:
    """Whether `stream: null` streams this config's training split: its features exceed `memory_budget_mb`."""
    return held_bytes(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_train) > cfg.memory_budget_mb * 2**20


def load_training(cfg) -> SplitData | StreamedSplit:
    """The training split of a resolved config (`resolve_stream`): streamed, or in memory (fp16 stays fp16)."""
    if cfg.stream:
        return StreamedSplit(
            cfg.cache_root,
            cfg.dataset,
            cfg.modalities,
            cfg.split_train,
            seed=cfg.seed,
            shuffle=cfg.shuffle,
            buffer_rows=cfg.shuffle_buffer,
            # looked-up modalities within half the budget stay in memory; the window and the rest use the other half
            resident_bytes=int(cfg.memory_budget_mb * 2**20) // 2,
            spill_dir=cfg.spill_dir,
            views=cfg.cached_views,
        )
    split = load_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_train, half=True, views=cfg.cached_views)
    split.shuffle, split.view_seed = cfg.shuffle, cfg.seed  # the seed also draws each epoch's views
    return split
