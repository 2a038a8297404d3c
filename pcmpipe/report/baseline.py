"""The "frozen backbone, no heads" row: retrieval on the cached backbone features themselves.

Where two modalities already share one embedding space (CLIP's image and text towers, or any two modalities
cached by the same encoder with the same weights), the backbone's own cosine is a retrieval model before any
head is trained: I->T under CLIP is far above chance. The row shows what the heads add over it; chance and the
untrained heads stay where they are. Modalities whose features live in unrelated spaces (HuBERT beside CLIP,
attribute vectors) get no cell: a cosine across them means nothing.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pcmpipe.report.results import cache_manifest

BASELINE_LABEL = "frozen backbone, no heads"


def space_of(meta: dict | None) -> tuple[str, str] | None:
    """(encoder, weights) naming the embedding space a cache's features live in, or None when not known.

    The image and text towers of one CLIP are one space: `clip-vit-b32-image` and `clip-vit-b32-text` with the
    same weights label are both (`clip-vit-b32`, label). Caches without a recorded backbone (imported or
    dataset vectors) have no known space."""
    name = (meta or {}).get("backbone")
    if not name or name == "synthetic":
        return None
    weights = str((meta or {}).get("weights", (meta or {}).get("pretrained", "")))
    return re.sub(r"-(image|text)$", "", str(name)), weights


@lru_cache(maxsize=16)
def frozen_backbone_metrics(
    cache_root: str, dataset: str, modalities: tuple[str, ...], level: str
) -> dict[str, dict[str, float]]:
    """{"X->Y": {"r@1", "r@5", "R-P"}} on the raw test features, for every ordered pair of `modalities` whose
    test caches share one space (same dims); {} when none does. Computed once per report (lru_cache)."""
    from pcmpipe.errors import UserError
    from pcmpipe.evaluation.retrieval import evaluate_directions
    from pcmpipe.samples import load_modality

    groups: dict[tuple[str, str], list[str]] = {}
    for m in modalities:
        manifest = cache_manifest(Path(cache_root), dataset, m)
        space = space_of((manifest or {}).get("meta")) if manifest else None
        if space is not None:
            groups.setdefault(space, []).append(m)
    out: dict[str, dict[str, float]] = {}
    for mods in groups.values():
        if len(mods) < 2:
            continue
        try:
            data = {m: load_modality(cache_root, dataset, m, "test") for m in mods}
            features = {m: d.features for m, d in data.items() if d.features is not None}  # held, not streamed
            if len({d.shape for d in data.values()}) != 1 or len(features) != len(data):
                continue
            found = evaluate_directions(
                features,
                {m: d.columns for m, d in data.items()},
                {m: d.key for m, d in data.items()},
                level,
            )
        except UserError:  # a damaged or partial cache: the row stays empty, the report still builds
            continue
        out.update({k: v for k, v in found.items() if "->" in k})
    return out


def baseline_values(layout: dict, runs: dict, metrics: list[str], columns: list[str]) -> list[float | None] | None:
    """The row's cells (metric x column) for a directions or pair-average layout, from the test caches of its
    runs' dataset at their match level; a pair column ("I+T") is the mean of its two directions. None when no
    column of the table is between two modalities of one space."""
    present = [runs[s["run"]] for s in layout["rows"] if s["run"] in runs]
    if not present:
        return None
    first = present[0]
    mods = tuple(sorted({m for r in present for m in r.modalities}))
    found = frozen_backbone_metrics(
        str(first.config.get("cache_root", "cache")), str(first.config.get("dataset")), mods, first.match
    )

    def value(column: str, metric: str) -> float | None:
        if "+" in column:
            a, b = column.split("+")
            both = [found.get(f"{a}->{b}", {}).get(metric), found.get(f"{b}->{a}", {}).get(metric)]
            return None if None in both else (both[0] + both[1]) / 2  # type: ignore[operator]
        return found.get(column, {}).get(metric)

    cells = [value(c, m) for m in metrics for c in columns]
    return cells if any(v is not None for v in cells) else None
