"""How much padding extraction's batches carried (`PaddingMeter`); the batching rules themselves are the
backbone's (`Backbone.batches`, pcmpipe/backbones/batching.py)."""

from __future__ import annotations

from collections.abc import Sequence


class PaddingMeter:
    """Fraction of computed positions that are padding: sum(longest * B - sum(len)) / sum(longest * B)."""

    def __init__(self) -> None:
        self.padded = 0
        self.total = 0

    def add(self, lengths: Sequence[int]) -> None:
        if len(lengths):
            self.total += int(max(lengths)) * len(lengths)
            self.padded += int(max(lengths)) * len(lengths) - int(sum(lengths))

    @property
    def fraction(self) -> float | None:
        return self.padded / self.total if self.total else None
