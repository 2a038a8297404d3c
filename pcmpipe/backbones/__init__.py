"""Frozen feature extractors, one factory: `create_backbone(name, weights, device) -> Backbone`.

    bb = create_backbone("clip-vit-b32-image")                  # open_clip ViT-B-32, weights 'openai'
    bb = create_backbone("hubert-base", weights="random:1")      # seeded random HuBERT-Base
    bb = create_backbone("clip-tiny-text", weights="ckpt.pt")    # a local checkpoint
    x = bb.preprocess(...); feats = bb.encode(x)                 # [B, *bb.feature_shape]

`bb.meta` (backbone, architecture, weights, weights_sha256, preprocess) goes into the cache fingerprint.
Weights strings: see `pcmpipe.backbones.weights`.

Beyond the six registered names, any encoder of a family (docs/extraction.md, "Any encoder"):

    open_clip:MODEL[@TAG]   any open_clip model (built-in name, hf-hub:ORG/NAME, local-dir:PATH), image or text
    hf-text:MODEL           any transformers / sentence-transformers text encoder (hub id or folder)
    hf-audio:MODEL          any transformers speech encoder with hidden states (HuBERT, wav2vec2, WavLM, ...)
"""

from __future__ import annotations

import torch

from pcmpipe.backbones.base import KINDS, Backbone
from pcmpipe.backbones.clip import ClipImageBackbone, ClipTextBackbone
from pcmpipe.backbones.hubert import HubertBackbone
from pcmpipe.backbones.openclip_models import OpenClipImageBackbone, OpenClipTextBackbone
from pcmpipe.backbones.transformers_speech import TransformersSpeechBackbone
from pcmpipe.backbones.transformers_text import TransformersTextBackbone
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

# family prefix -> {kind: class}; the rest of the name (after "PREFIX:") is the class's architecture argument
FAMILIES: dict[str, dict[str, type[Backbone]]] = {
    "open_clip": {"image": OpenClipImageBackbone, "text": OpenClipTextBackbone},
    "hf-text": {"text": TransformersTextBackbone},
    "hf-audio": {"audio": TransformersSpeechBackbone},
}

# the paper's backbone per modality kind
DEFAULT_BACKBONES: dict[str, str] = {"image": "clip-vit-b32-image", "text": "clip-vit-b32-text", "audio": "hubert-base"}


def backbone_kinds(name: str) -> tuple[str, ...]:
    """The kinds backbone `name` can encode: one for a registered name, image and text for open_clip models."""
    family = _family(name)
    if family is not None:
        return tuple(FAMILIES[family])
    _check_name(name)
    return (BACKBONES[name][0].modality_kind,)


def backbone_kind(name: str) -> str:
    """'image' | 'text' | 'audio' of a backbone that encodes one kind (UserError if unknown or if it has two)."""
    kinds = backbone_kinds(name)
    if len(kinds) != 1:
        raise UserError(f"backbone {name} has {' and '.join(kinds)} towers; say which one")
    return kinds[0]


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


def create_backbone(
    name: str, weights: str | None = "default", device: str | torch.device = "cpu", kind: str | None = None
) -> Backbone:
    """Build backbone `name` with `weights` ('default' | tag | hf:ORG/NAME | random[:SEED] | PATH) on `device`.
    kind ('image' | 'text' | 'audio') picks the tower of a name that has two (open_clip:...)."""
    family = _family(name)
    if family is None:
        _check_name(name)
        cls, arch = BACKBONES[name]
    else:
        kind = kind or backbone_kind(name)
        if kind not in FAMILIES[family]:
            raise UserError(f"backbone {name} encodes {', '.join(FAMILIES[family])}, not {kind}")
        cls, arch = FAMILIES[family][kind], name.split(":", 1)[1]
        if not arch:
            raise UserError(f"backbone {name!r}: name the model after '{family}:'")
    if kind is not None and cls.modality_kind != kind:
        raise UserError(f"backbone {name} encodes {cls.modality_kind}, not {kind}")
    return cls(name, arch, parse_weights(weights), resolve_device(device))


def _family(name: str) -> str | None:
    prefix, sep, _ = name.partition(":")
    return prefix if sep and prefix in FAMILIES else None


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        families = ", ".join(f"{f}:MODEL" for f in FAMILIES)
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}, or {families}")


__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONES",
    "FAMILIES",
    "KINDS",
    "Backbone",
    "WeightsSpec",
    "backbone_kind",
    "backbone_kinds",
    "create_backbone",
    "parse_weights",
    "resolve_device",
    "state_sha256",
]
