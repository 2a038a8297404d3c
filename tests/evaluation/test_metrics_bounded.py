"""The blocked exact path stays bounded when R is large (class-level matching): fewer query rows per block, and
two one-way passes instead of the pair pass once B's running top-K would not fit (pcmpipe.evaluation.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmpipe.evaluation import metrics
from pcmpipe.evaluation.metrics import (
    r_precision,
    recall_at_k,
    retrieval_metrics_blocked_pair,
)


def _case(n: int = 300, classes: int = 3, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(n + 7, d, generator=g), dim=-1)
    return a, b, np.arange(n) % classes, np.arange(n + 7) % classes  # R ~ 100 per query


@pytest.mark.parametrize("entries", [1 << 24, 500, 1])
def test_large_r_gives_the_dense_numbers_under_any_bound(monkeypatch, entries):
    a, b, la, lb = _case()
    monkeypatch.setattr(metrics, "_TOP_ENTRIES", entries)
    one_way = []
    real = metrics.retrieval_metrics_blocked
    monkeypatch.setattr(metrics, "retrieval_metrics_blocked", lambda *x, **k: one_way.append(1) or real(*x, **k))
    ab, ba = retrieval_metrics_blocked_pair(a, b, (la, lb), (lb, la), ks=(1, 5), block=64)
    assert bool(one_way) == (entries < len(b) * 100)  # R = 100: the pair pass only while B top-K fits
    for got, (q, g, ql, gl) in ((ab, (a, b, la, lb)), (ba, (b, a, lb, la))):
        sim, pos = q @ g.T, torch.as_tensor(ql[:, None] == gl[None, :])
        assert got["r@1"] == recall_at_k(sim, pos, 1) and got["r@5"] == recall_at_k(sim, pos, 5)
        assert abs(got["R-P"] - r_precision(sim, pos)) < 1e-12
        assert got == real(q, g, ql, gl, ks=(1, 5), block=64)
