"""`extract --views K`: what the augmented views cost (extraction time, cache size) and what they change (test r@1).

1. Cost: a synthetic Flickr8k of the demo's size (600 images, 3,000 captions and spoken captions) extracted with
   the tiny random-weight backbones (clip-tiny-image, clip-tiny-text, hubert-tiny; CPU), once with K = 0 and once
   with K = 2: wall seconds and bytes on disk of the whole cache (I, T, S, every split) and of the train split's
   I and T caches, the only ones that get views.
2. The demo's Flickr8k runs (PCMC and PCMR on I, T, S; batch 80, lr 1e-3, patience 6, 30 epochs, seed 0) on both
   caches: test mean r@1 over the six directions.
3. A planted cache (benchmarks/_planted.py, raw cosine 0.00; 300 train images so the heads can overfit) has no
   pixels or words to augment: its K = 2 views are the clean rows plus Gaussian noise of 0.5 x each dimension's
   std, a stand-in for augmentation's invariance. Same runs (20 epochs), same metric.

    python benchmarks/views.py --threads 1            # about 10 minutes on 2 busy cores
    python benchmarks/views.py --smoke --no-write     # seconds: checks the script runs
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _planted  # noqa: E402
import _timing  # noqa: E402

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}
FULL = {"images": 600, "epochs": 30, "planted": {"train": 300, "val": 150, "test": 150}, "planted_epochs": 20}
SMOKE = {"images": 30, "epochs": 1, "planted": {"train": 40, "val": 16, "test": 16}, "planted_epochs": 1}
K = 2


def _extra(p) -> None:
    p.add_argument("--views", type=int, default=K, help="augmented views compared against none")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per run (the r@1 is their mean)")
    p.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")


def _bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def extract_cost(data: Path, cache: Path, views: int, device: str) -> dict:
    from pcmpipe.cache.layout import cache_dir
    from pcmpipe.config import ExtractConfig
    from pcmpipe.extract import extract

    # a throwaway extraction first: model construction and first-call costs go there, not into either timing
    common = dict(dataset="flickr8k", root=data, backbones=TINY, weights=RANDOM, device=device, workers=0, views=views)
    warm = cache.with_name(cache.name + ".warm")
    extract(
        ExtractConfig.from_dict(
            {**common, "modalities": ["I", "T"], "splits": ["train"], "cache_root": warm, "limit": 2}
        )
    )
    t0 = time.perf_counter()
    summary = extract(ExtractConfig.from_dict({**common, "cache_root": cache}))
    seconds = time.perf_counter() - t0
    train = {m: _bytes(cache_dir(cache, "flickr8k", m, "train")) for m in ("I", "T")}
    parts = {f"{p.modality} {p.split}": round(p.seconds, 2) for p in summary.parts}
    train_seconds = sum(p.seconds for p in summary.parts if p.split == "train" and p.modality in ("I", "T"))
    return {
        "seconds": seconds,
        "train_IT_seconds": train_seconds,
        "bytes": _bytes(cache / "flickr8k"),
        "train_IT_bytes": train,
        "parts": parts,
    }


def run(cache: Path, dataset: str, loss: str, epochs: int, device: str, threads: int | None, seed: int = 0) -> float:
    """One demo-recipe stage-two run on I, T, S -> test mean r@1 (instance match)."""
    from pcmpipe.config import TrainConfig
    from pcmpipe.training.evaluate import mean_r1
    from pcmpipe.training.stage2 import train

    cfg = TrainConfig.from_dict(
        {
            "dataset": dataset,
            "modalities": ["I", "T", "S"],
            "loss": loss,
            "batch_size": 80,
            "epochs": epochs,
            "patience": 6,
            "lr": 1e-3,
            "seed": seed,
            "cache_root": str(cache),
            "runs_root": str(cache / "runs"),
            "name": f"{loss}-seed{seed}",
            "device": device,
            "progress": False,
            "threads": threads,
        }
    )
    run_dir = train(cfg)
    return mean_r1(json.loads((run_dir / "test_metrics.json").read_text())["instance"])


def runs(cache: Path, dataset: str, epochs: int, args) -> dict:
    """PCMC and PCMR over `args.seeds` seeds -> {loss: mean test mean r@1, loss/seeds: each seed's}."""
    out: dict = {}
    for loss in ("pcmc", "pcmr"):
        each = [run(cache, dataset, loss, epochs, args.device, args.threads, seed) for seed in range(args.seeds)]
        out[loss], out[f"{loss}/seeds"] = float(np.mean(each)), each
    return out


def add_noise_views(root: Path, views: int, scale: float = 0.5, seed: int = 0) -> None:
    """Give the planted train caches of I and T `views` noisy copies of each row (the `views` feature)."""
    from pcmpipe.augment import VIEWS_FEATURE
    from pcmpipe.cache import ShardWriter, cache_dir, open_cache

    rng = np.random.default_rng(seed)
    for m in ("I", "T"):
        directory = cache_dir(root, _planted.DATASET, m, "train")
        reader = open_cache(directory)
        columns, feats = reader.read()
        (name,) = feats
        x = feats[name]
        noisy = x[:, None] + scale * x.std(axis=0) * rng.standard_normal((x.shape[0], views, *x.shape[1:]))
        out = directory.with_name("train.views")
        spec = {name: (reader.shapes[name], "float32"), VIEWS_FEATURE: ((views, *reader.shapes[name]), "float32")}
        meta = {**reader.meta, "augment": {"views": views, "transform": f"gaussian noise {scale} x std"}}
        with ShardWriter(out, features=spec, key=reader.key, links=reader.links, meta=meta) as w:
            arrays = {name: x, VIEWS_FEATURE: noisy.astype(np.float32)}
            w.add(list(columns["id"]), {c: list(columns[c]) for c in reader.links}, arrays)
        directory.rename(directory.with_name("train.clean"))
        out.rename(directory)


def main() -> None:
    args = _timing.parse_args(__doc__.splitlines()[0], _extra)
    size = SMOKE if args.smoke else FULL
    from pcmpipe.datasets.synthetic import synth

    out: dict = {"views": args.views}
    with tempfile.TemporaryDirectory(prefix="views-bench-") as tmp:
        data = Path(tmp) / "flickr8k"
        synth("flickr8k", data, images=size["images"], seed=0)
        for k in (0, args.views):
            cache = Path(tmp) / f"cache{k}"
            cost = extract_cost(data, cache, k, args.device)
            cost["r1"] = runs(cache, "flickr8k", size["epochs"], args)
            out[f"demo K={k}"] = cost
            print(f"demo K={k}: {json.dumps(cost)}")
        for k in (0, args.views):
            root = Path(tmp) / f"planted{k}"
            _planted.write_planted_cache(root, 0.0, images=size["planted"])
            if k:
                add_noise_views(root, k)
            r1 = runs(root, _planted.DATASET, size["planted_epochs"], args)
            out[f"planted K={k}"] = r1
            print(f"planted K={k}: {json.dumps(r1)}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    a, b = out["demo K=0"], out[f"demo K={args.views}"]
    pa, pb = out["planted K=0"], out[f"planted K={args.views}"]
    train_a, train_b = sum(a["train_IT_bytes"].values()), sum(b["train_IT_bytes"].values())
    measured = (
        f"{args.seeds} seeds; extract {a['seconds']:.1f} s -> {b['seconds']:.1f} s "
        f"(train I+T {a['train_IT_seconds']:.1f} -> "
        f"{b['train_IT_seconds']:.1f} s), cache {a['bytes'] / 2**20:.2f} -> "
        f"{b['bytes'] / 2**20:.2f} MiB (train I+T {train_a / 2**20:.2f} -> {train_b / 2**20:.2f}); demo test mean "
        f"r@1 PCMC {a['r1']['pcmc']:.1f} -> {b['r1']['pcmc']:.1f}, PCMR {a['r1']['pcmr']:.1f} -> "
        f"{b['r1']['pcmr']:.1f}; planted PCMC {pa['pcmc']:.1f} -> {pb['pcmc']:.1f}, PCMR {pa['pcmr']:.1f} -> "
        f"{pb['pcmr']:.1f}"
    )
    _timing.report(
        args,
        f"extract --views {args.views} vs none (synthetic Flickr8k, tiny backbones)",
        f"train I+T cache about {args.views + 1}x, the rest unchanged",
        measured,
        f"cache {b['bytes'] / a['bytes']:.2f}x, extraction {b['seconds'] / a['seconds']:.2f}x (train I+T "
        f"{b['train_IT_seconds'] / a['train_IT_seconds']:.2f}x)",
        None,
    )


if __name__ == "__main__":
    main()
