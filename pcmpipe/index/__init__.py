"""Nearest-neighbour search over coordinated embeddings: an index saved beside its row ids.

index = build_index(vectors, kind="flat")          # inner product on L2-normalised rows (cosine)
save_index(out_dir, index, ids, meta)              # one folder: index.faiss + ids.json + index.json (checksums)
idx = open_index(out_dir); idx.search(queries, k)  # -> (ids [Q, k], scores [Q, k])

Modules: `params` (settings, checked before work; no torch), `store` (build, search), `flat` (exact search),
`folder` (the folder on disk: written whole, checked on open). The names below are imported on first use, so
`pcmpipe.index.params` can check a command's flags before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "INDEX_FILE": "folder",
    "IndexMeta": "folder",
    "check_output": "folder",
    "open_index": "folder",
    "save_index": "folder",
    "INDEX_KINDS": "params",
    "IndexParams": "params",
    "fit_params": "params",
    "EmbeddingIndex": "store",
    "build_index": "store",
    "normalise": "store",
}
__all__ = [
    "INDEX_FILE",
    "INDEX_KINDS",
    "EmbeddingIndex",
    "IndexMeta",
    "IndexParams",
    "build_index",
    "check_output",
    "fit_params",
    "normalise",
    "open_index",
    "save_index",
]

if TYPE_CHECKING:
    from pcmpipe.index.folder import INDEX_FILE, IndexMeta, check_output, open_index, save_index
    from pcmpipe.index.params import INDEX_KINDS, IndexParams, fit_params
    from pcmpipe.index.store import EmbeddingIndex, build_index, normalise


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"pcmpipe.index.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'pcmpipe.index' has no attribute {name!r}")
