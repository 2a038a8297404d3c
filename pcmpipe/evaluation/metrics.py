"""Retrieval and classification metrics: recall@k, R-precision, per-class accuracy; dense and blocked.

Conventions (docs/conventions.md):
- Ranking is stable: items are ordered by descending similarity, ties by ascending gallery index, so a tie
  never counts in the query's favour by accident of the sort algorithm. (torchmetrics sorts with a plain
  argsort; on tie-free scores the two agree exactly, which the tests check.)
- recall@k: the fraction of queries WITH at least one positive whose top k holds a positive. Queries without
  positives are left out (torchmetrics' `empty_target_action="skip"`). NaN if no query has a positive.
- R-precision: the mean over queries with positives of (#positives in the top R) / R, R = the query's number
  of positives (Musgrave et al., "A metric learning reality check").
- Metrics return fractions in [0, 1]; `retrieval.evaluate_directions` reports percent.

`retrieval_metrics_blocked` computes the same numbers from embeddings and labels without forming the
[Q, N] matrix: per block of queries it streams over blocks of the gallery keeping a running top-K
(K = max(k, largest R in the block)) in the same stable order. `peak_memory` measures what that saves.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _tensor(x: Any, dtype: torch.dtype | None = None) -> Tensor:
    """numpy or torch -> CPU torch tensor (no copy when possible)."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().cpu()
    return t if dtype is None else t.to(dtype)


def stable_order(sim: Tensor) -> Tensor:
    """sim [Q, N] -> gallery indices [Q, N] by descending similarity, ties by ascending index."""
    return torch.argsort(-sim, dim=1, stable=True)


def _check_pair(sim: Tensor, positives: Tensor) -> None:
    if sim.ndim != 2 or sim.shape != positives.shape:
        raise ValueError(f"sim and positives must both be [Q, N], got {tuple(sim.shape)} and {tuple(positives.shape)}")


def recall_at_k(sim: Any, positives: Any, k: int) -> float:
    """Fraction of queries with a positive whose top k holds one. sim [Q, N] float, positives [Q, N] bool."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sim, positives = _tensor(sim), _tensor(positives, torch.bool)
    _check_pair(sim, positives)
    valid = positives.any(1)
    if not bool(valid.any()):
        return float("nan")
    hits = positives[valid].gather(1, stable_order(sim[valid])[:, :k])  # [Qv, min(k, N)]
    return float(hits.any(1).double().mean())


def r_precision(sim: Any, positives: Any) -> float:
    """Mean over queries with a positive of (#positives in the top R) / R. sim [Q, N], positives [Q, N] bool."""
    sim, positives = _tensor(sim), _tensor(positives, torch.bool)
    _check_pair(sim, positives)
    valid = positives.any(1)
    if not bool(valid.any()):
        return float("nan")
    pos = positives[valid]
    r = pos.sum(1)  # [Qv]
    ranked = pos.gather(1, stable_order(sim[valid])).cumsum(1)  # [Qv, N]: positives within the top j+1
    in_top_r = ranked.gather(1, (r - 1)[:, None])[:, 0]
    return float((in_top_r.double() / r.double()).mean())


def per_class_accuracy(pred: Any, target: Any) -> float:
    """Mean over the classes present in `target` of the top-1 accuracy on that class's samples.

    pred: predicted labels [N] (ints or strings), or scores [N, C] (argmax; ties -> lowest class index).
    target: true labels [N]. This is the "average per-class accuracy" (T1) of zero-shot learning.
    """
    pred_a = pred.detach().cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)
    target_a = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    if pred_a.ndim == 2:
        pred_a = torch.as_tensor(pred_a).argmax(1).numpy()  # torch.argmax returns the first maximum
    if pred_a.shape != target_a.shape or target_a.ndim != 1:
        raise ValueError(f"pred [N] (or [N, C]) and target [N] do not match: {pred_a.shape} vs {target_a.shape}")
    if target_a.size == 0:
        return float("nan")
    classes, inverse = np.unique(target_a, return_inverse=True)
    correct = (pred_a == target_a).astype(np.float64)
    per_class = np.bincount(inverse, weights=correct, minlength=len(classes)) / np.bincount(inverse)
    return float(per_class.mean())


# ---------------------------------------------------------------- blocked evaluation


