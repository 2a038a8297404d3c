"""Frozen feature extractors, one factory: `create_backbone(name, weights, device) -> Backbone`.

    bb = create_backbone("clip-vit-b32-image")                  # open_clip ViT-B-32, weights 'openai'
    bb = create_backbone("hubert-base", weights="random:1")      # seeded random HuBERT-Base
    bb = create_backbone("clip-tiny-text", weights="ckpt.pt")    # a local checkpoint
    x = bb.preprocess(...); feats = bb.encode(x)                 # [B, *bb.feature_shape]

`bb.meta` (backbone, architecture, weights, weights_sha256, preprocess) goes into the cache fingerprint.
Weights strings: see `pcmpipe.backbones.weights`. The contract every backbone keeps: README.md in this folder.

Beyond the six registered names (`registry.BACKBONES`), any encoder of a family (docs/extraction.md, "Any encoder"):

    open_clip:MODEL[@TAG]   any open_clip model (built-in name, hf-hub:ORG/NAME, local-dir:PATH), image or text
    hf-text:MODEL           any transformers / sentence-transformers text encoder (hub id or folder)
    hf-audio:MODEL          any transformers speech encoder with hidden states (HuBERT, wav2vec2, WavLM, ...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcmpipe.backbones.base import KINDS, Backbone
from pcmpipe.backbones.registry import BACKBONES, DEFAULT_BACKBONES, FAMILIES, backbone_kind, backbone_kinds

if TYPE_CHECKING:
    from pcmpipe.backbones.factory import create_backbone, resolve_device
    from pcmpipe.backbones.weights import WeightsSpec, parse_weights, state_sha256

# Imported on first use: the registry and the base class are free of torch, so the CLI, the config schema and
# the pipeline planner read backbone names without loading torch, open_clip or transformers.
_LAZY = {
    "create_backbone": "pcmpipe.backbones.factory",
    "resolve_device": "pcmpipe.backbones.factory",
    "WeightsSpec": "pcmpipe.backbones.weights",
    "parse_weights": "pcmpipe.backbones.weights",
    "state_sha256": "pcmpipe.backbones.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pcmpipe.backbones' has no attribute {name!r}")


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
