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


def test_flat_search_in_blocks_equals_faiss_flat_and_keeps_float16(tmp_path):
    """Several blocks of rows (512 queries: 2,048-row blocks), most queries skipping later blocks; float16 rows
    stay float16 in memory and on disk, and the top-k ids are FAISS IndexFlatIP's on the same values."""
    import faiss

    from pcmpipe.index.flat import FlatIndex, rows_per_block

    x16, q = _clustered(9000, 32).astype(np.float16), _clustered(512, 32, seed=1)
    assert rows_per_block(len(q)) < len(x16) / 4
    ids = np.asarray([str(i) for i in range(len(x16))])
    flat = build_index(x16)
    assert isinstance(flat, FlatIndex) and flat.dtype == "float16"
    reference = faiss.IndexFlatIP(32)
    reference.add(normalise(x16).astype(np.float16).astype(np.float32))
    want_scores, want_rows = reference.search(normalise(q), 10)
    got, scores = EmbeddingIndex(flat, ids).search(q, 10)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (got == ids[want_rows]).mean() > 0.99  # ties at float precision may swap
    save_index(tmp_path / "f16", flat, ids, {"kind": "flat"})
    assert (tmp_path / "f16" / "index.faiss").stat().st_size < len(x16) * 32 * 2 + 4096  # two bytes a value
    back = open_index(tmp_path / "f16")
    assert isinstance(back.index, FlatIndex) and back.index.dtype == "float16" and back.meta["dtype"] == "float16"
    assert (back.search(q, 10)[0] == got).all()


def test_a_flat_index_written_by_faiss_indexflatip_still_opens(tmp_path):
    """Earlier versions saved flat indexes as faiss IndexFlatIP: they open, and search like a new one."""
    import faiss

    from pcmpipe.index.flat import FlatIndex

    x, q = normalise(_clustered(3000, 16)), _clustered(20, 16, seed=1)
    old = faiss.IndexFlatIP(16)
    old.add(x)
    ids = np.asarray([f"r{i}" for i in range(len(x))])
    save_index(tmp_path / "old", old, ids, {"kind": "flat"})
    back = open_index(tmp_path / "old")
    assert isinstance(back.index, FlatIndex) and back.index.dtype == "float32"
    want_scores, want_rows = old.search(normalise(q), 4)
    got, scores = back.search(q, 4)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (got == ids[want_rows]).mean() > 0.99


def test_flat_pads_like_faiss_when_k_exceeds_the_rows():
    import faiss

    from pcmpipe.index.flat import FlatIndex

    x, q = normalise(_clustered(5, 8)), normalise(_clustered(3, 8, seed=1))
    reference = faiss.IndexFlatIP(8)
    reference.add(x)
    want_scores, want_rows = reference.search(q, 8)
    scores, rows = FlatIndex(x).search(q, 8)
    assert rows.shape == (3, 8) and (rows[:, 5:] == -1).all() and (want_rows[:, 5:] == -1).all()
    assert (rows[:, :5] == want_rows[:, :5]).mean() > 0.9
    np.testing.assert_allclose(scores[:, :5], want_scores[:, :5], atol=1e-6)
