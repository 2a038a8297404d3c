"""`pcmpipe embed` from raw images end to end vs the bare backbone forward on pre-made tensors, same run.

* ours: `pcmpipe.runs.embed.embed_inputs_to_cache` over JPEG files (Flickr8k-sized 500 x 375 photo-like images,
  quality 90): decode and preprocess in DataLoader workers, backbone forward, projection head, normalise, write the
  embeddings cache -- into a fresh directory each time.
* bare: `pcmpipe.extract.sources.encode` (the same forward under inference mode) on tensors preprocessed
  beforehand, in the same batch size: no decoding, no head, no writing.
The run is a fresh head over the backbone (its weights do not change the cost); the backbone object is built once
and shared, so model construction is outside both timings. Both paths are warmed up the same way first: the bare
forward on 2 preprocessed images, ours by embedding 2 files (the first loader, the first Parquet write), so
one-time start-up costs are in neither. ratio = bare time / ours (1.0: embedding adds nothing to the forward
pass). Also printed: the decoding workers' CPU seconds per embed call (with `--clock cpu` they are part of ours:
that clock counts decoding even where it overlaps the forward pass). Default backbone CLIP ViT-B/32 with seeded
random weights; --smoke uses the tiny CLIP.

    python benchmarks/embed.py
    python benchmarks/embed.py --smoke --no-write
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402
from image_extract import image_args, photo_like, report_against_bare  # noqa: E402


def main() -> None:
    args = _timing.parse_args(__doc__.splitlines()[0], image_args(96, "photo-like JPEG files to embed"))
    from PIL import Image

    from pcmpipe.backbones import create_backbone
    from pcmpipe.extract.runner import default_workers
    from pcmpipe.extract.sources import encode
    from pcmpipe.heads import build_heads
    from pcmpipe.runs import Run
    from pcmpipe.runs.embed import embed_inputs_to_cache

    if args.smoke:
        args.images, args.batch = 8, 4
    name = "clip-tiny-image" if args.smoke else "clip-vit-b32-image"
    workers = default_workers(args.device) if args.workers is None else args.workers
    bb = create_backbone(name, weights="random:0", device=args.device)
    torch.manual_seed(0)
    heads = build_heads({"I": bb.feature_shape}, dim=256).to(args.device).eval()
    spec = {"backbone": name, "weights": "random:0", "weights_sha256": bb.meta["weights_sha256"]}

    with tempfile.TemporaryDirectory(prefix="pcmpipe-bench-embed-") as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(args.images):
            paths.append(Path(tmp) / f"img{i:05d}.jpg")
            photo_like(paths[-1], rng)
        run = Run(Path(tmp), {}, heads, 1.0, {"I": bb.feature_shape}, {"I": spec}, "bench")
        run._built["I"] = bb  # the one prebuilt backbone (see module docstring)
        pre = torch.stack([bb.preprocess(Image.open(p).convert("RGB")) for p in paths])
        outs: list[Path] = []

        def ours():
            outs.append(Path(tmp) / f"emb{len(outs)}")
            embed_inputs_to_cache(run, "I", paths, outs[-1], batch_size=args.batch, workers=workers)
            shutil.rmtree(outs[-1])

        def bare():
            for i in range(0, len(pre), args.batch):
                encode(bb, pre[i : i + args.batch])

        with torch.inference_mode():
            bb.encode(pre[:2].to(args.device))  # warm-up
        embed_inputs_to_cache(run, "I", paths[:2], Path(tmp) / "warm-up", batch_size=args.batch, workers=workers)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = _timing.compare(ours, bare, repeats=args.repeats, warmup=0, device=args.device)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    decode_s = (after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime) / args.repeats
    print(f"decoding workers: {decode_s:.2f} CPU s per embed call ({decode_s / len(paths) * 1e3:.1f} ms an image)")
    report_against_bare(args, "embed from raw images", name, len(paths), res, workers)


if __name__ == "__main__":
    main()
