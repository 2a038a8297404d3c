"""Nearest-neighbour search over coordinated embeddings: a FAISS index saved beside its row ids.

index = build_index(vectors, kind="flat")          # inner product on L2-normalised rows (cosine)
save_index(out_dir, index, ids, meta)              # index.faiss (FAISS's own format) + ids.json
idx = open_index(out_dir); idx.search(queries, k)  # -> (ids [Q, k], scores [Q, k])
"""

from pcmpipe.index.store import INDEX_KINDS, EmbeddingIndex, build_index, normalise, open_index, save_index

__all__ = ["INDEX_KINDS", "EmbeddingIndex", "build_index", "normalise", "open_index", "save_index"]
