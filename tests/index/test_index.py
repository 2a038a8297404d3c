"""FAISS indexes over embeddings: the flat index is exact (equals a matmul top-k), IVF is close, and a saved
folder reads back with its ids."""

from __future__ import annotations

import numpy as np
import pytest

from pcmpipe.errors import UserError
from pcmpipe.index import EmbeddingIndex, build_index, normalise, open_index, save_index


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((32, dim))
    return (centres[rng.integers(0, 32, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def test_flat_index_is_the_exact_cosine_top_k():
    x, q = _clustered(2000, 24), _clustered(50, 24, seed=1)
    ids = np.asarray([f"r{i}" for i in range(len(x))])
    found, scores = EmbeddingIndex(build_index(x), ids).search(q, 5)
    sim = normalise(q) @ normalise(x).T
    top = np.argsort(-sim, axis=1)[:, :5]
    np.testing.assert_allclose(scores, np.take_along_axis(sim, top, 1), atol=1e-5)
    assert (found == ids[top]).mean() > 0.99  # ties at float precision may swap


def test_ivf_recall_against_flat_and_the_saved_folder(tmp_path):
    x, q = _clustered(4000, 32), _clustered(100, 32, seed=1)
    ids = np.asarray([str(i) for i in range(len(x))])
    exact, _ = EmbeddingIndex(build_index(x), ids).search(q, 10)
    for kind in ("ivf", "ivfpq"):
        index = build_index(x, kind, nlist=16, pq_m=8)
        save_index(tmp_path / kind, index, ids, {"kind": kind, "nprobe": 4})
        back = open_index(tmp_path / kind)
        assert back.kind == kind and back.index.nprobe == 4
        got, _ = back.search(q, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
        assert recall > (0.6 if kind == "ivf" else 0.3), (kind, recall)
        back.set_nprobe(16)  # every cell: IVF-flat is exact, IVF-PQ keeps only its quantisation error
        got, _ = back.search(q, 10)
        full = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
        assert full > recall and (kind == "ivfpq" or full > 0.99), (kind, full)


def test_bad_requests_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="unknown index kind"):
        build_index(np.ones((4, 8), np.float32), "hnsw")
    with pytest.raises(UserError, match="must divide"):
        build_index(_clustered(500, 10), "ivfpq", nlist=4, pq_m=3)
    with pytest.raises(UserError, match="not an index folder"):
        open_index(tmp_path)
    save_index(tmp_path / "i", build_index(np.eye(3, dtype=np.float32)), ["a", "b", "c"], {"kind": "flat"})
    (tmp_path / "i" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged"):
        open_index(tmp_path / "i")
