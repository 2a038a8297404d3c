"""Search over 1,000,000 256-d fp16 embeddings: the flat index vs the matmul floor, and IVF recall@10.

* floor: the float32 matmul of the query batch against the gallery (scores only, no top-k): the least any exact
  search must do. Timed two ways on a gallery widened to float32 once, and the faster one is the floor: one
  `torch.mm` into a preallocated [Q, N] output, and the same product in blocks of rows into a reused buffer.
* flat: `pcmpipe.index` flat index (`pcmpipe.index.flat.FlatIndex`, vectors kept float16, each block widened
  to float32 before its matmul): scores and top-10 per query batch.
  ratio = floor time / flat time; target >= 1 / 1.5 (flat within 1.5 x the floor).
* FAISS flat: faiss IndexFlatIP over the same (widened) vectors, timed once: what the flat index was before, and
  the reference its top-10 ids are checked against (agreement, ties aside).
* ivf: IndexIVFFlat (nlist 1024, nprobe 16, cells trained on a 65,536-row sample); recall@10 against the flat
  index's answers and its time per batch, reported alongside (no target: a trade-off the user chooses).
FAISS and torch use the same thread count (--threads). Gallery: clustered random vectors (1,024 centres plus
noise), normalised, stored as float16.

    python benchmarks/search.py
    python benchmarks/search.py --smoke --no-write
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402


def gallery(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors [n, dim] as float16, made in chunks (bounded temporary memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1024, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float16)
    for i in range(0, n, 65536):
        m = min(65536, n - i)
        x = centres[rng.integers(0, 1024, m)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def time_against_floors(flat, q: np.ndarray, g32: torch.Tensor, repeats: int) -> list[dict]:
    """`_timing.compare` of the flat index's search against each floor (module docstring): whole, blocked."""
    from pcmpipe.index.flat import rows_per_block

    qt, rows = torch.from_numpy(q), g32.shape[0]
    whole = torch.empty(len(q), rows)
    step = rows_per_block(len(q))
    part = torch.empty(len(q), step)

    def floor_whole():
        torch.mm(qt, g32.T, out=whole)

    def floor_blocked():
        for i in range(0, rows, step):
            torch.mm(qt, g32[i : i + step].T, out=part[:, : min(step, rows - i)])

    return [_timing.compare(lambda: flat.search(q, 10), fn, repeats=repeats) for fn in (floor_whole, floor_blocked)]


def faiss_flat(g32: np.ndarray, q: np.ndarray) -> tuple[float, np.ndarray]:
    """(seconds, top-10 rows) of one search of faiss IndexFlatIP over the same vectors."""
    import faiss

    reference = faiss.IndexFlatIP(g32.shape[1])
    reference.add(g32)
    t, (_, rows) = _timing.timed(lambda: reference.search(q, 10))
    return t, rows


def main() -> None:
    def extra(p):
        p.add_argument("--rows", type=int, default=1_000_000)
        p.add_argument("--dim", type=int, default=256)
        p.add_argument("--queries", type=int, default=256, help="queries per batch")
        p.add_argument("--repeats", type=int, default=3)

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    import faiss

    from pcmpipe.index import EmbeddingIndex, build_index

    if args.smoke:
        args.rows, args.dim, args.queries, args.repeats = 20_000, 64, 32, 1
    faiss.omp_set_num_threads(torch.get_num_threads())
    g16 = gallery(args.rows, args.dim)
    q = gallery(args.queries, args.dim, seed=1).astype(np.float32)
    ids = np.arange(args.rows).astype(str)
    g32 = torch.from_numpy(g16.astype(np.float32))
    flat = EmbeddingIndex(build_index(g16), ids)
    del g16
    floors = time_against_floors(flat, q, g32, args.repeats)
    res = min(floors, key=lambda r: r["baseline_s"])
    ours_s = statistics.median(floors[0]["ours_all"] + floors[1]["ours_all"])
    exact, _ = flat.search(q, 10)
    t_faiss, faiss_rows = faiss_flat(g32.numpy(), q)
    agree = float(np.mean(exact == ids[faiss_rows]))

    nlist = 64 if args.smoke else 1024
    rng = np.random.default_rng(0)
    sample = g32.numpy()[rng.choice(args.rows, min(args.rows, 64 * nlist), replace=False)]
    ivf_index = build_index(sample, "ivf", nlist=nlist)
    ivf_index.reset()  # keep the trained cells, index every row
    ivf_index.add(g32.numpy())
    ivf = EmbeddingIndex(ivf_index, ids)
    ivf.set_nprobe(16)
    t_ivf = _timing.best_of(lambda: ivf.search(q, 10), 1, 1.0)
    approx, _ = ivf.search(q, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)]))

    ratio = res["baseline_s"] / ours_s
    print(
        f"flat {floors[0]['ours_all'] + floors[1]['ours_all']} s, floor whole {floors[0]['baseline_all']} s, "
        f"blocked {floors[1]['baseline_all']} s, FAISS flat {t_faiss:.2f} s (top-10 agreement {agree:.4f}), "
        f"ivf {t_ivf:.4f} s, ivf recall@10 {recall:.3f}"
    )
    what = (
        f"search {args.rows:,} x {args.dim} fp16 embeddings, {args.queries} queries per batch, top 10: flat index "
        f"vs matmul floor; IVF (nlist {nlist}, nprobe 16) recall@10 vs flat ({args.device})"
    )
    _timing.report(
        args,
        what,
        "flat >= 0.67 x floor (within 1.5 x)",
        f"flat {ours_s * 1e3:.0f} ms, floor {res['baseline_s'] * 1e3:.0f} ms per batch (FAISS IndexFlatIP "
        f"{t_faiss * 1e3:.0f} ms, same top-10 ids {agree:.2%}); IVF {t_ivf * 1e3:.0f} ms, recall@10 {recall:.3f}",
        f"{ratio:.2f} x floor",
        ratio >= 1 / 1.5,
    )


if __name__ == "__main__":
    main()
