"""Query and database enrichment (paper Sec. 4.4, Table 5).

An *enriched* vector is the average of several modalities' L2-normalised embeddings of the same entity. Rows
are aligned by shared ids: the fused set has one row per row of its *base* modality (the one whose rows carry
every other member's key column, e.g. I for I+C on CUB, S for I+S on Flickr8k), and each other member
contributes its row with the same key value. `{} -> X` fuses the queries and searches X; `X -> {}` queries
with X and fuses the database vectors. The metric is r@1 at the run's match level, in percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pcmpipe.errors import UserError
from pcmpipe.evaluation.embeddings import RunEmbeddings
from pcmpipe.evaluation.metrics import recall_at_k

PLACEHOLDER = "{}"


def _key_values(e: RunEmbeddings) -> np.ndarray:
    return e.columns[e.key] if e.key in e.columns else e.columns["id"]


def _carries(e: RunEmbeddings, column: str) -> bool:
    return column == e.key or column in e.columns


def fuse(embs: dict[str, RunEmbeddings], modalities: list[str]) -> RunEmbeddings:
    """Average of the normalised embeddings of `modalities`, one row per base row -> RunEmbeddings.

    The result keeps the base modality's key and columns; base rows whose partner rows are missing are dropped
    (the paper's sets are complete, so this only happens with partial caches). Shapes: [N_base, D].
    """
    missing = [m for m in modalities if m not in embs]
    if missing:
        raise UserError(f"enrichment needs embeddings of {', '.join(missing)}; the run has {', '.join(sorted(embs))}")
    if len(modalities) == 1:
        return embs[modalities[0]]
    members = [embs[m] for m in modalities]
    base_name = next((m for m in modalities if all(_carries(embs[m], o.key) for o in members)), None)
    if base_name is None:
        raise UserError(
            f"cannot align {'+'.join(modalities)}: no modality's rows carry all of "
            f"{', '.join(sorted({o.key for o in members}))}"
        )
    base = embs[base_name]
    keep = np.ones(len(_key_values(base)), dtype=bool)
    rows: dict[str, np.ndarray] = {}
    for m in modalities:
        if m == base_name:
            continue
        other = embs[m]
        pos = {v: i for i, v in enumerate(_key_values(other).tolist())}
        wanted = base.columns[other.key] if other.key in base.columns else _key_values(base)
        idx = np.array([pos.get(v, -1) for v in wanted.tolist()], dtype=np.int64)
        keep &= idx >= 0
        rows[m] = idx
    if not keep.any():
        raise UserError(f"{'+'.join(modalities)}: no row of {base_name} has a partner in every other modality")
    sel = torch.as_tensor(np.nonzero(keep)[0], dtype=torch.long)
    total = F.normalize(base.embedding.float(), dim=-1)[sel]
    for m, idx in rows.items():
        total = total + F.normalize(embs[m].embedding.float(), dim=-1)[torch.as_tensor(idx[keep], dtype=torch.long)]
    columns = {k: v[keep] for k, v in base.columns.items()}
    return RunEmbeddings(embedding=total / len(modalities), key=base.key, columns=columns)


def recall_at_1(query: RunEmbeddings, gallery: RunEmbeddings, level: str, block: int = 2048) -> float:
    """r@1 in percent: `metrics.recall_at_k(k=1)` over the queries that have a positive.

    Positives follow the project's match rules (`retrieval.match_labels`: instance or class level), so the
    plain cells of an enrichment table equal the run's own test metrics. Computed in query blocks of `block`
    rows so memory stays [block, N_gallery]; NaN when no query has a positive.
    """
    return recall_at_1_levels(query, gallery, [level], block)[level]


def recall_at_1_levels(
    query: RunEmbeddings, gallery: RunEmbeddings, levels: Sequence[str], block: int = 2048
) -> dict[str, float]:
    """`recall_at_1` at each of `levels`, from one similarity product per query block (levels differ only in
    which gallery rows are positives)."""
    codes = {level: _match_codes(query, gallery, level) for level in levels}
    g = F.normalize(gallery.embedding.float(), dim=-1)
    q = F.normalize(query.embedding.float(), dim=-1)
    hits, counted = dict.fromkeys(levels, 0), dict.fromkeys(levels, 0)
    for start in range(0, q.shape[0], block):
        sims = None  # computed once for the block, and only when some query of it has a positive
        for level, (q_code, g_code) in codes.items():
            positives = q_code[start : start + block, None] == g_code[None, :]  # [b, N]
            n = int(positives.any(1).sum())
            if n:  # recall_at_k is the fraction of the block's n queries with a positive: back to a whole count
                sims = q[start : start + block] @ g.T if sims is None else sims
                hits[level] += round(recall_at_k(sims, positives, 1) * n)
                counted[level] += n
    return {lv: 100.0 * hits[lv] / counted[lv] if counted[lv] else float("nan") for lv in levels}


def _match_codes(query: RunEmbeddings, gallery: RunEmbeddings, level: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's and gallery row's match label at `level`, as integer codes (equal code: a positive)."""
    from pcmpipe.evaluation.retrieval import match_labels

    try:
        q_ids, g_ids = match_labels(query.columns, gallery.columns, level, query.key, gallery.key)
    except ValueError as e:
        raise UserError(f"enrichment at {level} level: {e}") from None
    codes = {v: i for i, v in enumerate(np.unique(np.concatenate([q_ids, g_ids])).tolist())}
    return torch.as_tensor([codes[v] for v in q_ids.tolist()]), torch.as_tensor([codes[v] for v in g_ids.tolist()])


def parse_block(block: str) -> tuple[str, str]:
    """'{}->T' -> ('query', 'T'); 'T->{}' -> ('database', 'T')."""
    left, sep, right = block.partition("->")
    left, right = left.strip(), right.strip()
    if sep and left == PLACEHOLDER and right and right != PLACEHOLDER:
        return "query", right
    if sep and right == PLACEHOLDER and left and left != PLACEHOLDER:
        return "database", left
    raise UserError(f"enrichment block {block!r} must read '{{}}->X' (enriched query) or 'X->{{}}' (enriched database)")


def enrichment_table(
    embs: dict[str, RunEmbeddings], blocks: dict[str, list[str]], level: str
) -> dict[str, dict[str, float | None]]:
    """{block: {combination: r@1 percent}}, e.g. {'{}->T': {'I': 56.9, 'I+C': 67.5}} (Table 5 layout)."""
    return enrichment_tables(embs, blocks, [level])[level]


def enrichment_tables(
    embs: dict[str, RunEmbeddings], blocks: dict[str, list[str]], levels: Sequence[str]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """{level: `enrichment_table` at that level}: each combination fused, and each cell's similarities
    computed, once for every level."""
    out: dict[str, dict[str, dict[str, float | None]]] = {lv: {} for lv in levels}
    for block, combos in blocks.items():
        side, fixed = parse_block(block)
        if fixed not in embs:
            raise UserError(f"enrichment block {block}: the run has no {fixed} embeddings")
        for lv in levels:
            out[lv][block] = {}
        for combo in combos:
            fused = fuse(embs, combo.split("+"))
            query, gallery = (fused, embs[fixed]) if side == "query" else (embs[fixed], fused)
            for lv, r1 in recall_at_1_levels(query, gallery, levels).items():
                out[lv][block][combo] = r1
    return out
