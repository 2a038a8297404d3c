"""Query / database enrichment (Sec. 4.4): id-aligned fusion of normalised embeddings, r@1 of the fused sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcmpipe.errors import UserError
from pcmpipe.evaluation.embeddings import RunEmbeddings
from pcmpipe.evaluation.enrichment import enrichment_table, fuse, parse_block, recall_at_1
from pcmpipe.evaluation.metrics import recall_at_k


def _emb(vectors, key, **columns) -> RunEmbeddings:
    cols = {k: np.asarray(v, dtype=str) for k, v in columns.items()}
    cols.setdefault("id", cols[key])
    return RunEmbeddings(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), key, cols)


def test_fuse_image_with_its_class_embedding():
    i = _emb([[3.0, 4.0], [0.0, 2.0]], "image_id", image_id=["a", "b"], class_id=["1", "0"])
    c = _emb([[1.0, 0.0], [0.0, 5.0]], "class_id", class_id=["0", "1"])
    out = fuse({"I": i, "C": c}, ["I", "C"])
    assert out.key == "image_id" and out.columns["image_id"].tolist() == ["a", "b"]
    expected = torch.stack(
        [
            (torch.tensor([0.6, 0.8]) + torch.tensor([0.0, 1.0])) / 2,
            (torch.tensor([0.0, 1.0]) + torch.tensor([1.0, 0.0])) / 2,
        ]
    )
    assert torch.allclose(out.embedding, expected, atol=1e-6)


def test_fuse_picks_the_finest_modality_as_base_and_drops_unpaired_rows():
    # Flickr8k-like: S per caption (carries image_id), I per image; caption "c#0" has no image row.
    i = _emb([[1.0, 0.0]], "image_id", image_id=["a"])
    s = _emb(
        [[0.0, 1.0], [0.0, 2.0], [1.0, 1.0]], "caption_id", caption_id=["a#0", "a#1", "c#0"], image_id=["a", "a", "c"]
    )
    out = fuse({"I": i, "S": s}, ["I", "S"])
    assert out.key == "caption_id" and out.columns["caption_id"].tolist() == ["a#0", "a#1"]
    assert torch.allclose(out.embedding, torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(UserError, match="cannot align"):
        fuse({"I": i, "X": _emb([[1.0, 0.0]], "other_id", other_id=["z"])}, ["I", "X"])


def _brute_r1(q: RunEmbeddings, g: RunEmbeddings, col: str) -> float:
    """Loop reference: a query scores when its most cosine-similar gallery row shares its `col` id."""
    hits = 0
    for k in range(len(q.embedding)):
        sims = [float(F.cosine_similarity(q.embedding[k], g.embedding[j], dim=0)) for j in range(len(g.embedding))]
        hits += g.columns[col][int(np.argmax(sims))] == q.columns[col][k]
    return 100.0 * hits / len(q.embedding)


def test_recall_at_1_matches_a_loop_reference_at_both_levels():
    rng = np.random.default_rng(1)
    img = [f"i{k}" for k in range(30)]
    cls = [str(k % 5) for k in range(30)]
    i = _emb(rng.standard_normal((30, 8)), "image_id", image_id=img, class_id=cls)
    t = _emb(
        rng.standard_normal((60, 8)),
        "caption_id",
        caption_id=[f"{x}#{k}" for x in img for k in range(2)],
        image_id=np.repeat(img, 2),
        class_id=np.repeat(cls, 2),
    )
    assert recall_at_1(i, t, "instance", block=7) == pytest.approx(_brute_r1(i, t, "image_id"))
    assert recall_at_1(t, i, "class", block=7) == pytest.approx(_brute_r1(t, i, "class_id"))


def test_recall_at_1_is_metrics_recall_at_k_and_skips_queries_without_a_positive():
    rng = np.random.default_rng(2)
    q = _emb(rng.standard_normal((9, 4)), "class_id", class_id=[str(k % 4) for k in range(9)])  # class 3: no row
    g = _emb(rng.standard_normal((6, 4)), "class_id", class_id=[str(k % 3) for k in range(6)])
    sim = F.normalize(q.embedding, dim=-1) @ F.normalize(g.embedding, dim=-1).T
    positives = torch.as_tensor(q.columns["class_id"][:, None] == g.columns["class_id"][None, :])
    assert recall_at_1(q, g, "class", block=4) == pytest.approx(100.0 * recall_at_k(sim, positives, 1))
    assert np.isnan(recall_at_1(_emb([[1.0, 0.0]], "class_id", class_id=["9"]), g, "class"))


def test_enrichment_with_class_embeddings_helps_when_class_carries_the_signal():
    # Text queries are nearly uninformative; images of a class sit at scattered places. Adding the class
    # embedding to the query ({}->I with T+C) or to the database (T->{} with I+C) makes class-level r@1 high.
    rng = np.random.default_rng(2)
    k, n = 6, 60
    centres = F.normalize(torch.as_tensor(rng.standard_normal((k, 32)), dtype=torch.float32), dim=1)
    cls = np.arange(n) % k
    img = [f"im{j}" for j in range(n)]
    i_vec = 0.6 * centres[cls] + torch.as_tensor(rng.standard_normal((n, 32)), dtype=torch.float32) / 4
    t_vec = 0.15 * centres[cls] + torch.as_tensor(rng.standard_normal((n, 32)), dtype=torch.float32) / 4
    embs = {
        "I": _emb(i_vec.numpy(), "image_id", image_id=img, class_id=cls),
        "T": _emb(t_vec.numpy(), "caption_id", caption_id=[f"{x}#0" for x in img], image_id=img, class_id=cls),
        "C": _emb(centres.numpy(), "class_id", class_id=np.arange(k)),
    }
    table = enrichment_table(embs, {"{}->I": ["T", "T+C"], "T->{}": ["I", "I+C"]}, "class")
    assert table["{}->I"]["T+C"] > table["{}->I"]["T"] + 30
    assert table["T->{}"]["I+C"] >= table["T->{}"]["I"]
    # the plain cells are the ordinary directions
    assert table["{}->I"]["T"] == pytest.approx(recall_at_1(embs["T"], embs["I"], "class"))
    assert table["T->{}"]["I"] == pytest.approx(table["{}->I"]["T"])


def test_block_syntax():
    assert parse_block("{}->T") == ("query", "T")
    assert parse_block("I -> {}") == ("database", "I")
    for bad in ("T->I", "{}->{}", "T"):
        with pytest.raises(UserError):
            parse_block(bad)
