"""Build and search an index over one modality's embeddings (docs/using.md, "Index").

Every index scores by inner product on L2-normalised vectors, which is the cosine the heads were trained
with (the losses normalise). Kinds:
- "flat": exact search (`pcmpipe.index.flat.FlatIndex`: blocked torch matmul + top-k, vectors kept at their
  float16 or float32 precision); the default, and the reference the others are measured against;
- "ivf": IndexIVFFlat, `nlist` k-means cells of which `nprobe` are visited per query;
- "ivfpq": IndexIVFPQ, the same cells with vectors compressed to `pq_m` bytes (8-bit codes).

The settings are checked (`pcmpipe.index.params`) with the gallery's size and dimension before anything is
trained. How a built index is saved and opened is `pcmpipe.index.folder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcmpipe.errors import UserError
from pcmpipe.index.flat import FlatIndex
from pcmpipe.index.params import INDEX_KINDS, PQ_NBITS, fit_params
from pcmpipe.limits import check_int

__all__ = ["INDEX_KINDS", "EmbeddingIndex", "build_index", "normalise"]


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (what FAISS takes); zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected [N, D] vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def build_index(
    vectors: np.ndarray,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    pq_m: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> Any:
    """An index over `vectors` [N, D] (normalised here). Flat: a FlatIndex holding float16 vectors as float16
    (normalised in float32, then rounded), anything else as float32. IVF kinds: FAISS, cells trained on the
    vectors. Settings as `fit_params` (checked before any training)."""
    x = normalise(vectors)
    p = fit_params(kind, x.shape[0], x.shape[1], nlist, nprobe, pq_m)
    if p.kind == "flat":
        return FlatIndex(x.astype(np.float16) if np.asarray(vectors).dtype == np.float16 else x)
    import faiss

    dim, nlist = x.shape[1], int(p.nlist or 1)
    quantizer = faiss.IndexFlatIP(dim)
    index: Any
    if p.kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, int(p.pq_m or 1), PQ_NBITS, faiss.METRIC_INNER_PRODUCT)
        # fit_params has said what FAISS's stderr warning would; the warning itself is not pcmpipe's output
        index.pq.cp.min_points_per_centroid = 1
    index.cp.min_points_per_centroid = 1
    index.cp.seed = seed  # k-means initialisation: same vectors and seed -> same index
    index.train(x)
    index.nprobe = p.nprobe
    index.add(x)
    return index


@dataclass
class EmbeddingIndex:
    """An index with the ids of its rows, in index order."""

    index: Any
    ids: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "flat"))

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def set_nprobe(self, nprobe: int) -> None:
        """IVF kinds: cells visited per query, 1 to nlist (more: slower, closer to exact)."""
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = check_int("nprobe", nprobe, low=1, high=int(self.index.nlist), why="the cells")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` rows per query -> (ids [Q, k'] str, cosine scores [Q, k'] float32), k' = min(k, N)."""
        k = min(int(k), len(self.ids))
        if k < 1:
            raise UserError("-k must be at least 1")
        q = normalise(queries)
        if q.shape[1] != self.dim:
            raise UserError(f"queries have {q.shape[1]} dimensions, the index {self.dim}")
        scores, rows = self.index.search(q, k)
        # IVF may find fewer than k in the visited cells: FAISS pads with -1, dropped from the answer by callers
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], "")
        return ids, scores
