"""The one rule that picks each training sample's augmented view (`pcmpipe extract --views K`), in both modes.

A cache extracted with views holds, beside each row's clean features (view 0), K augmented ones (views 1..K).
In epoch e, sample s of the sample table (the join's order, pcmpipe.samples.table) uses view
`draw_views(seed, e, m, K, N)[s]` of its row of modality m: uniform over 0..K, a function of (seed, epoch,
modality) and the sample's place in the table alone. The batch order, the process count, a mid-epoch resume and
the loading mode (in memory or streamed) therefore never change which view a sample sees.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

VIEW_SALT = 0x76696577  # "view": keeps the view draws apart from any other stream seeded by (seed, epoch)
# This rule's name in a streamed run's config.json ("view_rule"): streamed runs begun before it drew views per
# batch, and such a run cannot resume under this rule to the numbers it began (pcmpipe.training.stage2)
VIEW_RULE = "sample-table"
_CHUNK = 1 << 20  # draws generated at a time: a streamed split of 10^8 samples never holds them as int64


def draw_views(seed: int, epoch: int, modality: str, views: int, samples: int) -> np.ndarray:
    """The view [samples] (0 clean, 1..`views` augmented) each sample of the table uses in `epoch`.

    The values are numpy's `default_rng([VIEW_SALT, seed, epoch, crc32(modality)]).integers(0, views + 1,
    size=samples)`, the rule in-memory training always drew by. They are generated in chunks into the smallest
    dtype that holds them (one byte a sample up to 254 views): numpy's bounded integers consume the bit stream
    draw by draw, so chunks give the values one call gives (tests/test_samples_views.py pins it).
    """
    rng = np.random.default_rng([VIEW_SALT, seed, epoch, zlib.crc32(modality.encode())])
    out = np.empty(samples, np.uint8 if views < 255 else np.int16)
    for at in range(0, samples, _CHUNK):
        n = min(_CHUNK, samples - at)
        out[at : at + n] = rng.integers(0, views + 1, size=n)
    return out


def with_views(clean: torch.Tensor, picked: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """A batch's rows [B, *shape] with each sample's drawn view: `picked` [B, *shape] holds augmented view
    drawn[b] (1..K) of row b (anything where drawn[b] is 0, the clean row already in `clean`). Written into
    `clean` in place, so a preallocated buffer stays the batch's tensor; no host sync."""
    keep = (drawn == 0).view(-1, *([1] * (clean.dim() - 1)))
    return clean.copy_(torch.where(keep, clean, picked.float()))


def view_index(drawn: torch.Tensor) -> torch.Tensor:
    """The index into a row's augmented views [K, ...] of each drawn view (int64 [B]; view 0 reads slot 0, which
    `with_views` then ignores)."""
    return (drawn.long() - 1).clamp_min(0)
