"""Text extraction: pcmpipe's trimmed, length-sorted batches vs stock open_clip `encode_text`, same run.

Both paths encode the same captions with the same CLIP ViT-B/32 text tower (random weights, seeded; the
architecture, not the values, sets the speed) in batches of the same size:
* stock: `model.encode_text(tokenizer(captions))` over the captions in their order (77 tokens each);
* ours: token lengths -> `pcmpipe.backbones.batching.length_batches` -> `encode_text_trimmed` (each batch cut
  to its longest caption), the path `ClipTextBackbone.encode` takes.
The outputs are compared row by row (max abs difference, must be <= 1e-4).

Captions are Flickr8k-length English: word counts drawn from a normal distribution with Flickr8k's mean 11.8
and s.d. 3.9 words (clipped to 3..35), words from a list of frequent caption words.

    python benchmarks/text_extract.py                      # ViT-B/32 text tower, 256 captions
    python benchmarks/text_extract.py --smoke --no-write   # tiny tower
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

WORDS = (
    "a man woman dog two people child boy girl black white brown red blue young little is are in on the of "
    "with and at front water grass street snow ball running playing sitting standing jumping walking "
    "through his her shirt wearing near into looking large small group crowd beach rock bike field"
).split()


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    counts = np.clip(np.rint(rng.normal(11.8, 3.9, n)), 3, 35).astype(int)
    return [" ".join(rng.choice(WORDS, c)) + " ." for c in counts]


def main() -> None:
    def extra(p):
        p.add_argument("--captions", type=int, default=256)
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--repeats", type=int, default=1)

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    from pcmpipe.backbones import create_backbone
    from pcmpipe.backbones.batching import length_batches
    from pcmpipe.backbones.clip import encode_text_trimmed, token_lengths

    name = "clip-tiny-text" if args.smoke else "clip-vit-b32-text"
    if args.smoke:
        args.captions, args.batch = 48, 16
    bb = create_backbone(name, weights="random:0", device=args.device)
    model = bb.model
    tokens = bb.preprocess(captions(args.captions))  # [N, 77]
    lengths = token_lengths(tokens)
    fixed = [list(range(i, min(i + args.batch, len(tokens)))) for i in range(0, len(tokens), args.batch)]
    sorted_batches = length_batches(lengths.tolist(), args.batch)
    out_ours = torch.empty(len(tokens), bb.feature_shape[0])
    out_stock = torch.empty_like(out_ours)

    @torch.inference_mode()
    def ours():
        for b in sorted_batches:
            out_ours[b] = encode_text_trimmed(model, tokens[b].to(args.device)).float().cpu()

    @torch.inference_mode()
    def stock():
        for b in fixed:
            out_stock[b] = model.encode_text(tokens[b].to(args.device)).float().cpu()

    # warm-up on one batch each (allocator, oneDNN kernels), then alternate full passes
    with torch.inference_mode():
        encode_text_trimmed(model, tokens[: args.batch].to(args.device))
        model.encode_text(tokens[: args.batch].to(args.device))
    res = _timing.compare(ours, stock, repeats=args.repeats, warmup=0, device=args.device)
    diff = float((out_ours - out_stock).abs().max())
    if diff > 1e-4:
        raise SystemExit(f"trimmed and stock text features differ by {diff:.2e} > 1e-4")
    n = len(tokens)
    print(
        f"mean tokens {float(lengths.float().mean()):.1f} (max {int(lengths.max())}) of 77; "
        f"ours {res['ours_all']} s, stock {res['baseline_all']} s; max |diff| {diff:.1e}"
    )
    what = (
        f"text extraction, trimmed + length-sorted vs stock encode_text ({name}, {n} captions, "
        f"batch {args.batch}, {args.device})"
    )
    _timing.report(
        args,
        what,
        ">= 3 x stock, outputs equal to 1e-4",
        f"ours {n / res['ours_s']:.1f} captions/s, stock {n / res['baseline_s']:.1f} captions/s; "
        f"max abs diff {diff:.1e}",
        f"{res['speedup']:.2f} x stock",
        res["speedup"] >= 3.0,
    )


if __name__ == "__main__":
    main()
