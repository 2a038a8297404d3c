"""What a run directory and an exported run say about themselves, as pydantic models that document the formats:
`RunRecord` (a run's config.json, written by `record_config`), `ExportRecord` (an export's config.json, written by
`pcmpipe export`) and `EmbeddingRows` (embeddings/<m>.json).

Every reader goes through these models and pcmpipe.readback (bounded size and nesting): the files may have been
damaged, hand-edited or crafted, and a missing key or a string where a mapping belongs is one line naming the
field, never a KeyError deep inside. `read_record` reads either config.json, `run_record` / `run_config` a run's
(compared with its files.json where it has one). Torch is imported only to record versions, so the CLI can check a
modality name before the heavy imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pcmpipe import readback
from pcmpipe.errors import UserError
from pcmpipe.training.rundir.files import CONFIG, read_json, validated
from pcmpipe.training.rundir.manifest import verify

EXPORT_KIND = "pcmpipe-heads"  # config.json "kind" of an exported folder
# Modality names also key the heads' state dict (no "."); a name is never a path.
Modality = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)]


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
    import torch

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
    modalities: list[Modality] = Field(min_length=1, description="the modalities it coordinates, in head order")
    loss: str = Field("pcmc", description="pcmc or pcmr")
    split_train: str = Field("train", description="cached split it trained on")
    split_val: str = Field("val", description="cached split of early stopping")
    split_test: str = Field("test", description="cached split of the final metrics")
    cache_root: str = Field("cache", description="the cache root as given (often relative)")
    eval_batch: int = Field(4096, ge=1, le=1 << 24, description="rows per pass through a head when scoring")


class RecordedCache(BaseModel):
    """config.json's caches[split][modality]: the cache a run read."""

    model_config = ConfigDict(extra="allow")
    path: str | None = Field(None, description="the cache directory; None for a fine-tuned (live) modality")
    fingerprint: str | None = Field(None, description="its manifest fingerprint; `finetuned:<run>:<m>` when live")
    rows: int | None = Field(None, ge=0, description="rows in the cache")
    views: int | None = Field(None, description="augmented views per row (`extract --views K`)")
    live: bool = Field(False, description="fine-tuning: the modality's tower was trained, no cache was read")


class LiveTower(BaseModel):
    """A backbone fine-tuning unfroze (config.json `backbones.<modality>`); its weights are in the run."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="the backbone's name, e.g. clip-vit-b32-image")
    kind: Literal["image", "text", "audio"] = Field(
        description="which tower: its weights file is `<kind>_backbone.safetensors` in the run directory"
    )


class RunRecord(BaseModel):
    """A run directory's config.json (`record_config`): what was trained, on which caches, with what. Read back
    through `run_record` / `run_config`; a file that is not this shape is one line naming it."""

    model_config = ConfigDict(extra="allow")
    config: RecordedSettings = Field(description="the resolved settings (every setting spelled out)")
    fingerprint: str = Field(description="the config fingerprint (pcmpipe.config.config_fingerprint)")
    seed: int | None = Field(None, description="the seed (also in config)")
    cache_root_resolved: str | None = Field(None, description="the cache root as an absolute path")
    caches: dict[str, dict[Modality, RecordedCache]] = Field(
        default_factory=dict, description="split -> modality -> cache"
    )
    data_origin: str | None = Field(None, description="synthetic | real | None (not known)")
    stage: str | None = Field(None, description="finetune for a fine-tuned run, else absent")
    backbones: dict[Modality, LiveTower] = Field(default_factory=dict, description="fine-tuning: the unfrozen towers")
    shapes: dict[str, list[int]] = Field(default_factory=dict, description="modality -> cached feature shape")
    base: list[str] = Field(default_factory=list, description="the modalities whose rows are the samples")
    samples: dict[str, int] = Field(default_factory=dict, description="split -> training samples")
    device: str | None = Field(None, description="the device it trained on")
    versions: dict[str, str] = Field(default_factory=dict, description="python, torch, numpy, pcmpipe")
    argv: list[str] | None = Field(None, description="the command line of the fresh start")
    stream_shards: list[list[str]] | None = Field(None, description="streamed: each rank's shards, in order")


class BackboneRef(BaseModel):
    """How to rebuild the backbone a modality's features came from (export config.json `backbones.<modality>`)."""

    model_config = ConfigDict(extra="allow")

    backbone: str = Field(description="a registered backbone name or FAMILY:MODEL")
    weights: str = Field(
        max_length=512,
        description="a file inside the export folder (a fine-tuned tower), or a known weights name: default, "
        "an open_clip pretrained tag, hf:ORG/NAME, random[:SEED]; never a path outside the folder",
    )
    weights_sha256: str | None = Field(None, description="sha256 of the tower's tensors; checked when it is built")


class ExportRecord(BaseModel):
    """An exported folder's config.json (`pcmpipe export`)."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["pcmpipe-heads"] = Field(description="marks the folder as an export")
    run: str = Field(description="the run directory's name")
    modalities: list[Modality] = Field(min_length=1, description="the heads' modalities")
    shapes: dict[Modality, list[Annotated[int, Field(ge=1)]]] = Field(description="each head's input shape")
    dim: int = Field(ge=1, description="the embeddings' dimension")
    logit_scale: float = Field(description="the trained logit scale")
    backbones: dict[Modality, BackboneRef | None] = Field(
        description="modality -> its backbone, or None for vectors (imported, attributes)"
    )
    fingerprint: str = Field(description="the run's fingerprint")
    training_config: RecordedSettings = Field(description="the run's resolved settings")
    caches: dict[str, dict[Modality, RecordedCache]] = Field(
        default_factory=dict, description="split -> modality -> fingerprint and rows of the caches trained on"
    )
    pcmpipe_version: str = Field(description="the pcmpipe that wrote the export")


def read_record(path: str | Path) -> RunRecord | ExportRecord:
    """The validated config.json of a run directory or an exported folder; one UserError line otherwise."""
    path = Path(path)
    file = path / CONFIG
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a run directory or an exported run")
    if not file.is_file():
        raise UserError(f"{path} is not a run directory or an exported run (no config.json)")
    verify(path, CONFIG)  # a run's files.json (an export has none)
    value: Any = readback.read_json(file, "run config")
    if not isinstance(value, dict):
        raise UserError(f"run config {file} holds a JSON {type(value).__name__}, not an object; it is damaged")
    if value.get("kind") == EXPORT_KIND:
        return readback.validate(ExportRecord, value, f"export config {file}")
    return readback.validate(RunRecord, value, f"run config {file}")


def settings_of(record: RunRecord | ExportRecord) -> RecordedSettings:
    return record.training_config if isinstance(record, ExportRecord) else record.config


def modalities_of(record: RunRecord | ExportRecord) -> list[str]:
    """The modalities a run or export has heads for."""
    return list(record.modalities) if isinstance(record, ExportRecord) else list(record.config.modalities)


def _read_record(run_dir: str | Path) -> tuple[dict[str, Any], RunRecord]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    verify(run_dir, CONFIG)
    value = read_json(path, "run config")
    return value, validated(RunRecord, value, f"run config {path}")


def run_record(run_dir: str | Path) -> RunRecord:
    """The config.json of a run, validated (`RunRecord`); one UserError line when absent, damaged or crafted."""
    return _read_record(run_dir)[1]


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config.json of a run as plain data (resolved settings under "config"), checked to be a `RunRecord`."""
    return _read_record(run_dir)[0]