def _codes(query_labels: Any, gallery_labels: Any) -> tuple[Tensor, Tensor]:
    """Arbitrary labels (str, int) -> int64 codes shared by queries and gallery."""
    q, g = np.asarray(query_labels), np.asarray(gallery_labels)
    _, inverse = np.unique(np.concatenate([q.astype(object), g.astype(object)]).astype(str), return_inverse=True)
    codes = torch.as_tensor(inverse.reshape(-1), dtype=torch.long)
    return codes[: len(q)], codes[len(q) :]


def _sort_stable(vals: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder each row by (value desc, index asc)."""
    o = idx.argsort(dim=1)
    vals, idx = vals.gather(1, o), idx.gather(1, o)
    o = torch.argsort(-vals, dim=1, stable=True)
    return vals.gather(1, o), idx.gather(1, o)


def _stable_topk(sim: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first k items of `stable_order(sim)` and their values, via topk. sim [b, n] -> ([b, k], [b, k])."""
    k = min(k, sim.shape[1])
    # topk picks arbitrarily among items tied with the k-th value; redo those (rare) rows with a stable sort.
    # One value more than needed tells which rows those are: the k-th value is tied with an item left out
    # exactly when the (k+1)-th equals it (comparing whole rows with it cost more than the topk itself).
    if k < sim.shape[1]:
        vals, idx = sim.topk(k + 1, dim=1)
        spill = vals[:, k - 1] == vals[:, k]
        vals, idx = vals[:, :k], idx[:, :k]
    else:
        vals, idx = sim.topk(k, dim=1)
        spill = torch.zeros(sim.shape[0], dtype=torch.bool, device=sim.device)
    if bool(spill.any()):
        rows = spill.nonzero(as_tuple=True)[0]
        order = stable_order(sim[rows])[:, :k]
        idx[rows] = order
        vals[rows] = sim[rows].gather(1, order)
    return _sort_stable(vals, idx)


# Entries of a running top-K held at once (values and indices: 12 bytes each, ~0.2 GiB); see the callers.
_TOP_ENTRIES = 1 << 24


def retrieval_metrics_blocked(
    query_emb: Any,
    gallery_emb: Any,
    query_labels: Any,
    gallery_labels: Any,
    ks: Sequence[int] = (1, 5),
    block: int = 4096,
) -> dict[str, float]:
    """recall@k for every k in ks and R-precision, positives = equal labels, without the [Q, N] matrix.

    query_emb [Q, D], gallery_emb [N, D]: similarity is their dot product (pass L2-normalised rows for cosine).
    query_labels [Q], gallery_labels [N]: any hashable values. Peak extra memory ~ block * (block + 2K) values.
    Returns {"r@k": fraction, ..., "R-P": fraction}; equals recall_at_k / r_precision on the dense matrix.
    """
    q, g = _embeddings(query_emb, gallery_emb, ks)
    q_codes, g_codes = _codes(query_labels, gallery_labels)
    if len(q_codes) != q.shape[0] or len(g_codes) != g.shape[0]:
        raise ValueError("one label per query row and per gallery row is needed")
    r_all = _positives(q_codes, g_codes)  # [Q]: positives per query
    # The running top-K is [query block, K]: with K up to the largest R (class level: every image of a class),
    # fewer query rows a block keep it bounded (~_TOP_ENTRIES entries) at any gallery size.
    largest = min(max(max(ks), int(r_all.max()) if len(r_all) else 0), g.shape[0])
    block_q = max(1, min(block, _TOP_ENTRIES // max(1, largest)))

    hit_sums = {k: 0.0 for k in ks}
    rp_sum, n_valid = 0.0, 0
    for q0 in range(0, q.shape[0], block_q):
        qb, codes, r = q[q0 : q0 + block_q], q_codes[q0 : q0 + block_q], r_all[q0 : q0 + block_q]
        valid = r > 0
        if not bool(valid.any()):
            continue
        qb, codes, r = qb[valid], codes[valid], r[valid]
        top = min(max(max(ks), int(r.max())), g.shape[0])
        run = None
        for g0 in range(0, g.shape[0], block):
            vals, idx = _stable_topk(qb @ g[g0 : g0 + block].T, top)
            run = _merge_top(run, vals, idx + g0, top)
        assert run is not None  # a query with a positive means a non-empty gallery, so the loop ran
        found, rp = _score_rows(run[1], codes, g_codes, r, ks)
        hit_sums = {k: hit_sums[k] + found[k] for k in ks}
        rp_sum, n_valid = rp_sum + rp, n_valid + int(valid.sum())
    return _result(hit_sums, rp_sum, n_valid, ks)


def _embeddings(q_emb: Any, g_emb: Any, ks: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Both sides as tensors of one dtype, checked: [Q, D] and [N, D], and positive ks."""
    q, g = _tensor(q_emb), _tensor(g_emb)
    dtype = torch.promote_types(q.dtype, g.dtype)
    q, g = q.to(dtype), g.to(dtype)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings must be [Q, D] and [N, D], got {tuple(q.shape)} and {tuple(g.shape)}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive, got {ks}")
    return q, g


def _positives(q_codes: Tensor, g_codes: Tensor) -> Tensor:
    """Per query, how many gallery rows share its label code."""
    n_codes = int(torch.cat([q_codes, g_codes]).max()) + 1 if len(q_codes) + len(g_codes) else 0
    return torch.bincount(g_codes, minlength=n_codes)[q_codes]


def _result(hits: dict, rp: float, n: int, ks: Sequence[int]) -> dict[str, float]:
    """Fractions over the n queries that have a positive (NaN when none has)."""
    if n == 0:
        return {**{f"r@{k}": float("nan") for k in ks}, "R-P": float("nan")}
    return {**{f"r@{k}": hits[k] / n for k in ks}, "R-P": rp / n}


def _merge_top(run: tuple[Tensor, Tensor] | None, vals: Tensor, idx: Tensor, top: int) -> tuple[Tensor, Tensor]:
    """Running top-`top` per row: earlier entries come first and have lower indices, so a stable sort by value
    keeps ties index-ordered, as `stable_order` over the whole row would."""
    if run is None:
        return vals, idx
    vals, idx = torch.cat([run[0], vals], 1), torch.cat([run[1], idx], 1)
    o = torch.argsort(-vals, dim=1, stable=True)[:, :top]
    return vals.gather(1, o), idx.gather(1, o)


def _score_rows(run_idx: Tensor, codes: Tensor, g_codes: Tensor, r: Tensor, ks: Sequence[int]) -> tuple[dict, float]:
    """Hits per k and the R-precision sum of queries whose ranked top entries are `run_idx` [n, top]."""
    hits = g_codes[run_idx] == codes[:, None]
    found = {k: float(hits[:, :k].any(1).double().sum()) for k in ks}
    in_top_r = hits.cumsum(1).gather(1, (r - 1)[:, None])[:, 0]
    return found, float((in_top_r.double() / r.double()).sum())


def retrieval_metrics_blocked_pair(
    a_emb: Any,
    b_emb: Any,
    ab_labels: tuple[Any, Any],
    ba_labels: tuple[Any, Any],
    ks: Sequence[int] = (1, 5),
    block: int = 4096,
) -> tuple[dict[str, float], dict[str, float]]:
    """Both directions A->B and B->A from one pass over the similarity blocks: each block A_i B_j^T is ranked
    along its rows for A's queries and along its columns for B's, so every product is computed once.

    ab_labels: (labels of A as queries, labels of B as gallery); ba_labels: (B as queries, A as gallery).
    Returns (A->B, B->A), each equal to `retrieval_metrics_blocked` of that direction (same ties, same values).
    Extra memory: one block, a running top-K per A query of the current block and per B query.
    """
    a, b = _embeddings(a_emb, b_emb, ks)
    qa, gb = _codes(*ab_labels)
    qb, ga = _codes(*ba_labels)
    if len(qa) != a.shape[0] or len(gb) != b.shape[0] or len(qb) != b.shape[0] or len(ga) != a.shape[0]:
        raise ValueError("one label per row of each side is needed, for each direction")
    r_a, r_b = _positives(qa, gb), _positives(qb, ga)
    if len(r_b) * min(max(max(ks), int(r_b.max()) if len(r_b) else 0), a.shape[0]) > _TOP_ENTRIES:
        # B's running top-K is held for every B query at once: past the bound, two one-way passes (twice the
        # products, memory bounded by blocks on both sides).
        return (
            retrieval_metrics_blocked(a, b, *ab_labels, ks=ks, block=block),
            retrieval_metrics_blocked(b, a, *ba_labels, ks=ks, block=block),
        )
    valid_b = (r_b > 0).nonzero(as_tuple=True)[0]  # B queries that have a positive
    top_b = min(max(max(ks), int(r_b.max()) if len(r_b) else 0), a.shape[0])
    run_b: list[tuple[Tensor, Tensor] | None] = [None] * len(range(0, b.shape[0], block))
    hit_a, rp_a, n_a = {k: 0.0 for k in ks}, 0.0, 0
    for a0 in range(0, a.shape[0], block):
        ab = a[a0 : a0 + block]
        rows = (r_a[a0 : a0 + block] > 0).nonzero(as_tuple=True)[0]
        top_a = min(max(max(ks), int(r_a[a0 : a0 + block][rows].max()) if len(rows) else 0), b.shape[0])
        run_a = None
        for j, b0 in enumerate(range(0, b.shape[0], block)):
            sim = ab @ b[b0 : b0 + block].T  # [a rows, b rows]: the one product both directions use
            # Rows or columns are selected only when some query has no positive: a selection copies the block.
            if len(rows):
                vals, idx = _stable_topk(sim if len(rows) == sim.shape[0] else sim[rows], top_a)
                run_a = _merge_top(run_a, vals, idx + b0, top_a)
            cols = valid_b[(valid_b >= b0) & (valid_b < b0 + block)] - b0
            if len(cols):
                vals, idx = _stable_topk(sim.T if len(cols) == sim.shape[1] else sim.T[cols], top_b)
                run_b[j] = _merge_top(run_b[j], vals, idx + a0, top_b)
        if run_a is not None:
            found, rp = _score_rows(run_a[1], qa[a0 : a0 + block][rows], gb, r_a[a0 : a0 + block][rows], ks)
            hit_a = {k: hit_a[k] + found[k] for k in ks}
            rp_a, n_a = rp_a + rp, n_a + len(rows)
    hit_b, rp_b, n_b = {k: 0.0 for k in ks}, 0.0, 0
    for j, b0 in enumerate(range(0, b.shape[0], block)):
        run = run_b[j]
        if run is None:
            continue
        q = valid_b[(valid_b >= b0) & (valid_b < b0 + block)]
        found, rp = _score_rows(run[1], qb[q], ga, r_b[q], ks)
        hit_b = {k: hit_b[k] + found[k] for k in ks}
        rp_b, n_b = rp_b + rp, n_b + len(q)
    return _result(hit_a, rp_a, n_a, ks), _result(hit_b, rp_b, n_b, ks)


# ---------------------------------------------------------------- memory measurement


def _proc_status() -> dict[str, int] | None:
    try:
        with open("/proc/self/status") as f:
            return {
                k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmHWM", "VmRSS")
            }
    except OSError:
        return None


def peak_memory(fn: Callable[..., Any], *args: Any, device: str = "cpu", **kwargs: Any) -> tuple[Any, int]:
    """Run fn(*args, **kwargs) -> (its result, peak bytes allocated above the starting point).

    device "cuda...": torch's CUDA peak allocation. CPU on Linux: the process resident-set high-water mark
    (reset through /proc/self/clear_refs), which counts torch and numpy buffers alike; memory the C allocator
    kept from earlier work may be reused unseen, so small figures are lower bounds. Elsewhere: tracemalloc
    (Python and numpy allocations only, not torch's).
    """
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return result, max(0, torch.cuda.max_memory_allocated(device) - start)
    status = _proc_status()
    can_reset = status is not None and os.access("/proc/self/clear_refs", os.W_OK)
    if can_reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before = _proc_status()
        result = fn(*args, **kwargs)
        after = _proc_status()
        assert before is not None and after is not None  # /proc/self/status was readable just above
        return result, max(0, after["VmHWM"] - before["VmRSS"])
    tracemalloc.start()
    try:
        result = fn(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def metrics_csv(result: dict, levels: Sequence[str]) -> str:
    """An evaluation result ({"run", "dataset", "split", level: {"X->Y": {metric: percent}}}) as CSV text: one row
    per (level, direction, metric), summaries ("X+Y", "mean") included, for spreadsheets and pandas. `levels`:
    the match levels to write, in order (retrieval.LEVELS; passed in, since retrieval imports this module)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "dataset", "split", "level", "direction", "metric", "value"])
    for level in levels:
        for direction, values in result.get(level, {}).items():
            for metric, value in values.items():
                row = [result.get("run", ""), result.get("dataset", ""), result.get("split", ""), level]
                writer.writerow([*row, direction, metric, f"{value:.6g}"])
    return buf.getvalue()
