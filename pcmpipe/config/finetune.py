"""The fine-tuning schema (`FinetuneConfig`): stage two's settings plus the unfrozen towers and their inputs.

Imported by the fine-tuning recipe as `pcmpipe.training.finetune.FinetuneConfig`; it lives here so that the
CLI and pipeline files validate it without importing torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pcmpipe.backbones.registry import DEFAULT_BACKBONES
from pcmpipe.config.base import CommandLine
from pcmpipe.config.schema import NAME_PATTERN, TrainConfig, config_fingerprint

# tower kind -> the modality it encodes: a tower can only be unfrozen when its modality is trained
from pcmpipe.modalities import UNFREEZABLE as TOWER_MODALITY

Tower = Literal["image", "text"]
_CLIP_WEIGHTS = "default (openai) | open_clip tag | random[:SEED] | PATH"


def _both_towers() -> list[Tower]:
    return ["image", "text"]


class FinetuneConfig(TrainConfig):
    """TrainConfig (same defaults: lr 1e-4 for the heads, wd 0.2, cosine, patience 5, CUB batch 128, and the same
    `standardize`, so a fine-tuned row and a frozen row of one table see one preprocessing) plus:"""

    # cli_order: `pcmpipe finetune`'s flags, in help order; every other setting is given with --set
    cli = CommandLine(
        kind="fine-tuning setting",
        flags={"num_workers": "--workers", "data_root": "--root"},
        cli_order=(
            "data_root", "dataset", "modalities", "unfreeze", "loss", "lr", "backbone_lr", "weight_decay", "epochs",
            "patience", "batch_size", "image_backbone", "text_backbone", "weights_image", "weights_text", "augment",
            "eda_alpha", "grad_checkpointing", "amp", "num_workers", "seed", "match", "cache_root", "runs_root", "name",
            "config", "device", "log_to", "set",
        ),
    )  # fmt: skip

    # the paper fine-tunes on CUB with all four of its modalities
    dataset: str = Field("cub", pattern=NAME_PATTERN, description="dataset name")
    modalities: list[str] = Field(default_factory=lambda: ["I", "T", "A", "C"], description="comma-separated")
    data_root: str | None = Field(None, description="the raw dataset, e.g. data/cub (required)")
    unfreeze: list[Tower] = Field(
        default_factory=_both_towers,
        description="towers to train: image,text (default), image, text or none",
    )
    backbone_lr: float = Field(1e-6, gt=0, description="unfrozen towers' learning rate")
    image_backbone: str = Field(DEFAULT_BACKBONES["image"], description="backbone of I")
    text_backbone: str = Field(DEFAULT_BACKBONES["text"], description="backbone of T")
    weights_image: str = Field("default", description=_CLIP_WEIGHTS)  # see pcmpipe.backbones.weights
    weights_text: str = Field("default", description=_CLIP_WEIGHTS)
    augment: bool = Field(True, description="timm images + EDA captions")  # on the unfrozen modalities' inputs
    eda_alpha: float = Field(0.1, ge=0, le=1, description="EDA alpha")
    grad_checkpointing: bool = Field(True, description="activation checkpointing in the towers")
    amp: bool = Field(True, description="autocast bf16/fp16 on CUDA")  # no effect on CPU
    encode_batch: int = Field(256, ge=1, description="rows per forward pass when embedding val/test or frozen inputs")

    @field_validator("unfreeze", mode="before")
    @classmethod
    def _split_unfreeze(cls, value: Any) -> Any:
        """'image,text' from a flag; '' or 'none' -> all frozen."""
        if isinstance(value, str):
            text = value.strip()
            return [] if text in ("", "none") else [v.strip() for v in text.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _check_towers(self) -> FinetuneConfig:
        if not self.data_root:
            raise ValueError("fine-tuning reads the raw dataset: pass --root (e.g. data/cub)")
        if self.checkpoint_every is not None:  # inherited from TrainConfig; the fine-tuning loop has no mid-epoch state
            raise ValueError("checkpoint_every is stage two's (pcmpipe train); fine-tuning checkpoints once per epoch")
        if len(set(self.unfreeze)) != len(self.unfreeze):
            raise ValueError(f"--unfreeze lists a tower twice: {','.join(self.unfreeze)}")
        for u in self.unfreeze:
            if TOWER_MODALITY[u] not in self.modalities:
                raise ValueError(
                    f"--unfreeze {u} needs modality {TOWER_MODALITY[u]} in --modalities "
                    f"(got {','.join(self.modalities)})"
                )
        return self

    def resolved(self) -> FinetuneConfig:
        out = super().resolved()
        if self.name is None:  # fine-tuned runs are named apart from stage-two runs of the same modalities
            tag = "+".join(sorted(self.unfreeze)) or "frozen"
            mods = "+".join(out.modalities)
            out.name = f"ft-{out.dataset}-{mods}-{out.loss}-{tag}-s{out.seed}-{config_fingerprint(out)[:8]}"
        return out

    def live(self) -> dict[str, str]:
        """Unfrozen modality -> its tower kind, e.g. {'I': 'image', 'T': 'text'}."""
        return {TOWER_MODALITY[u]: u for u in self.unfreeze}

    def backbone_spec(self, kind: str) -> tuple[str, str]:
        return (self.image_backbone, self.weights_image) if kind == "image" else (self.text_backbone, self.weights_text)
