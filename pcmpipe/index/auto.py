"""`pcmpipe index --kind auto`: the index kind chosen from the gallery's size and a memory budget, and the recall
an approximate index gives up, measured against exact search.

The rule, in the spirit of autofaiss: exact (flat) search while the gallery is small enough to scan per query
(FLAT_MAX_ROWS: at 10^5 rows a blocked matmul answers in milliseconds, docs/performance.md "search") and its
float32 vectors fit the budget; above that IVF (the vectors themselves plus about 4 sqrt(N) centroids:
a query scans nprobe cells instead of everything); and when the vectors do not fit, IVF-PQ with the most
bytes per vector (a divisor of the dimension, up to 64) that fits. A budget nothing fits is one line saying
what the smallest index would need.

Recall@10 is measured, not assumed: up to RECALL_QUERIES rows of the gallery itself are searched with the
index and with exact search, and the share of exact top-10 neighbours the index also returns is reported.
Imports no torch or FAISS at module level, so `fit` can run before the embeddings are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcmpipe.errors import UserError
from pcmpipe.index.params import PQ_CENTROIDS, default_nlist

FLAT_MAX_ROWS = 200_000  # above this, an exact scan per query costs more than an IVF probe (search benchmark)
MAX_PQ_BYTES = 64  # bytes per vector beyond which IVF-PQ gains little over IVF's float32 rows
ID_BYTES = 8  # FAISS keeps one int64 id per row in an IVF list
RECALL_QUERIES = 1000
RECALL_K = 10


@dataclass(frozen=True)
class AutoChoice:
    kind: str
    pq_m: int | None
    bytes: int  # memory the index takes, about
    why: str


def fit(rows: int, dim: int, budget_mb: float) -> AutoChoice:
    """The index kind for `rows` vectors of `dim` values within `budget_mb` MiB (module docstring)."""
    if rows < 1:
        raise UserError("no embeddings to index")
    if not budget_mb > 0:
        raise UserError(f"--memory-budget must be a positive number of MiB, got {budget_mb}")
    budget = int(budget_mb * (1 << 20))
    flat = rows * dim * 4
    if flat <= budget and rows <= FLAT_MAX_ROWS:
        return AutoChoice("flat", None, flat, f"{rows:,} rows are few enough to scan exactly")
    cells = default_nlist(rows)  # the cells the index will be built with
    ivf = flat + rows * ID_BYTES + cells * dim * 4
    if ivf <= budget:
        return AutoChoice("ivf", None, ivf, f"{rows:,} rows: IVF visits a few of {cells} cells per query")
    divisors = [m for m in range(1, min(dim, MAX_PQ_BYTES) + 1) if dim % m == 0]
    fitting = [m for m in divisors if rows * (m + ID_BYTES) + cells * dim * 4 <= budget]
    if not fitting or rows < PQ_CENTROIDS:
        need = (rows * (divisors[0] + ID_BYTES) + cells * dim * 4) / (1 << 20)
        raise UserError(
            f"--memory-budget {budget_mb:g} MiB holds no index of {rows:,} x {dim} embeddings: flat needs "
            f"{flat / (1 << 20):,.1f} MiB and the smallest IVF-PQ {need:,.1f} MiB"
            + (f" (and IVF-PQ needs {PQ_CENTROIDS} rows at least)" if rows < PQ_CENTROIDS else "")
        )
    m = max(fitting)
    used = rows * (m + ID_BYTES) + cells * dim * 4
    return AutoChoice("ivfpq", m, used, f"the float32 vectors ({flat / (1 << 20):,.0f} MiB) exceed the budget")


def recall_at_k(index, vectors: np.ndarray, k: int = RECALL_K, queries: int = RECALL_QUERIES, seed: int = 0) -> float:
    """Share of the exact top-k neighbours of sampled gallery rows that `index` (FAISS-like) also returns."""
    from pcmpipe.index.flat import FlatIndex
    from pcmpipe.index.store import normalise

    x = normalise(vectors)
    rng = np.random.default_rng(seed)
    picked = rng.choice(x.shape[0], size=min(queries, x.shape[0]), replace=False)
    q = x[np.sort(picked)]
    k = min(k, x.shape[0])
    _, exact = FlatIndex(x).search(q, k)
    _, found = index.search(q, k)
    hits = sum(len(set(a.tolist()) & set(b.tolist()) - {-1}) for a, b in zip(exact, found))
    return hits / float(q.shape[0] * k)
