"""Frozen feature extractors, one factory: `create_backbone(name, weights, device) -> Backbone`.

    bb = create_backbone("clip-vit-b32-image")                  # open_clip ViT-B-32, weights 'openai'
    bb = create_backbone("hubert-base", weights="random:1")      # seeded random HuBERT-Base
    bb = create_backbone("clip-tiny-text", weights="ckpt.pt")    # a local checkpoint
    x = bb.preprocess(...); feats = bb.encode(x)                 # [B, *bb.feature_shape]

`bb.meta` (backbone, architecture, weights, weights_sha256, preprocess) goes into the cache fingerprint.
Weights strings: see `pcmpipe.backbones.weights`.
"""

from __future__ import annotations

import torch

from pcmpipe.backbones.base import KINDS, Backbone
from pcmpipe.backbones.clip import ClipImageBackbone, ClipTextBackbone
from pcmpipe.backbones.hubert import HubertBackbone
from pcmpipe.backbones.weights import WeightsSpec, parse_weights, state_sha256
from pcmpipe.errors import UserError

# name -> (class, architecture key of that class)
BACKBONES: dict[str, tuple[type[Backbone], str]] = {
    "clip-vit-b32-image": (ClipImageBackbone, "vit-b32"),
    "clip-vit-b32-text": (ClipTextBackbone, "vit-b32"),
    "hubert-base": (HubertBackbone, "base"),
    "clip-tiny-image": (ClipImageBackbone, "tiny"),
    "clip-tiny-text": (ClipTextBackbone, "tiny"),
    "hubert-tiny": (HubertBackbone, "tiny"),
}

# the paper's backbone per modality kind
DEFAULT_BACKBONES: dict[str, str] = {"image": "clip-vit-b32-image", "text": "clip-vit-b32-text", "audio": "hubert-base"}


def backbone_kind(name: str) -> str:
    """'image' | 'text' | 'audio' of a registered backbone (UserError if unknown)."""
    _check_name(name)
    return BACKBONES[name][0].modality_kind


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else must be a device torch can use here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} requested but CUDA is not available here; use --device cpu")
    return dev


def create_backbone(name: str, weights: str | None = "default", device: str | torch.device = "cpu") -> Backbone:
    """Build backbone `name` with `weights` ('default' | tag | hf:ORG/NAME | random[:SEED] | PATH) on `device`."""
    _check_name(name)
    cls, arch = BACKBONES[name]
    return cls(name, arch, parse_weights(weights), resolve_device(device))


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONES",
    "KINDS",
    "Backbone",
    "WeightsSpec",
    "backbone_kind",
    "create_backbone",
    "parse_weights",
    "resolve_device",
    "state_sha256",
]
