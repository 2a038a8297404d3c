"""Exact (flat) search as blocked matrix products: the cost of the matmul itself, not of FAISS's flat scan.

FAISS's IndexFlatIP on one thread ran at 0.05 x a plain `torch.mm` of the same queries and gallery
(docs/performance.md, "search"): it scores in its own kernels, where torch calls the BLAS. Here the gallery is
scanned in blocks of rows sized so that one block of scores stays in cache (`rows_per_block`); each block is
scored by one `torch.mm` into a reused buffer, and only the queries whose best score in the block beats their
current k-th best run a top-k over it (after the first blocks, most do not), then merge into the running top k.

The vectors stay at the precision they were given: float16 embeddings (`pcmpipe embed --dtype float16`) are kept
as float16 (half the memory and disk) and each block is widened to float32 before its matmul, so the scores
are float32 products of the stored values: the same numbers FAISS's flat index computes from them.

On disk a flat index is a FAISS file like the others: float32 vectors as IndexFlatIP (what earlier versions
wrote, so their indexes open unchanged) and float16 vectors as IndexScalarQuantizer QT_fp16, whose codes are the
raw IEEE halves (so `faiss.read_index` users still get a working index).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

QUERY_BLOCK = 1024  # queries scored together (bounds the score buffer for large query sets)
SCORES_PER_BLOCK = 1 << 20  # 4 MB of float32 scores per block: block and buffers stay in L2/L3 cache


def rows_per_block(queries: int) -> int:
    """Gallery rows per block: about SCORES_PER_BLOCK scores, at least 2,048 rows (BLAS efficiency)."""
    return max(2048, min(65536, SCORES_PER_BLOCK // max(1, queries)))


class FlatIndex:
    """Exact inner-product search over rows [N, D] (float32 or float16), FAISS-like: `search(q, k)` ->
    (scores [Q, k] float32, rows [Q, k] int64; beyond N rows -1, scores -inf), `ntotal`, `d`."""

    def __init__(self, vectors: np.ndarray | torch.Tensor):
        v = torch.as_tensor(vectors)
        if v.ndim != 2 or v.dtype not in (torch.float32, torch.float16):
            raise ValueError(f"expected float32 or float16 [N, D] vectors, got {v.dtype} {tuple(v.shape)}")
        self.vectors = v.contiguous()

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def d(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def dtype(self) -> str:
        return "float16" if self.vectors.dtype == torch.float16 else "float32"

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # the queries go to the vectors' device: a FlatIndex built from a CUDA tensor searches on the GPU
        q = torch.as_tensor(np.ascontiguousarray(queries, dtype=np.float32)).to(self.vectors.device)
        if q.ndim != 2 or q.shape[1] != self.d:
            raise ValueError(f"queries of shape {tuple(q.shape)} for an index of dimension {self.d}")
        # as FAISS: k columns, the ones past the gallery's size padded with row -1
        scores = np.full((q.shape[0], k), -np.inf, np.float32)
        rows = np.full((q.shape[0], k), -1, np.int64)
        found = min(int(k), self.ntotal)
        if found < 1:
            return scores, rows
        for q0 in range(0, q.shape[0], QUERY_BLOCK):
            s, r = self._search_block(q[q0 : q0 + QUERY_BLOCK], found)
            scores[q0 : q0 + QUERY_BLOCK, :found], rows[q0 : q0 + QUERY_BLOCK, :found] = (
                s.cpu().numpy(),
                r.cpu().numpy(),
            )
        return scores, rows

    def _search_block(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_q, dev = q.shape[0], self.vectors.device
        # on a GPU there is no cache to fit: blocks 64 x larger, so fewer launches and fewer syncs (nonzero)
        step = rows_per_block(n_q) if dev.type == "cpu" else min(self.ntotal, rows_per_block(n_q) * 64)
        widen = self.vectors.dtype != torch.float32
        wide = torch.empty((step, self.d), dtype=torch.float32, device=dev) if widen else None
        buf = torch.empty((n_q, step), dtype=torch.float32, device=dev)
        best = torch.full((n_q, k), -torch.inf, device=dev)
        best_rows = torch.zeros((n_q, k), dtype=torch.int64, device=dev)
        everyone = torch.arange(n_q, device=dev)
        for r0 in range(0, self.ntotal, step):
            block = self.vectors[r0 : r0 + step]
            n = block.shape[0]
            if wide is not None:
                block = wide[:n].copy_(block)
            s = buf[:, :n]
            torch.mm(q, block.T, out=s)
            # only queries with a score above their current k-th best can change their top k
            need = everyone if r0 == 0 else torch.nonzero(s.amax(1) > best[:, -1]).squeeze(1)
            if need.numel() == 0:
                continue
            sub = s if need.numel() == n_q else s[need]
            vals, idx = torch.topk(sub, min(k, n), dim=1)
            merged_v = torch.cat([best[need], vals], 1)
            merged_r = torch.cat([best_rows[need], idx + r0], 1)
            top_v, order = torch.topk(merged_v, k, dim=1)
            best[need], best_rows[need] = top_v, merged_r.gather(1, order)
        return best, best_rows


def to_faiss(index: FlatIndex) -> Any:
    """The FAISS index that stores these vectors at their precision (module docstring)."""
    import faiss

    out: Any
    if index.dtype == "float16":
        out = faiss.IndexScalarQuantizer(index.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    else:
        out = faiss.IndexFlatIP(index.d)
    # halves widened to float32 are encoded back to the same halves: storing is lossless
    out.add(np.ascontiguousarray(index.vectors.float().numpy()))
    return out


def from_faiss(index: Any) -> FlatIndex | None:
    """The FlatIndex of a FAISS flat (IndexFlatIP, or QT_fp16 scalar quantizer) index; None for other kinds."""
    import faiss

    index = faiss.downcast_index(index)
    n, d = index.ntotal, index.d
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    if isinstance(index, faiss.IndexFlat):
        dtype: Any = np.float32
    elif isinstance(index, faiss.IndexScalarQuantizer) and index.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
        dtype = np.float16
    else:
        return None
    codes = faiss.vector_to_array(index.codes).view(dtype).reshape(n, d)
    return FlatIndex(codes)
