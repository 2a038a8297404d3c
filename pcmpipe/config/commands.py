"""The settings of the smaller commands: `evaluate` (`EvaluateConfig`) and `synth` (`SynthConfig`).

Like the stage schemas, each field is a setting once (flag, help, choices, default), and the command takes
`--config FILE` and `--set key=value` (pcmpipe.cli.options.settings_command). `arguments` are the command's
positional arguments.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from pcmpipe.config.base import Settings
from pcmpipe.config.schema import Device, MatchLevel, csv_list

Speech = Literal["tones", "espeak", "auto"]


class EvaluateConfig(Settings):
    """What `pcmpipe evaluate` scores, and where it writes the metrics."""

    kind: ClassVar[str] = "evaluate setting"
    arguments: ClassVar[tuple[str, ...]] = ("run_dir",)
    metavars: ClassVar[dict[str, str]] = {"run_dir": "<path>", "cache_root": "<path>", "out": "<path>", "csv": "<path>"}
    set_example: ClassVar[str] = "recall_k=[1,5,10]"

    run_dir: str = Field(
        description="a finished run directory, e.g. cache/runs/<name>, or a folder written by `pcmpipe export`"
    )
    match: MatchLevel | None = Field(None, description="instance or class (default: every level available)")
    split: str | None = Field(None, description="cached split to score (default: the run's test split)")
    dataset: str | None = Field(
        None, description="score another cached dataset extracted with the run's backbones (default: the run's)"
    )
    cache_root: str | None = Field(None, description="cache root of --dataset (default: the run's)")
    recall_k: list[int] = Field(
        default_factory=lambda: [1, 5], description="comma-separated k of recall@k, e.g. 1,5,10"
    )
    out: str | None = Field(None, description="also write the metrics as JSON here")
    csv: str | None = Field(None, description="also write the metrics as CSV here (one row per value)")
    device: Device = Field("auto", description="auto (cuda if available), cpu or cuda")

    @field_validator("recall_k", mode="before")
    @classmethod
    def _ks(cls, value: Any) -> Any:
        parts = csv_list(value)
        if isinstance(parts, list) and all(isinstance(k, int) or str(k).strip().isdigit() for k in parts):
            return [int(k) for k in parts]
        raise ValueError(f"--recall-k {value!r}: give comma-separated integers, e.g. 1,5,10")


class SynthConfig(Settings):
    """What `pcmpipe synth` writes: a small synthetic dataset in the real one's on-disk layout."""

    kind: ClassVar[str] = "synth setting"
    arguments: ClassVar[tuple[str, ...]] = ("dataset",)
    metavars: ClassVar[dict[str, str]] = {"out": "<path>"}
    set_example: ClassVar[str] = "images=12"

    dataset: str = Field(description="flickr8k or cub")
    out: str = Field(description="new (or empty) directory to write the dataset into")
    images: int | None = Field(
        None, description="flickr8k: images in all (default 60, split 4:1:1); cub: images per class (default 3)"
    )
    seed: int = Field(0, description="same seed and flags -> same files")
    text_subdir: bool = Field(
        False, description="flickr8k: text files under Flickr8k_text/; cub: captions under cub_text/text_c10"
    )
    speech: Speech = Field(
        "tones", description="flickr8k spoken captions: tones (deterministic), espeak, or auto (espeak-ng if installed)"
    )
