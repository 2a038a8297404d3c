"""The arithmetic a backbone's forward pass runs in during extraction (`pcmpipe extract --precision`).

    fp32   float32 throughout: the default on CPU, and the only setting whose numbers match earlier caches;
    fp16   float16 autocast: the default on CUDA (tensor cores; about 2 x the float32 throughput of ViT-B/32);
    bf16   bfloat16 autocast: float32's range with 8 bits of mantissa; on CPU it is what the measurement in
           docs/extraction.md ("Precision") used against fp32.

Features are always returned, and stored, as float32 (or float16 with `--dtype float16`): the precision only
changes the arithmetic, so it is part of the cache fingerprint (`label`). fp32 records "float32", which is what
every cache written before this option recorded, so existing CPU caches keep their fingerprint.
"""

from __future__ import annotations

import contextlib

import torch

from pcmpipe.backbones import Backbone
from pcmpipe.errors import UserError

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve(precision: str | None, device: torch.device) -> str:
    """The precision a run uses: the one asked for, else fp16 on CUDA and fp32 elsewhere."""
    if precision is None or precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def of(backbone: Backbone) -> str:
    """The precision this backbone encodes in (set by `prepare`; a backbone never prepared: its device's default)."""
    return backbone.precision or resolve(None, backbone.device)


def label(backbone: Backbone) -> str:
    """What the cache fingerprint records: "float32" as before this option, else "autocast-fp16" / "-bf16"."""
    p = of(backbone)
    return "float32" if p == "fp32" else f"autocast-{p}"


def autocast(backbone: Backbone) -> contextlib.AbstractContextManager:
    """The autocast region of one forward pass (none for fp32)."""
    p = of(backbone)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(backbone.device.type, dtype=_DTYPES[p])


def prepare(backbone: Backbone, precision: str | None) -> None:
    """Fix the backbone's precision for the run and lay image towers out channels_last on CUDA.

    channels_last only on CUDA: there the patch embedding's convolution runs on tensor cores in NHWC without a
    layout conversion; on CPU it would change oneDNN's kernels and so the last bits of fp32 features that
    earlier caches hold."""
    backbone.precision = resolve(precision, backbone.device)
    if backbone.device.type == "cuda" and backbone.modality_kind == "image":
        backbone.model.to(memory_format=torch.channels_last)
