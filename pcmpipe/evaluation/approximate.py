"""Approximate recall@k with FAISS, for galleries where even the blocked exact path is too slow.

The exact path (`metrics.retrieval_metrics_blocked`) is memory-bounded at any size but costs Q x N dot
products. Here the gallery goes into a FAISS inverted-file index (`IndexIVFFlat`, inner product: pass
L2-normalised rows for cosine): k-means on a sample of the gallery gives `nlist` cells, each query scans only
the `nprobe` nearest cells. Memory: the gallery once (float32) plus one block of query results.

The result is an estimate: a query's true nearest neighbour can sit in a cell that was not probed. How far the
estimate is from the exact numbers is measured, not assumed: `neighbour_recall` (the fraction of the exact top k
that the index returns) and the r@k of both paths (tests/evaluation/test_approximate.py on a small case,
benchmarks/eval_approximate.py larger). `index="flat"` is exact search (`pcmpipe.index.flat.FlatIndex`, blocked
torch matmuls: 22 x faster than FAISS's IndexFlatIP on one core; same numbers as the blocked path up to ties).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pcmpipe.evaluation.metrics import _codes, _result
from pcmpipe.index.flat import FlatIndex


def _float32(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.ascontiguousarray(arr, dtype=np.float32)


def build_index(gallery: Any, index: str = "ivf", nlist: int | None = None, nprobe: int = 16, seed: int = 0):
    """An inner-product index over gallery rows [N, D]: "flat" (exact, FlatIndex) or "ivf" (FAISS, k-means cells).

    nlist: cells (default ~4 sqrt(N), FAISS's usual rule); trained on at most 256 rows a cell, drawn with `seed`.
    """
    import faiss

    g = _float32(gallery)
    n, d = g.shape
    idx: Any
    if index == "flat":
        return FlatIndex(g)
    if index == "ivf":
        nlist = nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))  # FAISS warns below 39 training rows a cell
        idx = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = g[np.sort(rng.choice(n, size=min(n, 256 * nlist), replace=False))]
        idx.cp.seed = seed
        idx.train(sample)
        idx.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f"index must be 'flat' or 'ivf', got {index!r}")
    idx.add(g)
    return idx


def search(idx, queries: Any, k: int, block: int = 65536) -> np.ndarray:
    """Top-k gallery rows [Q, k] of each query (-1 where the probed cells held fewer than k rows)."""
    q = _float32(queries)
    out = np.empty((q.shape[0], k), dtype=np.int64)
    for q0 in range(0, q.shape[0], block):
        _, out[q0 : q0 + block] = idx.search(q[q0 : q0 + block], k)
    return out


def retrieval_metrics_faiss(
    query_emb: Any,
    gallery_emb: Any,
    query_labels: Any,
    gallery_labels: Any,
    ks: Sequence[int] = (1, 5),
    index: str = "ivf",
    nlist: int | None = None,
    nprobe: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Approximate recall@k (positives = equal labels) over queries with a positive; `metrics`' r@k keys.

    R-precision is not offered: it needs each query's top R, up to the whole gallery at class level.
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive, got {ks}")
    q_codes, g_codes = _codes(query_labels, gallery_labels)
    qc, gc = q_codes.numpy(), g_codes.numpy()
    has_positive = np.isin(qc, gc)
    top = search(build_index(gallery_emb, index, nlist, nprobe, seed), query_emb, min(max(ks), len(gc)))
    hit = np.where(top >= 0, gc[np.clip(top, 0, None)] == qc[:, None], False)[has_positive]
    found = {k: float(hit[:, :k].any(1).sum()) for k in ks}
    out = _result(found, 0.0, int(has_positive.sum()), ks)
    out.pop("R-P")
    return out


def neighbour_recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Fraction of the exact top-k rows [Q, k] that the approximate top-k [Q, k] also returns."""
    k = exact.shape[1]
    got = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx[:, :k], exact))
    return got / exact.size
