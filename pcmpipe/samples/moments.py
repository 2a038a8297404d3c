"""Per-modality moments of a training split (`standardize: center | scale`), one function for both modes.

Over each modality's own cached rows, not the training samples: an image with five captions counts once. In
memory the features are sliced, streamed they are decoded from the cache, and both hand `moments` the same
chunks of rows in the same order, so the two modes standardise with the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

import numpy as np
import torch


class Chunked(Protocol):
    """A modality's rows, chunk by chunk (`ModalityData`, or `CacheInfo` for a streamed split)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def rows(self) -> int: ...

    def chunks(self, rows: int) -> Iterator[torch.Tensor]: ...


def moment_chunk_rows(shape: tuple[int, ...]) -> int:
    """Rows per chunk of a moments pass: about 4 Mi feature values (32 MB as float64), at least one row."""
    return max(1, (4 << 20) // max(1, int(np.prod(shape))))


def moments(source: Chunked, with_scale: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean, unbiased std clamped at 1e-6, or None) per feature element, float32, accumulated in float64.

    Two passes over chunks of about 32 MB of float64, on the chunks' device: a float64 copy of the whole block
    (2.4 GB for Flickr8k's 30,000 HuBERT rows, 4x the fp16 block) was the largest transient of a training run.
    The second pass sums squared deviations from the mean rather than squares, which cancel in float64.
    """
    rows = moment_chunk_rows(source.shape)
    total = _sum(source.chunks(rows), lambda x: x, source.shape)
    mean = total / source.rows
    if not with_scale:
        return mean.float(), None
    squares = _sum(source.chunks(rows), lambda x: x.sub_(mean).square_(), source.shape)  # in place: one copy
    std = (squares / max(source.rows - 1, 1)).sqrt()
    return mean.float(), std.clamp_min(1e-6).float()


def _sum(chunks: Iterable[torch.Tensor], term: Callable[[torch.Tensor], torch.Tensor], shape) -> torch.Tensor:
    total: torch.Tensor | None = None
    for x in chunks:
        if total is None:  # where the chunks are: GPU or CPU
            total = torch.zeros(shape, dtype=torch.float64, device=x.device)
        total += term(x.to(torch.float64, copy=True)).sum(0)  # a copy: `term` may work in place
    return torch.zeros(shape, dtype=torch.float64) if total is None else total


def standardisation(
    modalities: Mapping[str, Chunked], standardize: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """m -> (mean, scale or None) of each modality's train rows for `standardize` (none | center | scale); {}
    for none."""
    if standardize == "none":
        return {}
    return {m: moments(d, standardize == "scale") for m, d in modalities.items()}


def exact_chunks(parts: Iterable[np.ndarray], rows: int, shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
    """Float32 chunks of exactly `rows` rows (the last may be shorter) from arrays of any row counts (a cache's
    shards decoded piece by piece): the chunks a tensor of all the rows would be sliced into. Each is valid until
    the next is produced (one reused buffer)."""
    buf = np.empty((rows, *shape), np.float32)
    held = 0
    for part in parts:
        at = 0
        while at < len(part):
            k = min(rows - held, len(part) - at)
            buf[held : held + k] = part[at : at + k]
            held, at = held + k, at + k
            if held == rows:
                yield torch.from_numpy(buf)
                held = 0
    if held:
        yield torch.from_numpy(buf[:held])
