"""Build, save and open a FAISS index over one modality's embeddings (docs/using.md, "Index").

Every index scores by inner product on L2-normalised vectors, which is the cosine the heads were trained
with (the losses normalise). Kinds:
- "flat": exact search (`pcmpipe.index.flat.FlatIndex`: blocked torch matmul + top-k, vectors kept at their
  float16 or float32 precision); the default, and the reference the others are measured against;
- "ivf": IndexIVFFlat, `nlist` k-means cells of which `nprobe` are visited per query;
- "ivfpq": IndexIVFPQ, the same cells with vectors compressed to `pq_m` bytes (8-bit codes).

On disk a saved index is a folder: `index.faiss` (written by faiss.write_index: FAISS's own binary format,
read back by faiss.read_index; never a pickle; a flat index as IndexFlatIP or, for float16 vectors, a QT_fp16
scalar quantizer), `ids.json` (the row ids in index order) and `index.json`
(kind, parameters, dimension, what the embeddings came from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcmpipe import atomic
from pcmpipe.errors import UserError
from pcmpipe.index.flat import FlatIndex, from_faiss, to_faiss

INDEX_KINDS = ("flat", "ivf", "ivfpq")
INDEX_FILE, IDS_FILE, META_FILE = "index.faiss", "ids.json", "index.json"


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (what FAISS takes); zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected [N, D] vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def build_index(
    vectors: np.ndarray, kind: str = "flat", *, nlist: int | None = None, pq_m: int = 16, seed: int = 0
) -> Any:
    """An index over `vectors` [N, D] (normalised here). Flat: a FlatIndex holding float16 vectors as float16
    (normalised in float32, then rounded), anything else as float32. IVF kinds: FAISS, cells trained on the vectors.

    nlist: IVF cells (default about 4 * sqrt(N), at most N / 39 so k-means has its 39 points per cell);
    pq_m: bytes per vector for "ivfpq" (must divide D)."""
    import faiss

    if kind not in INDEX_KINDS:
        raise UserError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    x = normalise(vectors)
    n, dim = x.shape
    if n == 0:
        raise UserError("no embeddings to index")
    if kind == "flat":
        return FlatIndex(x.astype(np.float16) if np.asarray(vectors).dtype == np.float16 else x)
    index: Any
    if nlist is None:
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
    if nlist > n:
        raise UserError(f"--nlist {nlist} is more than the {n} embeddings; lower it or use --kind flat")
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        if dim % pq_m:
            raise UserError(f"--pq-m {pq_m} must divide the embedding size {dim}")
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed  # k-means initialisation: same vectors and seed -> same index
    index.train(x)
    index.nprobe = min(nlist, 8)
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

    def set_nprobe(self, nprobe: int) -> None:
        """IVF kinds: cells visited per query (more: slower, closer to exact)."""
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = int(nprobe)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` rows per query -> (ids [Q, k'] str, cosine scores [Q, k'] float32), k' = min(k, N)."""
        k = min(int(k), len(self.ids))
        if k < 1:
            raise UserError("-k must be at least 1")
        scores, rows = self.index.search(normalise(queries), k)
        # IVF may find fewer than k in the visited cells: FAISS pads with -1, dropped from the answer by callers
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], "")
        return ids, scores


def save_index(directory: str | Path, index: Any, ids: list[str] | np.ndarray, meta: dict) -> Path:
    """Write `index.faiss`, `ids.json` and `index.json` into `directory` (each file atomically)."""
    import faiss

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in ids]
    if len(ids) != index.ntotal:
        raise ValueError(f"{len(ids)} ids for an index of {index.ntotal} rows")
    if isinstance(index, FlatIndex):
        meta = {**meta, "dtype": index.dtype}
        index = to_faiss(index)
    with atomic.atomic_path(directory / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    atomic.write_json(directory / IDS_FILE, ids, indent=None)
    atomic.write_json(directory / META_FILE, {**meta, "rows": len(ids), "dim": int(index.d)})
    return directory


def open_index(directory: str | Path) -> EmbeddingIndex:
    """Read a folder written by `save_index`; UserError if it is not one."""
    import faiss

    directory = Path(directory)
    paths = [directory / n for n in (INDEX_FILE, IDS_FILE, META_FILE)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{directory} is not an index folder (no {', '.join(missing)}); build one with `pcmpipe index`")
    try:
        ids = np.asarray(json.loads(paths[1].read_text(encoding="utf-8")), dtype=str)
        meta = json.loads(paths[2].read_text(encoding="utf-8"))
        index = faiss.read_index(str(paths[0]))
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"index folder {directory} is damaged ({type(e).__name__}); rebuild it with `pcmpipe index`"
        ) from None
    if index.ntotal != len(ids):
        raise UserError(f"index folder {directory} holds {index.ntotal} vectors but {len(ids)} ids; rebuild it")
    # flat files (this version's, and IndexFlatIP from earlier ones) are searched by FlatIndex, not FAISS
    flat = from_faiss(index)
    out = EmbeddingIndex(index if flat is None else flat, ids, meta)
    if "nprobe" in meta:
        out.set_nprobe(meta["nprobe"])
    return out
