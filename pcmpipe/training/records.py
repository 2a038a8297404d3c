"""The `config.json` of a finished run directory and of a folder written by `pcmpipe export`, as pydantic models.

These models are the documentation of both formats, and every reader of a run's config.json outside training
(`load_run`, `embed`, `search`, `evaluate`, `export`) goes through `read_record`. The file may have been
damaged, hand-edited or crafted: it is read bounded (size, nesting) by `pcmpipe.readback`, and a missing key or
a string where a mapping belongs is one line naming the field, never a KeyError or TypeError deep inside.

A run directory's config.json holds more than `RunRecordView` describes (samples, versions, ...); the view
names the keys these readers use and lets the rest through. Torch-free, so the CLI can check a modality name
before it imports the heavy modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pcmpipe.errors import UserError
from pcmpipe.readback import read_json, validate

EXPORT_KIND = "pcmpipe-heads"  # config.json "kind" of an exported folder
# Modality names also key the heads' state dict (no "."); a name is never a path.
Modality = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)]


class _Open(BaseModel):
    """Keys the readers do not use are kept, not refused: the files also serve the report and provenance."""

    model_config = ConfigDict(extra="allow")


class CacheRef(_Open):
    """One cache a run read, per split and modality (config.json `caches.<split>.<modality>`)."""

    path: str | None = Field(None, description="the cache directory as read; None for a fine-tuned tower's features")
    fingerprint: str | None = Field(None, description="the cache's fingerprint when the run read it")
    rows: int | None = Field(None, ge=0, description="rows the run read from it")


class Settings(_Open):
    """The resolved settings a run was trained with (`TrainConfig` / `FinetuneConfig`, every key)."""

    dataset: str = Field(description="the dataset the run trained on")
    modalities: list[Modality] = Field(min_length=1, description="the run's modalities, e.g. ['I', 'T']")
    loss: str = Field(description="pcmc or pcmr")
    split_train: str = Field("train", description="the cached split trained on")
    split_test: str = Field("test", description="the cached split scored at the end")
    cache_root: str = Field("cache", description="the cache root as given (often relative)")
    eval_batch: int = Field(4096, ge=1, le=1 << 24, description="rows per pass through a head when scoring")


class LiveTower(_Open):
    """A backbone fine-tuning unfroze (config.json `backbones.<modality>`); its weights are in the run."""

    name: str = Field(description="the backbone's name, e.g. clip-vit-b32-image")
    kind: Literal["image", "text", "audio"] = Field(
        description="which tower: its weights file is `<kind>_backbone.safetensors` in the run directory"
    )


class RunRecordView(_Open):
    """A run directory's config.json (rundir.record_config), the keys `load_run` and `evaluate` read."""

    config: Settings = Field(description="the resolved settings")
    fingerprint: str = Field(description="sha256 of the settings that change the numbers")
    caches: dict[str, dict[Modality, CacheRef]] = Field(
        default_factory=dict, description="split -> modality -> the cache read"
    )
    backbones: dict[Modality, LiveTower] = Field(
        default_factory=dict, description="fine-tuning only: the unfrozen towers"
    )
    cache_root_resolved: str | None = Field(None, description="the cache root, absolute")


class BackboneRef(_Open):
    """How to rebuild the backbone a modality's features came from (export config.json `backbones.<modality>`)."""

    backbone: str = Field(description="a registered backbone name or FAMILY:MODEL")
    weights: str = Field(
        max_length=512,
        description="a file inside the export folder (a fine-tuned tower), or a known weights name: default, "
        "an open_clip pretrained tag, hf:ORG/NAME, random[:SEED]; never a path outside the folder",
    )
    weights_sha256: str | None = Field(None, description="sha256 of the tower's tensors; checked when it is built")


class ExportRecord(_Open):
    """An exported folder's config.json (`pcmpipe export`)."""

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
    training_config: Settings = Field(description="the run's resolved settings")
    caches: dict[str, dict[Modality, CacheRef]] = Field(
        default_factory=dict, description="split -> modality -> fingerprint and rows of the caches trained on"
    )
    pcmpipe_version: str = Field(description="the pcmpipe that wrote the export")


def read_record(path: str | Path) -> RunRecordView | ExportRecord:
    """The validated config.json of a run directory or an exported folder; one UserError line otherwise."""
    path = Path(path)
    file = path / "config.json"
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a run directory or an exported run")
    if not file.is_file():
        raise UserError(f"{path} is not a run directory or an exported run (no config.json)")
    value: Any = read_json(file, "run config")
    if not isinstance(value, dict):
        raise UserError(f"run config {file} holds a JSON {type(value).__name__}, not an object; it is damaged")
    if value.get("kind") == EXPORT_KIND:
        return validate(ExportRecord, value, f"export config {file}")
    return validate(RunRecordView, value, f"run config {file}")


def settings_of(record: RunRecordView | ExportRecord) -> Settings:
    return record.training_config if isinstance(record, ExportRecord) else record.config


def modalities_of(record: RunRecordView | ExportRecord) -> list[str]:
    """The modalities a run or export has heads for."""
    return list(record.modalities) if isinstance(record, ExportRecord) else list(record.config.modalities)
