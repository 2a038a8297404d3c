"""The checksum of a set of tensors (weights, heads, checkpoints, saved embeddings).

Its own module, importing torch alone: `pcmpipe.backbones` (where weights specs live) imports open_clip and
transformers, 0.25 GiB resident and seconds of start-up, which a training run that only writes checksums never
needs (docs/performance.md, stage-two memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, names sorted: one digest per set of weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # a uint8 view hashes every dtype (bf16 included) without a lossy conversion
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
