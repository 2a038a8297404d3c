"""Extraction precision: bf16 autocast vs fp32 features of the CLIP image tower, and retrieval r@1 with each.

Planted pairs: `--pairs` photo-like 500 x 375 JPEGs (`image_extract.photo_like`), each with a near duplicate
(the same picture with fresh pixel noise, a brightness shift and a slightly shifted crop). Both images of every
pair go through the tower's own preprocessing and `pcmpipe.extract.sources.encode` twice: with `precision` fp32
and bf16 (autocast on the CPU). Reported: the cosine between each image's fp32 and bf16 feature (mean and
worst), the largest relative difference, and r@1 of finding an image's duplicate among all duplicates with
fp32 features and with bf16 ones (points of the difference). tests/extract/test_precision.py bounds the same
on the tiny tower.

    python benchmarks/precision.py --threads 1
    python benchmarks/precision.py --smoke --no-write
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402
from image_extract import photo_like  # noqa: E402


def planted_pairs(folder: Path, pairs: int, seed: int = 0) -> list[tuple[Path, Path]]:
    """`pairs` JPEG pairs in `folder`: a photo-like image and its near duplicate (module docstring)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(pairs):
        a, b = folder / f"{i:04d}a.jpg", folder / f"{i:04d}b.jpg"
        photo_like(a, rng)
        arr = np.asarray(Image.open(a), dtype=np.int16)[4:, 6:]  # shifted by a few pixels
        arr = arr + rng.integers(-20, 21, arr.shape) + int(rng.integers(-15, 16))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(b, quality=85)
        out.append((a, b))
    return out


def features(backbone, paths: list[Path], precision: str, batch: int = 16) -> np.ndarray:
    """The tower's features of `paths` encoded with `precision` (fp32 | fp16 | bf16) -> float32 [N, D]."""
    from PIL import Image

    from pcmpipe.extract import precision as arithmetic
    from pcmpipe.extract.sources import encode

    arithmetic.prepare(backbone, precision)
    out = []
    for i in range(0, len(paths), batch):
        x = torch.stack([backbone.preprocess(Image.open(p).convert("RGB")) for p in paths[i : i + batch]])
        out.append(encode(backbone, x))
    return np.concatenate(out)


def duplicate_r1(feats: np.ndarray) -> float:
    """r@1 (percent) of each first image finding its own duplicate among every pair's second image (cosine)."""
    from pcmpipe.evaluation.metrics import recall_at_k

    z = torch.nn.functional.normalize(torch.from_numpy(feats), dim=1)
    queries, gallery = z[0::2], z[1::2]
    return 100.0 * recall_at_k(queries @ gallery.T, torch.eye(len(queries), dtype=torch.bool), 1)


def compare_precisions(backbone, pairs: list[tuple[Path, Path]], other: str = "bf16") -> dict:
    """fp32 vs `other` on the planted pairs: feature agreement and both r@1 (module docstring)."""
    paths = [p for pair in pairs for p in pair]
    ref, low = features(backbone, paths, "fp32"), features(backbone, paths, other)
    cos = (ref * low).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1))
    rel = np.linalg.norm(ref - low, axis=1) / np.linalg.norm(ref, axis=1)
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "max_relative_diff": float(rel.max()),
        "r1_fp32": duplicate_r1(ref),
        f"r1_{other}": duplicate_r1(low),
    }


def main() -> None:
    def extra(p):
        p.add_argument("--pairs", type=int, default=100)
        p.add_argument("--backbone", default="clip-vit-b32-image")

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    import tempfile

    from pcmpipe.backbones import create_backbone

    if args.smoke:
        args.pairs, args.backbone = 8, "clip-tiny-image"
    bb = create_backbone(args.backbone, weights="random:0", device=args.device)
    with tempfile.TemporaryDirectory(prefix="pcmpipe-bench-precision-") as tmp:
        res = compare_precisions(bb, planted_pairs(Path(tmp), args.pairs))
    print(res)
    drop = res["r1_fp32"] - res["r1_bf16"]
    _timing.report(
        args,
        f"extraction bf16 autocast vs fp32 features ({args.backbone}, random weights, {args.pairs} planted "
        f"near-duplicate pairs, {args.device})",
        "duplicate r@1 within 0.2 points of fp32",
        f"cosine to fp32 mean {res['mean_cosine']:.5f}, worst {res['min_cosine']:.5f}; largest relative "
        f"difference {res['max_relative_diff']:.3f}; r@1 fp32 {res['r1_fp32']:.1f}, bf16 {res['r1_bf16']:.1f}",
        f"{drop:+.1f} points",
        abs(drop) <= 0.2,
    )


if __name__ == "__main__":
    main()
