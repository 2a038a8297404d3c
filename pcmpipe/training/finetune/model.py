"""The trainable side of fine-tuning: unfrozen CLIP towers + projection heads + logit scale, in one module.

`Coordinator.forward({m: x})` runs the tower of an unfrozen modality on raw input (pixels [B, 3, S, S] or
tokens [B, 77]) and then its head; any other modality's x is already a feature [B, *shape] and goes
straight to its head. Only the tower a modality uses is trainable (the image tower's CLIP instance also
holds a text tower: it stays frozen and unused), so optimizer state covers exactly what is trained.

Optimizer groups (paper Sec. 4): heads at 1e-4, backbones at 1e-6, AdamW weight decay 0.2 on weight
matrices only (pcmpipe.training.optim.param_groups' rule) -> four groups named heads/heads_no_decay/backbone/
backbone_no_decay. Fine-tuned towers are saved as the full open_clip state dict in safetensors, which
`create_backbone(name, weights=PATH)` (and so `pcmpipe extract --weights-image PATH`) loads as it is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pcmpipe.backbones import Backbone
from pcmpipe.backbones.clip import encode_text_trimmed
from pcmpipe.backbones.weights import state_sha256
from pcmpipe.checksums import save_tensors
from pcmpipe.heads import build_heads

# modality kind -> the names a user gives to --unfreeze, and the modality each drives in CUB/Flickr8k
from pcmpipe.modalities import UNFREEZABLE  # noqa: E402  (re-exported: recipe.py imports it from here)
from pcmpipe.training.optim import param_groups


def in_tower(kind: str, name: str) -> bool:
    """Is CLIP parameter `name` part of the `kind` tower? (the logit scale/bias belong to neither)."""
    if name in ("logit_scale", "logit_bias"):
        return False
    return name.startswith("visual.") == (kind == "image")


class Coordinator(nn.Module):
    """Unfrozen towers (by modality), one ProjectionHead per modality, and the PCMC log logit scale."""

    def __init__(
        self,
        backbones: dict[str, Backbone],
        unfrozen: list[str],
        shapes: dict[str, tuple[int, ...]],
        dim: int,
        logit_scale_init: float,
        learnable_scale: bool,
    ) -> None:
        super().__init__()
        if isinstance(unfrozen, (set, frozenset)):  # set order follows str hashing: resumes would misalign
            raise TypeError("unfrozen must be an ordered sequence of modality names, not a set")
        self.kinds = {m: backbones[m].modality_kind for m in unfrozen}
        self.towers = nn.ModuleDict({m: backbones[m].model for m in unfrozen})
        for m, tower in self.towers.items():
            if self.kinds[m] not in UNFREEZABLE:
                raise ValueError(f"cannot fine-tune a {self.kinds[m]} backbone")
            for name, p in tower.named_parameters():
                p.requires_grad_(in_tower(self.kinds[m], name))
        self.heads = build_heads(shapes, dim=dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)), requires_grad=learnable_scale)

    def tower(self, m: str) -> Any:
        """The open_clip model of `m`, whose methods (encode_image, ...) nn.ModuleDict's typing cannot see."""
        return self.towers[m]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for t in self.towers.values() for p in t.parameters() if p.requires_grad]

    def set_grad_checkpointing(self, enabled: bool) -> None:
        """open_clip's activation checkpointing per residual block (recompute in backward, ~1/3 more compute)."""
        for m in self.towers:
            self.tower(m).set_grad_checkpointing(enabled)

    def features(self, m: str, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of raw input: pixels [B, 3, S, S] or tokens [B, L] -> [B, D]."""
        if self.kinds[m] == "image":
            return self.tower(m).encode_image(x)
        return encode_text_trimmed(self.towers[m], x)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """m -> raw batch (towers) or features [B, *shape] (the rest) => m -> embedding [B, dim] float32."""
        out = {}
        for m, x in inputs.items():
            feats = self.features(m, x) if m in self.towers else x
            out[m] = self.heads[m](feats.float())  # heads in fp32 even under autocast: tiny, and LayerNorm-safe
        return out

    def backbone_state(self, m: str) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").clone() for k, v in self.towers[m].state_dict().items()}


def optimizer_groups(model: Coordinator, head_lr: float, backbone_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: heads (+ logit scale) at head_lr, trainable tower parameters at backbone_lr."""
    groups = []
    for g, name in zip(param_groups(model.heads, [model.log_scale], weight_decay), ("heads", "heads_no_decay")):
        groups.append({**g, "lr": head_lr, "name": name})
    bb = model.backbone_parameters()
    if bb:
        groups.append(
            {
                "params": [p for p in bb if p.ndim >= 2],
                "weight_decay": weight_decay,
                "lr": backbone_lr,
                "name": "backbone",
            }
        )
        groups.append(
            {
                "params": [p for p in bb if p.ndim < 2],
                "weight_decay": 0.0,
                "lr": backbone_lr,
                "name": "backbone_no_decay",
            }
        )
    return groups


def tower_sha256(state: dict[str, torch.Tensor], kind: str) -> str:
    """The checksum pcmpipe.backbones records for a tower (so a cache re-extracted with it can be matched):
    image -> sha of `visual.state_dict()`, text -> sha of the CLIP state without visual.* and the logit scale."""
    if kind == "image":
        return state_sha256({k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")})
    return state_sha256({k: v for k, v in state.items() if in_tower("text", k)})


def save_backbone(path: Path, state: dict[str, torch.Tensor], backbone: Backbone, kind: str, run_name: str) -> str:
    """Write a fine-tuned CLIP (full open_clip state dict) to safetensors; returns the tower's weights sha256.

    The metadata says what it is; the file loads with `create_backbone(backbone.name, weights=str(path))`.
    """
    tensors = {k: v.contiguous() for k, v in state.items()}
    sha = tower_sha256(tensors, kind)
    meta = {
        "backbone": backbone.name,
        "kind": kind,
        "base_weights": str(backbone.meta.get("weights")),
        "architecture": json.dumps(backbone.meta.get("architecture")),
        "finetune_run": run_name,
        "tower_sha256": sha,
    }
    save_tensors(path, tensors, meta, "fine-tuned tower")
    return sha
