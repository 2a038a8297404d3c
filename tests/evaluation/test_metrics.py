"""recall@k, R-precision and per-class accuracy against torchmetrics, scikit-learn and explicit loops;
the blocked path against the dense one (ties included); peak memory of both."""

import math

import numpy as np
import pytest
import torch

from pcmpipe.evaluation.metrics import (
    peak_memory,
    per_class_accuracy,
    r_precision,
    recall_at_k,
    retrieval_metrics_blocked,
    retrieval_metrics_blocked_pair,
)


def _loop_metrics(sim, positives, ks):
    """Plain-Python reference: rank by (-sim, index), skip queries without positives."""
    sim, positives = np.asarray(sim, dtype=np.float64), np.asarray(positives, dtype=bool)
    hits = {k: [] for k in ks}
    rps = []
    for row, pos in zip(sim, positives):
        r = int(pos.sum())
        if r == 0:
            continue
        ranked = sorted(range(len(row)), key=lambda j: (-row[j], j))
        for k in ks:
            hits[k].append(any(pos[j] for j in ranked[:k]))
        rps.append(sum(pos[j] for j in ranked[:r]) / r)
    return {**{f"r@{k}": float(np.mean(hits[k])) for k in ks}, "R-P": float(np.mean(rps))}


def _random_case(Q=40, N=60, seed=0, p=0.08):
    g = torch.Generator().manual_seed(seed)
    sim = torch.rand(Q, N, generator=g, dtype=torch.float64)  # continuous: no ties
    positives = torch.rand(Q, N, generator=g) < p
    positives[:3] = False  # some queries without any positive: they are left out
    return sim, positives


def test_hand_example_with_a_tie():
    sim = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.2, 0.8, 0.8, 0.3], [0.1, 0.2, 0.3, 0.4]])
    pos = torch.tensor([[False, False, True, False], [False, True, True, False], [False] * 4])
    # query 0: order 0, 1, 2 (tie 1/2 broken by index), 3 -> its positive is 3rd
    assert recall_at_k(sim, pos, 1) == 0.5  # query 1 hits, query 2 has no positive and is skipped
    assert recall_at_k(sim, pos, 2) == 0.5
    assert recall_at_k(sim, pos, 3) == 1.0
    # R-P: query 0: R=1, top-1 = item 0 -> 0; query 1: R=2, top-2 = items 1, 2 -> 1
    assert r_precision(sim, pos) == 0.5
    assert math.isnan(recall_at_k(sim[2:], pos[2:], 1)) and math.isnan(r_precision(sim[2:], pos[2:]))


@pytest.mark.parametrize("seed", range(3))
def test_dense_metrics_match_torchmetrics(seed):
    # imported here, not at the top: torchmetrics alone takes seconds, which every collection would pay
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalRPrecision

    sim, positives = _random_case(seed=seed)
    Q, N = sim.shape
    indexes = torch.arange(Q)[:, None].expand(Q, N).reshape(-1)
    for k in (1, 5, 10):
        tm = RetrievalHitRate(top_k=k, empty_target_action="skip")
        expected = float(tm(sim.reshape(-1), positives.reshape(-1), indexes=indexes))
        assert abs(recall_at_k(sim, positives, k) - expected) < 1e-6  # torchmetrics averages in float32
    tm = RetrievalRPrecision(empty_target_action="skip")
    expected = float(tm(sim.reshape(-1), positives.reshape(-1), indexes=indexes))
    assert abs(r_precision(sim, positives) - expected) < 1e-6  # torchmetrics averages in float32


def test_dense_metrics_match_loops_with_ties_and_numpy_inputs():
    g = np.random.default_rng(1)
    sim = g.integers(0, 4, size=(30, 25)).astype(np.float32)  # many exact ties
    positives = g.random((30, 25)) < 0.15
    ref = _loop_metrics(sim, positives, (1, 3, 5))
    for k in (1, 3, 5):
        assert abs(recall_at_k(sim, positives, k) - ref[f"r@{k}"]) < 1e-12
    assert abs(r_precision(sim, positives) - ref["R-P"]) < 1e-12
    assert recall_at_k(sim, positives, 100) == 1.0  # k beyond N: everything retrieved


def test_per_class_accuracy_matches_sklearn_and_torchmetrics():
    from sklearn.metrics import balanced_accuracy_score  # as above: seconds to import
    from torchmetrics.classification import MulticlassAccuracy

    g = np.random.default_rng(2)
    target = g.integers(0, 7, size=300)
    pred = np.where(g.random(300) < 0.6, target, g.integers(0, 7, size=300))
    got = per_class_accuracy(pred, target)
    assert abs(got - balanced_accuracy_score(target, pred)) < 1e-12
    tm = MulticlassAccuracy(num_classes=7, average="macro")
    assert abs(got - float(tm(torch.as_tensor(pred), torch.as_tensor(target)))) < 1e-6
    # scores [N, C] -> argmax; string labels work too
    scores = torch.nn.functional.one_hot(torch.as_tensor(pred), 7).float() + 0.01 * torch.rand(300, 7)
    assert abs(per_class_accuracy(scores, torch.as_tensor(target)) - got) < 1e-12
    names = np.array([f"class_{i}" for i in range(7)])
    assert abs(per_class_accuracy(names[pred], names[target]) - got) < 1e-12
    # unbalanced classes: it is the mean of per-class accuracies, not the overall accuracy
    assert per_class_accuracy([0, 0, 0, 0], [0, 0, 0, 1]) == pytest.approx(0.5)  # overall accuracy is 0.75


