"""Image extraction end to end vs the bare ViT-B/32 forward on pre-made tensors, same run.

* ours: `pcmpipe.extract.extract` on a Flickr8k layout (`pcmpipe synth`, its JPEGs replaced by Flickr8k-sized
  500 x 375 photos-like images, quality 90): read, decode, preprocess in DataLoader workers, forward, write
  Parquet shards and manifests of the train split -- into a fresh cache directory each time.
* bare: `pcmpipe.extract.sources.encode` (the same forward under inference mode) on tensors preprocessed
  beforehand, in the same batch size.
Both use one backbone object built once (CLIP ViT-B/32, seeded random weights): `extract` gets it through
`pcmpipe.extract.runner.create_backbone`, so model construction is outside both timings.
ratio = bare time / ours (1.0: the pipeline adds nothing to the forward pass).

    python benchmarks/image_extract.py
    python benchmarks/image_extract.py --smoke --no-write      # tiny CLIP
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402


def photo_like(path: Path, rng: np.random.Generator, size=(500, 375)) -> None:
    """A smooth random image (upsampled noise plus texture) saved as JPEG: decodes like a photo of that size."""
    from PIL import Image

    small = rng.integers(0, 256, (size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.BICUBIC)
    arr = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)


def image_args(images: int, what: str):
    """The flags of a raw-images benchmark (this one and benchmarks/embed.py): --images, --batch, --workers."""

    def extra(p):
        p.add_argument("--images", type=int, default=images, help=what)
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--workers", type=int, default=None, help="decode processes (default: extract's)")
        p.add_argument("--repeats", type=int, default=1)

    return extra


def main() -> None:
    args = _timing.parse_args(__doc__.splitlines()[0], image_args(144, "synthetic Flickr8k images (2/3 in train)"))
    import pcmpipe.extract.runner as extract_mod
    from pcmpipe.backbones import create_backbone
    from pcmpipe.config import ExtractConfig
    from pcmpipe.datasets import open_dataset
    from pcmpipe.datasets.synthetic import synth
    from pcmpipe.extract.sources import encode

    name = "clip-tiny-image" if args.smoke else "clip-vit-b32-image"
    if args.smoke:
        args.images, args.batch = 12, 4  # 8 in train
    workers = extract_mod.default_workers(args.device) if args.workers is None else args.workers
    bb = create_backbone(name, weights="random:0", device=args.device)
    extract_mod.create_backbone = lambda *a, **k: bb  # the one prebuilt backbone (see module docstring)

    with tempfile.TemporaryDirectory(prefix="pcmpipe-bench-img-") as tmp:
        data = Path(tmp) / "flickr8k"
        synth("flickr8k", data, images=args.images)
        rng = np.random.default_rng(0)
        for jpg in sorted((data / "Flicker8k_Dataset").glob("*.jpg")):
            photo_like(jpg, rng)
        ds = open_dataset("flickr8k", data)
        paths = [r.path for r in ds.records("I", "train")]  # one split: one loader in steady state
        from PIL import Image

        pre = torch.stack([bb.preprocess(Image.open(p).convert("RGB")) for p in paths])  # [N, 3, S, S]
        runs = []

        def ours():
            cache = Path(tmp) / f"cache{len(runs)}"
            runs.append(cache)
            extract_mod.extract(
                ExtractConfig.from_dict(
                    {
                        "dataset": "flickr8k",
                        "root": data,
                        "modalities": ["I"],
                        "splits": ["train"],
                        "device": args.device,
                        "batch_size": args.batch,
                        "workers": workers,
                        "cache_root": cache,
                        "backbones": {"image": name},
                        "weights": {"image": "random:0"},
                    }
                )
            )
            shutil.rmtree(cache)

        def bare():
            for i in range(0, len(pre), args.batch):
                encode(bb, pre[i : i + args.batch])

        with torch.inference_mode():
            bb.encode(pre[: min(2, len(pre))].to(args.device))  # warm-up
        res = _timing.compare(ours, bare, repeats=args.repeats, warmup=0, device=args.device)
    report_against_bare(args, "image extraction", name, len(paths), res, workers)


def report_against_bare(args, what: str, name: str, n: int, res: dict, workers: int) -> None:
    """The row of a raw-images-end-to-end benchmark against the bare forward (also benchmarks/embed.py's)."""
    ratio = res["baseline_s"] / res["ours_s"]
    print(f"{n} images: {what} {res['ours_all']} s, bare forward {res['baseline_all']} s")
    _timing.report(
        args,
        f"{what} end to end vs bare forward ({name}, {n} images 500x375 JPEG, batch {args.batch}, "
        f"{workers} workers, {args.device})",
        ">= 0.9 x bare forward",
        f"ours {n / res['ours_s']:.1f} images/s, bare forward {n / res['baseline_s']:.1f} images/s",
        f"{ratio:.2f} x bare forward",
        ratio >= 0.9,
    )


if __name__ == "__main__":
    main()
