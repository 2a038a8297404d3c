"""Building a backbone from its name: `create_backbone(name, weights, device, kind)` and the device it runs on."""

from __future__ import annotations

import torch

from pcmpipe.backbones.base import Backbone
from pcmpipe.backbones.registry import resolve
from pcmpipe.backbones.weights import parse_weights
from pcmpipe.errors import UserError


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
    cls, arch = resolve(name, kind)  # refuses a name that encodes another kind than `kind`
    return cls(name, arch, parse_weights(weights), resolve_device(device))