def _labels_case(Q, N, n_classes, D, seed, integer=False):
    g = torch.Generator().manual_seed(seed)
    if integer:  # small-integer embeddings: exact dot products, exact ties, identical in any block layout
        q = torch.randint(-2, 3, (Q, D), generator=g).float()
        x = torch.randint(-2, 3, (N, D), generator=g).float()
    else:
        q = torch.nn.functional.normalize(torch.randn(Q, D, generator=g), dim=-1)
        x = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=-1)
    ql = torch.randint(0, n_classes + 2, (Q,), generator=g).numpy()  # some labels absent from the gallery
    gl = torch.randint(0, n_classes, (N,), generator=g).numpy()
    return q, x, ql, gl


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("block", [7, 16, 4096])
def test_blocked_equals_dense(integer, block):
    q, x, ql, gl = _labels_case(Q=50, N=45, n_classes=6, D=4, seed=3, integer=integer)
    sim = q @ x.T
    positives = torch.as_tensor(ql[:, None] == gl[None, :])
    got = retrieval_metrics_blocked(q, x, ql, gl, ks=(1, 5, 10), block=block)
    for k in (1, 5, 10):
        assert got[f"r@{k}"] == recall_at_k(sim, positives, k)
    assert abs(got["R-P"] - r_precision(sim, positives)) < 1e-12
    if integer:
        ref = _loop_metrics(sim, positives, (1, 5, 10))
        assert all(abs(got[key] - ref[key]) < 1e-12 for key in ref)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("block", [7, 16, 4096])
def test_pair_pass_equals_each_direction_on_its_own(integer, block):
    """Both directions from one pass over the blocks: the numbers of two separate passes, ties included."""
    a, b, la, lb = _labels_case(Q=50, N=45, n_classes=6, D=4, seed=5, integer=integer)
    got_ab, got_ba = retrieval_metrics_blocked_pair(a, b, (la, lb), (lb, la), ks=(1, 5, 10), block=block)
    assert got_ab == retrieval_metrics_blocked(a, b, la, lb, ks=(1, 5, 10), block=block)
    assert got_ba == retrieval_metrics_blocked(b, a, lb, la, ks=(1, 5, 10), block=block)
    sim = b @ a.T
    positives = torch.as_tensor(lb[:, None] == la[None, :])
    for k in (1, 5, 10):
        assert got_ba[f"r@{k}"] == recall_at_k(sim, positives, k)
    assert abs(got_ba["R-P"] - r_precision(sim, positives)) < 1e-12


def test_blocked_with_string_labels_and_no_positives():
    q, x, ql, gl = _labels_case(Q=20, N=30, n_classes=3, D=5, seed=4)
    names = np.array(["a", "b", "c", "d", "e"])
    got = retrieval_metrics_blocked(q.numpy(), x.numpy(), names[ql], names[gl], ks=(1,), block=8)
    ref = retrieval_metrics_blocked(q, x, ql, gl, ks=(1,), block=8)
    assert got == ref
    none = retrieval_metrics_blocked(q, x, np.array(["z"] * 20), names[gl], ks=(1,))
    assert all(math.isnan(v) for v in none.values())


def test_blocked_path_uses_far_less_memory(one_thread):
    torch.manual_seed(5)
    Q, N, D = 2000, 2000, 8
    q = torch.nn.functional.normalize(torch.randn(Q, D), dim=-1)
    x = torch.nn.functional.normalize(torch.randn(N, D), dim=-1)
    ql, gl = np.arange(Q) % 200, np.arange(N) % 200

    def dense():
        sim = q @ x.T
        pos = torch.as_tensor(ql[:, None] == gl[None, :])
        return {"r@1": recall_at_k(sim, pos, 1), "R-P": r_precision(sim, pos)}

    dense_result, dense_peak = peak_memory(dense)
    blocked_result, blocked_peak = peak_memory(retrieval_metrics_blocked, q, x, ql, gl, ks=(1,), block=512)
    assert blocked_result["r@1"] == dense_result["r@1"]
    assert abs(blocked_result["R-P"] - dense_result["R-P"]) < 1e-12
    # dense holds [Q, N] floats, int64 sort indices and cumsums (~100 MB); blocked a few 512 x 512 tiles
    assert dense_peak > 50 * 2**20
    assert blocked_peak < dense_peak / 4
