"""Stage one's schema (`ExtractConfig`): every setting of `pcmpipe extract` once, with its type, choices and help.

The CLI builds its options from these fields (pcmpipe.cli.options), a pipeline's `data.<ds>.extract:` mapping is
validated against them, and `pcmpipe.extract.extract(cfg)` takes the object. Bounds that depend on the machine
(batch size, rows per shard, memory) are checked by `pcmpipe.extract.bounds` when extraction starts, with the
messages it has always given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from pcmpipe.backbones.registry import DEFAULT_BACKBONES
from pcmpipe.config.base import CommandLine, Settings
from pcmpipe.config.schema import csv_list

Format = Literal["parquet", "hdf5"]  # the cache's shard formats (pcmpipe.cache.writer.FORMATS)
StoredDtype = Literal["float32", "float16"]  # encoders compute in float32; float16 halves the cache
Split = Literal["train", "val", "test"]
BACKBONE_KINDS = tuple(DEFAULT_BACKBONES)
_CLIP_WEIGHTS = "default (openai) | open_clip tag | random[:SEED] | PATH"
# how a stored setting is written back as a flag, where its name is not the flag's (`to_cli_args`)
_EXTRACT_FLAGS = {"splits": "--split", "fmt": "--format"}


def _all_splits() -> list[Split]:
    return ["train", "val", "test"]


class ExtractConfig(Settings):
    """Everything that defines a stage-one extraction (the progress callback is an argument of `extract`)."""

    # mappings keyed by modality: set in a file, a pipeline or with --set, not as flags of their own
    cli = CommandLine(
        kind="extract setting",
        required=("dataset",),
        required_hint=" (e.g. --dataset flickr8k)",
        flags=_EXTRACT_FLAGS,
        labels={"splits": "split", "fmt": "format"},
        metavars={"root": "<path>", "cache_root": "<path>", "device": "<auto|cpu|cuda|cuda:N>"},
        not_flags=("backbones", "weights", "dataset_options"),
        set_example="'backbones={P: clip-vit-b32-text}'",
    )

    dataset: str = Field(description="flickr8k, cub, or a name for your own data (see --root)")
    root: str | None = Field(
        None, description="dataset root (default data/<dataset>); your own data: its dataset.yaml or the folder of it"
    )
    modalities: Annotated[list[str] | None, BeforeValidator(csv_list)] = Field(
        None, description="comma list, default all: I,T,S (flickr8k); I,T,A,C,P (cub)"
    )
    splits: Annotated[list[Split], BeforeValidator(csv_list)] = Field(
        default_factory=_all_splits, description="comma list of train, val, test"
    )
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:N")
    fmt: Format = Field("parquet", description="shard format: parquet or hdf5")
    batch_size: int = Field(64, description="items per forward pass (speech: also at most 80 s of audio)")
    workers: int | None = Field(
        None,
        description="decoding processes for images and audio (default: CPUs/4 on CPU, min(8, CPUs) on GPU; "
        "0 = main process)",
    )
    image_backbone: str = Field(
        DEFAULT_BACKBONES["image"], description="backbone for image modalities (I), or open_clip:MODEL@TAG"
    )
    text_backbone: str = Field(
        DEFAULT_BACKBONES["text"], description="backbone for text (T, P): also open_clip:MODEL@TAG, hf-text:MODEL"
    )
    audio_backbone: str = Field(
        DEFAULT_BACKBONES["audio"], description="backbone for speech (S), or hf-audio:MODEL (wav2vec2, WavLM, ...)"
    )
    weights_image: str = Field("default", description=_CLIP_WEIGHTS)  # see pcmpipe.backbones.weights
    weights_text: str = Field("default", description=_CLIP_WEIGHTS)
    weights_audio: str = Field(
        "default", description="default (facebook/hubert-base-ls960) | hf:ORG/NAME | random[:SEED] | DIR"
    )
    cache_root: str = Field("cache", description="where caches go: <cache-root>/<dataset>/<modality>/<split>")
    strict: bool = Field(False, description="stop at the first unreadable input instead of skipping and listing it")
    limit: int | None = Field(None, description="only the first N items (by id) of each modality and split")
    overwrite: bool = Field(False, description="rebuild caches that were built with other settings")
    rows_per_shard: int = Field(4096, description="rows per finished shard (the unit of resume)")
    # features do not depend on it (HuBERT's padding is masked), only the speed does: not in the fingerprint
    max_padding: float | None = Field(
        0.05, description="speech: at most this fraction of each batch is padding, in [0, 1)"
    )
    lock_timeout: float | None = Field(
        None, description="seconds to wait for another job writing the same cache split, then stop (default: wait)"
    )
    dtype: StoredDtype = Field("float32", description="stored feature type: float32 or float16 (half the size)")
    views: int = Field(
        0,
        description="train split: also K augmented views per image (timm) and caption (EDA); stage two draws one "
        "per epoch",
    )
    views_seed: int = Field(0, description="seed of the augmented views (with the item id and view)")
    # the forward pass's arithmetic (pcmpipe.extract.precision): part of the fingerprint, fp32 as every earlier cache
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto",
        description="forward-pass arithmetic: auto (fp16 autocast on CUDA, fp32 on CPU), fp32, fp16 or bf16 autocast",
    )
    # per modality (I, T, P, S, ...): a backbone or weights that differ from their kind's (the modality wins)
    backbones: dict[str, str] = Field(default_factory=dict, description="modality -> backbone, over its kind's")
    weights: dict[str, str] = Field(default_factory=dict, description="modality -> weights, over its kind's")
    dataset_options: dict[str, Any] = Field(default_factory=dict, description="arguments of the dataset's reader")

    @model_validator(mode="before")
    @classmethod
    def _kinds_into_their_fields(cls, data: Any) -> Any:
        """`backbones: {image: X}` (the library's and the pipelines' spelling) is `image_backbone: X`, so a kind is
        set in one field whatever its source; the mappings keep the per-modality entries only."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for mapping, field_of in (("backbones", "{}_backbone"), ("weights", "weights_{}")):
            entries = data.get(mapping)
            if isinstance(entries, dict):
                for kind in BACKBONE_KINDS:
                    if kind in entries:
                        data[field_of.format(kind)] = entries[kind]
                data[mapping] = {str(k): v for k, v in entries.items() if k not in BACKBONE_KINDS}
        return data

    @field_validator("modalities")
    @classmethod
    def _no_empty_list(cls, value: list[str] | None) -> list[str] | None:
        return value or None  # `--modalities ''` is every modality, as when it is not given

    # ---- derived values ----
    def dataset_root(self) -> Path:
        return Path(self.root) if self.root is not None else Path("data") / self.dataset

    def lock_wait(self) -> bool | float:
        """What `pcmpipe.cache.lock.exclusive` takes: wait (True) or at most this many seconds."""
        return True if self.lock_timeout is None else self.lock_timeout

    def backbone_names(self) -> dict[str, str]:
        """Backbone per kind, and per modality where one differs (`pcmpipe.extract.plan.choose_backbone`)."""
        return {**{k: getattr(self, f"{k}_backbone") for k in BACKBONE_KINDS}, **self.backbones}

    def weights_names(self) -> dict[str, str]:
        return {**{k: getattr(self, f"weights_{k}") for k in BACKBONE_KINDS}, **self.weights}
