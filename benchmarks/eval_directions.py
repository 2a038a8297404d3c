"""Evaluation of every Flickr8k test direction (1,000 images, 5,000 captions, 5,000 spoken captions).

Times `pcmpipe.evaluation.retrieval.evaluate_directions` (instance level, r@1, r@5, R-precision, all six
directions I->T, T->I, I->S, S->I, T->S, S->T) on 256-d head outputs, and states it against the matmul floor:
the FLOPs of the three similarity matrices (each unordered pair once, 2 * Q * N * 256) divided by the
machine's float32 matmul rate measured in the same run. Embeddings are random with Flickr8k's structure
(captions near their image, spoken captions near their caption) so the rankings are not degenerate.

    python benchmarks/eval_directions.py
    python benchmarks/eval_directions.py --smoke --no-write
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402


def flickr_test(images: int, per_image: int, dim: int, seed: int = 0):
    """-> (emb m -> [N_m, dim], cols m -> id/link columns, keys m -> key column) shaped like Flickr8k test."""
    g = torch.Generator().manual_seed(seed)
    img_ids = np.array([f"im{i:05d}" for i in range(images)])
    cap_ids = np.array([f"{i}#{j}" for i in img_ids for j in range(per_image)])
    cap_img = np.repeat(img_ids, per_image)
    i_emb = torch.randn(images, dim, generator=g)
    t_emb = i_emb.repeat_interleave(per_image, 0) + 3.5 * torch.randn(len(cap_ids), dim, generator=g)
    s_emb = t_emb + 3.5 * torch.randn(len(cap_ids), dim, generator=g)
    emb = {"I": i_emb, "T": t_emb, "S": s_emb}
    cols = {
        "I": {"id": img_ids, "image_id": img_ids},
        "T": {"id": cap_ids, "caption_id": cap_ids, "image_id": cap_img},
        "S": {"id": cap_ids, "caption_id": cap_ids, "image_id": cap_img},
    }
    keys = {"I": "image_id", "T": "caption_id", "S": "caption_id"}
    return emb, cols, keys


def main() -> None:
    def extra(p):
        p.add_argument("--images", type=int, default=1000)
        p.add_argument("--dim", type=int, default=256)
        p.add_argument("--repeats", type=int, default=3)

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    from pcmpipe.evaluation.retrieval import evaluate_directions

    if args.smoke:
        args.images, args.repeats = 60, 1
    emb, cols, keys = flickr_test(args.images, 5, args.dim)
    n_i, n_c = args.images, 5 * args.images
    flops = 2 * args.dim * (n_i * n_c + n_i * n_c + n_c * n_c)
    rate = _timing.matmul_rate(args.device)
    times = []
    result = None
    for _ in range(args.repeats + 1):  # the first call warms up
        t, result = _timing.timed(lambda: evaluate_directions(emb, cols, keys, level="instance", ks=(1, 5)))
        times.append(t)
    rate = max(rate, _timing.matmul_rate(args.device))
    t = float(np.median(times[1:]))
    floor = flops / rate
    print(
        f"{t:.3f} s (runs {[round(x, 3) for x in times]}); floor {floor:.3f} s = {flops / 1e9:.1f} GFLOP at "
        f"{rate / 1e9:.1f} GFLOP/s; mean r@1 {result['mean']['r@1']:.1f}"
    )
    what = f"evaluation, all 6 directions ({n_i:,} I, {n_c:,} T, {n_c:,} S; {args.dim}-d; r@1, r@5, R-P)"
    _timing.report(
        args,
        what,
        "< 1 s compute; ratio to matmul floor reported",
        f"{t:.3f} s; floor {floor:.3f} s ({flops / 1e9:.1f} GFLOP / {rate / 1e9:.0f} GFLOP/s)",
        f"{t / floor:.1f} x matmul floor",
        t < 1.0,
    )


if __name__ == "__main__":
    main()
