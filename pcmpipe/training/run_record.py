"""The records a run directory holds about itself, as pydantic models that document the formats:
`RunRecord` (config.json, written by `record_config`) and `EmbeddingRows` (embeddings/<m>.json).

pcmpipe.training.rundir reads them back through pcmpipe.readback (bounded size and nesting) and these models, so
a damaged or crafted file is one line naming it; import them from there (`rundir.RunRecord`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field


class EmbeddingRows(BaseModel):
    """embeddings/<m>.json: what each row of embeddings/<m>.safetensors is."""

    model_config = ConfigDict(extra="allow")
    key: str = Field(description="the modality's key column (image_id, caption_id, class_id, ...)")
    columns: dict[str, list[str]] = Field(
        description="column -> one value per row: `id`, the key column and the link columns, rows as in the tensor"
    )


def software_versions() -> dict:
    """The versions that can change a run's numbers, for its record."""
    import platform

    import numpy

    from pcmpipe.version import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pcmpipe": __version__,
    }


def _data_origin(caches: dict) -> str | None:
    """'synthetic' when any cache the run reads is, 'real' when every one says real, else None (not recorded)."""
    from pcmpipe.cache.layout import manifest_in
    from pcmpipe.cache.manifest import load_manifest
    from pcmpipe.cache.reader import data_origin

    dirs = [c.get("path") for split in caches.values() if isinstance(split, dict) for c in split.values()]
    found = {data_origin(load_manifest(manifest_in(d))) if d and manifest_in(d).is_file() else None for d in dirs}
    return "synthetic" if "synthetic" in found else "real" if found == {"real"} else None


def record_config(
    cfg, fingerprint: str, caches: dict, shapes: dict, base: list, samples: dict, device, **extra: Any
) -> dict[str, Any]:
    """config.json of a run: resolved settings, fingerprint, the caches it read, shapes, sizes, versions.
    `extra` adds a recipe's own entries (fine-tuning: stage, backbones)."""
    return {
        "config": cfg.to_dict(),
        # the cache root resolved, so `pcmpipe evaluate` finds the cache from any working directory
        "cache_root_resolved": str(Path(cfg.cache_root).resolve()),
        "seed": cfg.seed,
        "fingerprint": fingerprint,
        "caches": caches,
        "data_origin": _data_origin(caches),
        **extra,
        "shapes": {m: list(s) for m, s in shapes.items()},
        "base": base,
        "samples": samples,
        "device": str(device),
        "versions": software_versions(),
    }


class RecordedSettings(BaseModel):
    """config.json's "config": the run's resolved settings (TrainConfig or FinetuneConfig, pcmpipe.config). Only
    what readers rely on is checked here; a setting added by a later pcmpipe passes through."""

    model_config = ConfigDict(extra="allow")
    dataset: str = Field(description="the cached dataset the run trained on")
    modalities: list[str] = Field(description="the modalities it coordinates, in head order")
    split_train: str = Field("train", description="cached split it trained on")
    split_val: str = Field("val", description="cached split of early stopping")
    split_test: str = Field("test", description="cached split of the final metrics")
    cache_root: str = Field("cache", description="the cache root as given (often relative)")


class RecordedCache(BaseModel):
    """config.json's caches[split][modality]: the cache a run read."""

    model_config = ConfigDict(extra="allow")
    path: str | None = Field(None, description="the cache directory; None for a fine-tuned (live) modality")
    fingerprint: str | None = Field(None, description="its manifest fingerprint; `finetuned:<run>:<m>` when live")
    rows: int | None = Field(None, description="rows in the cache")
    views: int | None = Field(None, description="augmented views per row (`extract --views K`)")
    live: bool = Field(False, description="fine-tuning: the modality's tower was trained, no cache was read")


class RunRecord(BaseModel):
    """A run directory's config.json (`record_config`): what was trained, on which caches, with what. Read back
    through `run_record` / `run_config`; a file that is not this shape is one line naming it."""

    model_config = ConfigDict(extra="allow")
    config: RecordedSettings = Field(description="the resolved settings (every setting spelled out)")
    fingerprint: str = Field(description="the config fingerprint (pcmpipe.config.config_fingerprint)")
    seed: int | None = Field(None, description="the seed (also in config)")
    cache_root_resolved: str | None = Field(None, description="the cache root as an absolute path")
    caches: dict[str, dict[str, RecordedCache]] = Field(default_factory=dict, description="split -> modality -> cache")
    data_origin: str | None = Field(None, description="synthetic | real | None (not known)")
    stage: str | None = Field(None, description="finetune for a fine-tuned run, else absent")
    backbones: dict[str, dict[str, Any]] = Field(default_factory=dict, description="fine-tuning: m -> its tower")
    shapes: dict[str, list[int]] = Field(default_factory=dict, description="modality -> cached feature shape")
    base: list[str] = Field(default_factory=list, description="the modalities whose rows are the samples")
    samples: dict[str, int] = Field(default_factory=dict, description="split -> training samples")
    device: str | None = Field(None, description="the device it trained on")
    versions: dict[str, str] = Field(default_factory=dict, description="python, torch, numpy, pcmpipe")
    argv: list[str] | None = Field(None, description="the command line of the fresh start")
    stream_shards: list[list[str]] | None = Field(None, description="streamed: each rank's shards, in order")
