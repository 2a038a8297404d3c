"""Extraction end to end vs the bare model forward, per modality (I, T, S) of a synthetic Flickr8k, same run.

* ours: `pcmpipe.extract.extract` of one modality's train split from files (list records, decode,
  preprocess, encode, write Parquet shards and manifests) into a fresh cache directory each time;
* bare: `pcmpipe.extract.sources.encode` (the same forward under inference mode) on inputs decoded and
  preprocessed in memory beforehand, in the batches extraction forms (captions length-sorted, speech by the
  padding-bounded rule).
Both use one backbone object per modality (seeded random weights: the architecture, not the values, sets the
speed), handed to `extract` through `pcmpipe.extract.runner.create_backbone`, so model construction is outside
both timings. ratio = bare time / ours: how much of the model's speed the pipeline keeps (1.0: all of it).
One table row per modality. docs/extraction.md "Throughput" discusses the figures.

    python benchmarks/extract_pipeline.py --images 60 --modalities IT --repeats 3
    python benchmarks/extract_pipeline.py --modalities S --items 30 --repeats 2
    python benchmarks/extract_pipeline.py --smoke --no-write      # tiny backbones, seconds
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

PAPER = {"I": "clip-vit-b32-image", "T": "clip-vit-b32-text", "S": "hubert-base"}
TINY = {"I": "clip-tiny-image", "T": "clip-tiny-text", "S": "hubert-tiny"}
KIND = {"I": "image", "T": "text", "S": "audio"}


def preprocessed_batches(modality: str, backbone, records, batch_size: int) -> list:
    """The inputs of every batch extraction would form, decoded and preprocessed now (outside the timing)."""
    from pcmpipe.backbones.batching import fixed_batches, length_batches
    from pcmpipe.backbones.speech import speech_batches
    from pcmpipe.datasets import load_audio

    if modality == "I":
        from PIL import Image

        x = torch.stack([backbone.preprocess(Image.open(r.path).convert("RGB")) for r in records])
        return [x[b] for b in fixed_batches(len(records), batch_size)]
    if modality == "T":
        from pcmpipe.backbones.clip import token_lengths

        tokens = backbone.preprocess([r.text for r in records])
        return [tokens[b] for b in length_batches(token_lengths(tokens).tolist(), batch_size)]
    waves = [load_audio(r.path) for r in records]
    return [backbone.preprocess([waves[i] for i in b]) for b in speech_batches([w.size for w in waves], batch_size)]


def main() -> None:
    def extra(p):
        p.add_argument("--images", type=int, default=24, help="synthetic Flickr8k images (2/3 in train, timed)")
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--workers", type=int, default=None, help="decode processes (default: extract's)")
        p.add_argument("--modalities", default="ITS")
        p.add_argument("--items", type=int, default=None, help="at most this many items per modality")
        p.add_argument("--repeats", type=int, default=1)

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    import pcmpipe.extract.runner as extract_mod
    from pcmpipe.backbones import create_backbone
    from pcmpipe.config import ExtractConfig
    from pcmpipe.datasets import open_dataset
    from pcmpipe.datasets.synthetic import synth
    from pcmpipe.extract.sources import encode

    names = TINY if args.smoke else PAPER
    if args.smoke:
        args.images, args.batch, args.items = 6, 4, 8  # 4 train images, 20 captions: 8 items each
    workers = extract_mod.default_workers(args.device) if args.workers is None else args.workers
    with tempfile.TemporaryDirectory(prefix="pcmpipe-bench-extract-") as tmp:
        data = Path(tmp) / "flickr8k"
        synth("flickr8k", data, images=args.images, seed=0)
        ds = open_dataset("flickr8k", data)
        for m in args.modalities:
            name = names[m]
            bb = create_backbone(name, weights="random:0", device=args.device)
            extract_mod.create_backbone = lambda *a, bb=bb, **k: bb  # the one prebuilt backbone (docstring)
            records = ds.records(m, "train")[: args.items]
            batches = preprocessed_batches(m, bb, records, args.batch)
            runs = []

            # both closures run within this iteration; the defaults pin this iteration's values explicitly
            def ours(m=m, name=name, runs=runs):
                cache = Path(tmp) / f"cache-{m}-{len(runs)}"
                runs.append(cache)
                extract_mod.extract(
                    ExtractConfig.from_dict(
                        {
                            "dataset": "flickr8k",
                            "root": data,
                            "modalities": [m],
                            "splits": ["train"],
                            "device": args.device,
                            "batch_size": args.batch,
                            "workers": workers,
                            "cache_root": cache,
                            "limit": args.items,
                            "backbones": {KIND[m]: name},
                            "weights": {KIND[m]: "random:0"},
                        }
                    )
                )
                shutil.rmtree(cache)

            def bare(batches=batches, bb=bb):
                for b in batches:
                    encode(bb, b)

            encode(bb, batches[0])  # warm-up (allocator, kernels)
            res = _timing.compare(ours, bare, repeats=args.repeats, warmup=0, device=args.device)
            n, ratio = len(records), res["baseline_s"] / res["ours_s"]
            print(f"{m}: {n} items, extract {res['ours_all']} s, bare forward {res['baseline_all']} s")
            what = (
                f"{KIND[m]} extraction end to end vs bare forward, Flickr8k layout ({name}, {n} items, "
                f"batch {args.batch}, {workers} workers, {args.device})"
            )
            _timing.report(
                args,
                what,
                ">= 0.8 x bare forward",
                f"ours {n / res['ours_s']:.1f} items/s, bare forward {n / res['baseline_s']:.1f} items/s",
                f"{ratio:.2f} x bare forward",
                ratio >= 0.8,
            )


if __name__ == "__main__":
    main()
