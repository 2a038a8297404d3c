"""The settings of an index, checked before any work: FAISS answers a bad one with a C++ assert, a
ZeroDivisionError or an OverflowError, or builds an index whose first search fails (`--nlist 0`, `--nprobe 0`).

Imports neither torch nor FAISS, so a command refuses a bad flag before its heavy imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pcmpipe.errors import UserError
from pcmpipe.limits import check_int

INDEX_KINDS = ("flat", "ivf", "ivfpq")
PQ_NBITS = 8  # one byte per sub-vector code
PQ_CENTROIDS = 1 << PQ_NBITS  # FAISS's k-means needs at least this many training vectors (Clustering.cpp)
ADVISED_POINTS = 39  # FAISS's min_points_per_centroid: fewer training points per centroid than this is advised against
MAX_CELLS = 1 << 24  # an upper bound for flags checked before the gallery's size is known
DEFAULT_NPROBE = 8
DEFAULT_PQ_M = 16


@dataclass(frozen=True)
class IndexParams:
    """The settings of one index, resolved against its gallery (`fit_params`)."""

    kind: str
    nlist: int | None = None  # IVF cells
    nprobe: int | None = None  # cells visited per query
    pq_m: int | None = None  # bytes per vector (ivfpq)
    advice: list[str] = field(default_factory=list, compare=False)  # where FAISS would print a warning


def check_flags(kind: str, nlist: int | None, nprobe: int | None, pq_m: int | None) -> None:
    """The settings on their own (no gallery yet): a known kind and whole numbers of at least 1."""
    if kind not in INDEX_KINDS:
        raise UserError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    for flag, value in (("--nlist", nlist), ("--nprobe", nprobe), ("--pq-m", pq_m)):
        if value is not None:
            check_int(flag, value, low=1, high=MAX_CELLS, why="at least one cell, vector byte or probe")


def default_nlist(rows: int) -> int:
    """The IVF cell count when --nlist is not given: about 4 sqrt(rows), and at least ADVISED_POINTS per cell."""
    return max(1, min(int(4 * math.sqrt(rows)), rows // ADVISED_POINTS))


def fit_params(
    kind: str, rows: int, dim: int, nlist: int | None = None, nprobe: int | None = None, pq_m: int | None = None
) -> IndexParams:
    """Settings checked against a gallery of `rows` vectors of `dim` values; defaults filled in.

    nlist: default about 4 sqrt(N), at most N / 39 (FAISS's points per k-means cell); nprobe: default
    min(8, nlist); pq_m: default the largest divisor of `dim` up to 16. UserError naming the setting and why."""
    check_flags(kind, nlist, nprobe, pq_m)
    if rows < 1:
        raise UserError("no embeddings to index")
    if kind == "flat":
        return IndexParams("flat")
    if nlist is None:
        nlist = default_nlist(rows)
    if nlist > rows:
        raise UserError(f"--nlist {nlist} is more than the {rows} embeddings (one per cell at least); lower it")
    if nprobe is None:
        nprobe = min(DEFAULT_NPROBE, nlist)
    if nprobe > nlist:
        raise UserError(f"--nprobe {nprobe} is more than the {nlist} cells (--nlist); lower it")
    advice = []
    if rows < ADVISED_POINTS * nlist:
        advice.append(f"{rows} embeddings train {nlist} cells; FAISS advises {ADVISED_POINTS * nlist} or more")
    if kind == "ivf":
        return IndexParams(kind, nlist, nprobe, None, advice)
    if pq_m is None:
        pq_m = max(m for m in range(1, DEFAULT_PQ_M + 1) if dim % m == 0)
    if dim % pq_m:
        raise UserError(f"--pq-m {pq_m} must divide the embedding size {dim}")
    if rows < PQ_CENTROIDS:
        raise UserError(
            f"--kind ivfpq needs at least {PQ_CENTROIDS} embeddings to train its {PQ_CENTROIDS}-entry codebooks "
            f"(FAISS's k-means takes one vector per centroid at least); this gallery has {rows}: use --kind ivf or flat"
        )
    if rows < ADVISED_POINTS * PQ_CENTROIDS:
        advice.append(
            f"{rows} embeddings train the {PQ_CENTROIDS}-entry PQ codebooks; FAISS advises "
            f"{ADVISED_POINTS * PQ_CENTROIDS} or more (compare recall with --kind ivf)"
        )
    return IndexParams(kind, nlist, nprobe, pq_m, advice)
