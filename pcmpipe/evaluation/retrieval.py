"""Cross-modal retrieval evaluation: positives from id columns, every direction X->Y, enrichment by averaging.

Rows are described by their cache columns: `id` plus the key column (`image_id`, `caption_id`, `class_id`) and
the link columns to coarser levels (a CUB caption row carries `caption_id`, `image_id`, `class_id`).

Match levels (docs/conventions.md):
- "instance": a gallery row is a positive when it shares the query's value of the COARSER of the two
  modalities' keys, i.e. the key the finer modality's rows carry as a link: I vs T -> image_id (the 5 or 10
  captions of an image), T vs S -> caption_id, T vs C -> class_id, I vs A -> image_id.
- "image": equal image_id (both modalities must carry one). It differs from "instance" only between two
  modalities keyed finer than the image: on Flickr8k, T vs S match at instance level when they are the same
  caption (written and spoken), at image level when they describe the same image. The paper does not say
  which it used (docs/reproducing.md), so both are scored where they differ (`levels_for`).
- "class": equal class_id (both modalities must carry one).

Queries are the unique rows of X (by key), the gallery the unique rows of Y, embeddings L2-normalised,
similarity = cosine. Large problems go through the blocked path (same numbers, bounded memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations, permutations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pcmpipe.errors import UserError
from pcmpipe.evaluation.metrics import (
    r_precision,
    recall_at_k,
    retrieval_metrics_blocked,
    retrieval_metrics_blocked_pair,
)

LEVELS = ("instance", "image", "class")
# the id column of each level coarser than the instance, where a positive is an equal value of it
LEVEL_COLUMNS = {"image": "image_id", "class": "class_id"}
# Q * N above this switches to the blocked path: besides bounding memory, its top-K selection is ~10x faster
# than the dense path's full sort (1,000 x 5,000: 0.7 s vs 7 s on 2 busy cores; 200 x 1,000: 0.03 s vs 0.2 s),
# which stays as the reference and for tiny problems.
DENSE_LIMIT = 2**16
# Rows per block of the blocked path. Scoring both directions of a pair ranks each block along its rows and,
# through a transposed copy, its columns: about three blocks at once, 12 MB at 1,024 rows, and in a training run's
# epoch-end validation that is the memory the evaluation adds. Larger blocks are not faster on CPU (Flickr8k
# test, all six directions, one pass per pair: 1,024 -> 0.68 CPU s, 2,048 -> 0.65-0.73 CPU s), and at 2,048
# rows the validation pushed the Flickr8k training run past 2 GiB.
BLOCK = 1024

Columns = dict[str, np.ndarray]


def infer_key(cols: Columns) -> str:
    """The key column of a row set: the first column after `id` equal to `id` in every row ("id" if none).

    Caches store `id`, then the key column, then the links, so the first equal column is the key.
    """
    ids = np.asarray(cols["id"]).astype(str)
    for name, values in cols.items():
        if name != "id" and np.array_equal(np.asarray(values).astype(str), ids):
            return name
    return "id"


def _values(cols: Columns, key: str, column: str) -> np.ndarray | None:
    """The rows' values of `column` (the key may live only in `id`), or None when the rows do not carry it."""
    if column in cols:
        return np.asarray(cols[column]).astype(str)
    if column == key:
        return np.asarray(cols["id"]).astype(str)
    return None


def match_column(
    q_cols: Columns, g_cols: Columns, level: str, q_key: str | None = None, g_key: str | None = None
) -> str:
    """The id column whose equality defines a positive between these two row sets at `level`."""
    if level not in LEVELS:
        raise UserError(f"unknown match level {level!r}: use one of {', '.join(LEVELS)}")
    q_key, g_key = q_key or infer_key(q_cols), g_key or infer_key(g_cols)
    if level in LEVEL_COLUMNS:
        column = LEVEL_COLUMNS[level]
        if _values(q_cols, q_key, column) is None or _values(g_cols, g_key, column) is None:
            raise UserError(f"{level}-level matching needs a {column} column on both sides; use --match instance")
        return column
    # the coarser key is the one the other side's rows carry as a link
    if _values(g_cols, g_key, q_key) is not None:
        return q_key
    if _values(q_cols, q_key, g_key) is not None:
        return g_key
    raise UserError(
        f"no shared id column between rows keyed by {q_key} and rows keyed by {g_key}: "
        "instance-level matching is undefined for them; use --match class if both carry class_id"
    )


def levels_for(cols: dict[str, Columns], keys: dict[str, str]) -> list[str]:
    """The match levels these modalities' rows are scored at: "instance" always; "image" where every modality
    carries an image_id and two are keyed finer than it (only then does any pair differ from instance level:
    Flickr8k T and S); "class" where every modality carries a class_id."""
    levels = ["instance"]
    carry = {lv: all(_values(cols[m], keys[m], c) is not None for m in cols) for lv, c in LEVEL_COLUMNS.items()}
    if carry["image"] and sum(keys[m] != "image_id" for m in cols) >= 2:
        levels.append("image")
    if carry["class"]:
        levels.append("class")
    return levels


