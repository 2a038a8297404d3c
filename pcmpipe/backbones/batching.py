"""Batching rules: which inputs go through a backbone's `encode` together (`Backbone.batches` applies them).

Sorting by length keeps the padding in each batch small. Features do not depend on the batch (the text towers
are trimmed exactly, the speech encoders are masked), so sorting changes only the speed and the order of rows
inside the shards (rows carry their ids; readers never rely on row order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fixed_batches(n: int, batch_size: int) -> list[list[int]]:
    """Indices 0..n-1 in order, in chunks of `batch_size`."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def length_batches(
    lengths: Sequence[int], batch_size: int, max_padded: int | None = None, max_padding_fraction: float | None = None
) -> list[list[int]]:
    """Group indices of similar length: sort by length (stable), then fill batches greedily.

    A batch holds at most `batch_size` items and, when `max_padded` is given, at most `max_padded` units
    once padded to its longest item (len(batch) * longest), which bounds memory for long utterances; an
    item longer than `max_padded` gets a batch of its own. When `max_padding_fraction` is given, a batch
    also never carries more than that fraction of padding, (n * longest - sum) / (n * longest): the next
    (longest so far) item starts a new batch when it would push the fraction over the bound. Every batch
    then meets the bound, so the whole run does; a batch of one item has no padding. With few items the
    bound makes batches smaller (sorted neighbours differ more in length); None: no bound.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if max_padding_fraction is not None and not 0.0 <= max_padding_fraction < 1.0:
        raise ValueError(f"max_padding_fraction must be in [0, 1), got {max_padding_fraction}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0  # sum of the lengths in `current`
    for i in order.tolist():
        longest = int(lengths[i])  # ascending order: the newcomer is the longest of its batch
        n = len(current) + 1
        too_big = max_padded is not None and n * longest > max_padded
        too_padded = (
            max_padding_fraction is not None and n * longest - (total + longest) > max_padding_fraction * n * longest
        )
        if current and (len(current) >= batch_size or too_big or too_padded):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += longest
    if current:
        batches.append(current)
    return batches
