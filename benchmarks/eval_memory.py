"""Bounded-memory retrieval evaluation: peak memory of recall@k / R-precision on an N x N problem.

Random 256-d L2-normalised embeddings for N queries and N gallery items with labels from `--classes`
classes (positives = same label). The blocked path (pcmpipe.evaluation.metrics.retrieval_metrics_blocked)
never forms the N x N matrix; its peak is measured as the process's resident-set high-water mark above the
starting point (metrics.peak_memory, /proc/self/status VmHWM). The dense matrix it avoids is stated beside it.
Before the big run the blocked result is checked equal to the dense path (recall_at_k / r_precision on the
full similarity matrix) on a size where dense fits (--check-n).

    python benchmarks/eval_memory.py                    # 100,000 x 100,000 (several minutes on 2 cores)
    python benchmarks/eval_memory.py --smoke --no-write
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

from pcmpipe.evaluation.metrics import peak_memory, r_precision, recall_at_k, retrieval_metrics_blocked  # noqa: E402

GIB = 1024**3


def problem(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query [n, dim], gallery [n, dim], query labels [n], gallery labels [n]); queries sit near their class."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    ql, gl = torch.randint(classes, (n,), generator=g), torch.randint(classes, (n,), generator=g)
    q = torch.nn.functional.normalize(centres[ql] + 2.0 * torch.randn(n, dim, generator=g), dim=1)
    x = torch.nn.functional.normalize(centres[gl] + 2.0 * torch.randn(n, dim, generator=g), dim=1)
    return q, x, ql, gl


def check_equal_to_dense(n: int, dim: int, classes: int, block: int) -> dict:
    """Blocked and dense metrics on an n x n problem; raises if they differ."""
    q, x, ql, gl = problem(n, dim, classes, seed=1)
    blocked = retrieval_metrics_blocked(q, x, ql.numpy(), gl.numpy(), ks=(1, 5, 10), block=block)
    sim, pos = q @ x.T, ql[:, None] == gl[None, :]
    dense = {
        "r@1": recall_at_k(sim, pos, 1),
        "r@5": recall_at_k(sim, pos, 5),
        "r@10": recall_at_k(sim, pos, 10),
        "R-P": r_precision(sim, pos),
    }
    if blocked != dense:
        raise SystemExit(f"blocked {blocked} != dense {dense}")
    return dense


def main() -> None:
    def extra(p):
        p.add_argument("--n", type=int, default=100_000, help="queries = gallery items")
        p.add_argument("--dim", type=int, default=256)
        p.add_argument("--classes", type=int, default=10_000, help="labels; about n / classes positives a query")
        p.add_argument("--block", type=int, default=4096, help="query/gallery block of the blocked path")
        p.add_argument("--check-n", type=int, default=4000, help="size of the dense-equality check")

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    if args.smoke:
        args.n, args.classes, args.block, args.check_n = 3000, 300, 512, 600
    dense = check_equal_to_dense(args.check_n, args.dim, max(2, args.classes * args.check_n // args.n), args.block)
    print(f"dense == blocked on {args.check_n} x {args.check_n}: {dense}")

    q, x, ql, gl = problem(args.n, args.dim, args.classes, seed=0)
    ql, gl = ql.numpy(), gl.numpy()
    t0 = _timing.now()
    metrics, peak = peak_memory(retrieval_metrics_blocked, q, x, ql, gl, ks=(1, 5, 10), block=args.block)
    seconds = _timing.now() - t0
    dense_bytes = args.n * args.n * 4  # the float32 similarity matrix alone, before sorting it
    inputs = (q.numel() + x.numel()) * 4
    print(
        f"{args.n} x {args.n}: {metrics} in {seconds:.1f} s; peak {peak / GIB:.3f} GiB above start "
        f"(inputs {inputs / GIB:.3f} GiB already resident); dense sim matrix alone {dense_bytes / GIB:.1f} GiB"
    )
    _timing.report(
        args,
        f"bounded-memory retrieval eval, {args.n:,} x {args.n:,}, {args.dim}-d, r@1/5/10 + R-P",
        "memory bounded; equal to dense",
        f"peak {peak / GIB:.2f} GiB above start in {seconds:.0f} s (block {args.block}); "
        f"equal to dense on {args.check_n:,}^2",
        f"{dense_bytes / max(peak, 1):.0f}x less than the dense fp32 matrix ({dense_bytes / GIB:.1f} GiB)",
        True,
    )


if __name__ == "__main__":
    main()