def match_labels(
    q_cols: Columns, g_cols: Columns, level: str, q_key: str | None = None, g_key: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(query labels [Q], gallery labels [N]) as strings; positives are the pairs with equal labels."""
    q_key, g_key = q_key or infer_key(q_cols), g_key or infer_key(g_cols)
    column = match_column(q_cols, g_cols, level, q_key, g_key)
    q_lab, g_lab = _values(q_cols, q_key, column), _values(g_cols, g_key, column)
    assert q_lab is not None and g_lab is not None  # match_column picks a column both sides carry
    return q_lab, g_lab


def positives_between(
    q_cols: Columns, g_cols: Columns, level: str, q_key: str | None = None, g_key: str | None = None
) -> np.ndarray:
    """Bool [Q, N]: gallery row n is a positive for query row q at `level` (keys inferred when not given)."""
    q_lab, g_lab = match_labels(q_cols, g_cols, level, q_key, g_key)
    return q_lab[:, None] == g_lab[None, :]


def unique_rows(emb: Tensor, cols: Columns, key: str) -> tuple[Tensor, Columns]:
    """Keep the first row of every key value: a modality repeated by a training join counts once."""
    values = _values(cols, key, key)
    assert values is not None  # a row set always carries its own key (in `id` at least)
    if len(values) != emb.shape[0]:
        raise ValueError(f"{emb.shape[0]} embedding rows but {len(values)} id rows")
    _, first = np.unique(values, return_index=True)
    if len(first) == len(values):
        return emb, cols
    first = np.sort(first)
    return emb[torch.as_tensor(first)], {name: np.asarray(v)[first] for name, v in cols.items()}


def _direction(
    q: Tensor, g: Tensor, q_lab: np.ndarray, g_lab: np.ndarray, ks: Sequence[int], block: int
) -> dict[str, float]:
    """Fractions {"r@k", "R-P"} for one direction; dense below DENSE_LIMIT, blocked above."""
    if q.shape[0] * g.shape[0] > DENSE_LIMIT:
        return retrieval_metrics_blocked(q, g, q_lab, g_lab, ks=ks, block=block)
    sim = q @ g.T
    pos = torch.as_tensor(q_lab[:, None] == g_lab[None, :])
    return {**{f"r@{k}": recall_at_k(sim, pos, k) for k in ks}, "R-P": r_precision(sim, pos)}


def evaluate_directions(
    emb: dict[str, Tensor],
    cols: dict[str, Columns],
    keys: dict[str, str],
    level: str = "instance",
    ks: Sequence[int] = (1, 5),
    block: int = BLOCK,
) -> dict[str, dict[str, float]]:
    """Every ordered pair X->Y of modalities: {"r@1", "r@5", "R-P"} in percent.

    emb: m -> [N_m, D] (rows aligned with cols[m]); cols: m -> id/link columns; keys: m -> key column.
    Returns {"X->Y": metrics for every ordered pair, "X+Y": the mean of X->Y and Y->X (pairs in the order of
    `emb`), "mean": the mean over all directions}. Raises UserError when some direction has no query with a
    positive (the two row sets do not describe the same entities, e.g. different splits).
    """
    names = list(emb)
    rows = {}
    for m in names:
        e, c = unique_rows(emb[m].detach().cpu(), cols[m], keys[m])
        rows[m] = (F.normalize(e.float(), dim=-1), c)
    found: dict[tuple[str, str], dict[str, float]] = {}
    for x, y in combinations(names, 2):
        (a, a_cols), (b, b_cols) = rows[x], rows[y]
        ab = match_labels(a_cols, b_cols, level, keys[x], keys[y])
        ba = match_labels(b_cols, a_cols, level, keys[y], keys[x])
        if a.shape[0] * b.shape[0] > DENSE_LIMIT:  # both directions from one pass over the similarity blocks
            found[x, y], found[y, x] = retrieval_metrics_blocked_pair(a, b, ab, ba, ks=ks, block=block)
        else:
            found[x, y], found[y, x] = _direction(a, b, *ab, ks, block), _direction(b, a, *ba, ks, block)
    out: dict[str, dict[str, float]] = {}
    for x, y in permutations(names, 2):
        res = found[x, y]
        if any(np.isnan(v) for v in res.values()):
            raise UserError(
                f"no {x} row has a {level}-level match among the {y} rows: are both from the same dataset and split?"
            )
        out[f"{x}->{y}"] = {k: 100.0 * v for k, v in res.items()}
    metric_names = [f"r@{k}" for k in ks] + ["R-P"]
    for x, y in combinations(names, 2):
        out[f"{x}+{y}"] = {k: (out[f"{x}->{y}"][k] + out[f"{y}->{x}"][k]) / 2 for k in metric_names}
    directions = [out[f"{x}->{y}"] for x, y in permutations(names, 2)]
    if directions:
        out["mean"] = {k: float(np.mean([d[k] for d in directions])) for k in metric_names}
    return out


__all__ = [
    "LEVELS",
    "evaluate_directions",
    "infer_key",
    "levels_for",
    "match_column",
    "match_labels",
    "positives_between",
    "unique_rows",
]
