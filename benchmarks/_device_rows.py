"""The five measurements of benchmarks/gpu.py, one function each: (args, emit) -> one row of the GPU table (a dict).

Each row dict holds what (the table's key: fixed, so a rerun replaces the row), target, measured, ratio, ok
(True / False / None) and figures (every number, for the JSON). Sizes are the issue's unless `args.smoke`. A
measurement with a long optional part calls `emit(row)` with the row so far first: if its cap ends it there,
that row is what is reported.
Models have seeded random weights (no download on a device machine); speed depends on the architecture only.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _timing  # noqa: E402

# Flickr8k's common sizes (width x height): most images are 500 wide, a fifth are portrait
FLICKR_SIZES = [(500, 375), (500, 333), (500, 334), (375, 500), (500, 500), (333, 500)]
WHAT = {
    "image": "GPU: ViT-B/32 image extraction from JPEG files vs bare forward, same precision",
    "text": "GPU: CLIP text extraction (trimmed, length-sorted) vs stock encode_text",
    "speech": "GPU: HuBERT-Base speech extraction, audio seconds per second",
    "train": "GPU: stage-two epoch at Flickr8k scale (PCMR, I 512 + T 512 + S 13x768, 30,000 rows, batch 80)",
    "search": "GPU: flat search over 10^6 x 256 fp16 embeddings vs matmul floor",
}


def _row(name: str, target: str, measured: str, ratio: str, ok: bool | None, **figures) -> dict:
    return {"what": WHAT[name], "target": target, "measured": measured, "ratio": ratio, "ok": ok, "figures": figures}


def _backbone(name: str, args):
    from pcmpipe.backbones import create_backbone
    from pcmpipe.extract import precision as arithmetic

    bb = create_backbone(name, weights="random:0", device=args.device)
    arithmetic.prepare(bb, args.precision)
    return bb


def image_table(folder: Path, n: int, distinct: int = 256) -> list[Path]:
    """A dataset.yaml folder of `n` train images (I only): `distinct` photo-like JPEGs at Flickr8k's sizes,
    hard-linked to make up `n` files (decoding cost is per file; making 8,000 distinct JPEGs would take minutes)."""
    from image_extract import photo_like

    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    made = []
    for i in range(min(n, distinct)):
        made.append(folder / "img" / f"{i:06d}.jpg")
        photo_like(made[-1], rng, FLICKR_SIZES[i % len(FLICKR_SIZES)])
    paths = made + [folder / "img" / f"{i:06d}.jpg" for i in range(len(made), n)]
    for i in range(len(made), n):
        os.link(made[i % len(made)], paths[i])
    rows = "".join(f"{i:06d},img/{i:06d}.jpg,train\n" for i in range(n))
    (folder / "images.csv").write_text("image_id,file,split\n" + rows)
    (folder / "dataset.yaml").write_text(
        "files: images.csv\nsplit_column: split\nmodalities:\n  I: {kind: image, column: file, id: image_id}\n"
    )
    return paths


def image(args, emit: Callable[[dict], None]) -> dict:
    """`extract` end to end from JPEG files (decode, resize, forward, write) vs the forward alone on tensors
    already preprocessed and on the device, same backbone object, batch and precision."""
    from PIL import Image

    import pcmpipe.extract.runner as runner
    from pcmpipe.config import ExtractConfig
    from pcmpipe.extract.sources import encode

    name = "clip-tiny-image" if args.smoke else "clip-vit-b32-image"
    n, batch = (16, 8) if args.smoke else (args.images, 256)
    bb = _backbone(name, args)
    runner.create_backbone = lambda *a, **k: bb  # model construction stays outside both timings
    workers = runner.default_workers(args.device)
    with tempfile.TemporaryDirectory(prefix="pcmpipe-gpu-img-") as tmp:
        paths = image_table(Path(tmp) / "data", n, distinct=8 if args.smoke else 256)
        distinct = torch.stack([bb.preprocess(Image.open(p).convert("RGB")) for p in paths[:256]]).to(args.device)
        pre = distinct.repeat((n + len(distinct) - 1) // len(distinct), 1, 1, 1)[:n]
        if pre.is_cuda:  # as extraction hands batches to the tower (pcmpipe.extract.decode)
            pre = pre.contiguous(memory_format=torch.channels_last)
        summaries = []

        def ours():
            cache = Path(tmp) / f"cache{len(summaries)}"
            summaries.append(
                runner.extract(
                    ExtractConfig.from_dict(
                        {
                            "dataset": "bench",
                            "root": str(Path(tmp) / "data"),
                            "modalities": ["I"],
                            "splits": ["train"],
                            "device": args.device,
                            "batch_size": batch,
                            "workers": workers,
                            "cache_root": str(cache),
                            "image_backbone": name,
                            "weights_image": "random:0",
                            "precision": args.precision,
                        }
                    )
                )
            )

        def bare():
            for i in range(0, n, batch):
                encode(bb, pre[i : i + batch])

        res = _timing.compare(ours, bare, repeats=1 if args.smoke else 2, warmup=0 if args.smoke else 1,
                              device=args.device)  # fmt: skip
    from pcmpipe.extract.decode import on_device

    fallback, where = summaries[-1].parts[0].decode_fallback, "the device" if on_device(bb) else "the CPU (PIL)"
    rate, bare_rate = n / res["ours_s"], n / res["baseline_s"]
    ratio = res["baseline_s"] / res["ours_s"]
    return _row(
        "image",
        ">= 4,000 images/s on one H100 and >= 0.9 x bare forward",
        f"ours {rate:,.0f} images/s, bare forward {bare_rate:,.0f} images/s ({n:,} JPEGs of Flickr8k sizes, batch "
        f"{batch}, {workers} workers, decoded on {where}, {fallback} of them on the CPU path; {args.precision})",
        f"{ratio:.2f} x bare forward",
        rate >= 4000 and ratio >= 0.9,
        images=n, batch=batch, workers=workers, ours_s=res["ours_all"], bare_s=res["baseline_all"],
        images_per_s=rate, bare_images_per_s=bare_rate, decode_fallback=fallback,
    )  # fmt: skip


def text(args, emit: Callable[[dict], None]) -> dict:
    """Extraction's text path (length-sorted batches cut to their longest caption) vs stock `encode_text` on the
    full 77-token context, both under the same autocast and inference mode."""
    from text_extract import captions

    from pcmpipe.backbones.batching import length_batches
    from pcmpipe.backbones.clip import token_lengths
    from pcmpipe.extract import precision as arithmetic
    from pcmpipe.extract.sources import encode

    name = "clip-tiny-text" if args.smoke else "clip-vit-b32-text"
    n, batch = (32, 16) if args.smoke else (args.captions, 512)
    bb = _backbone(name, args)
    tokens = bb.preprocess(captions(n))
    sorted_batches = length_batches(token_lengths(tokens).tolist(), batch)
    fixed = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    out_ours, out_stock = np.empty((n, *bb.feature_shape), np.float32), np.empty((n, *bb.feature_shape), np.float32)

    def ours():
        for b in sorted_batches:
            out_ours[b] = encode(bb, tokens[b])

    def stock():
        with torch.inference_mode(), arithmetic.autocast(bb):
            for b in fixed:
                out_stock[b] = bb.model.encode_text(tokens[b].to(args.device)).float().cpu().numpy()

    res = _timing.compare(ours, stock, repeats=1 if args.smoke else 3, warmup=1, device=args.device)
    scale = np.abs(out_stock).max()
    diff = float(np.abs(out_ours - out_stock).max() / scale)
    return _row(
        "text",
        ">= 3 x stock",
        f"ours {n / res['ours_s']:,.0f} captions/s, stock {n / res['baseline_s']:,.0f} captions/s ({n:,} Flickr8k-"
        f"length captions, batch {batch}, {args.precision}; largest difference {diff:.1e} of the largest value)",
        f"{res['speedup']:.2f} x stock",
        res["speedup"] >= 3.0,
        captions=n, batch=batch, ours_s=res["ours_all"], stock_s=res["baseline_all"], relative_diff=diff,
    )  # fmt: skip


def speech(args, emit: Callable[[dict], None]) -> dict:
    """HuBERT-Base over 1-10 s utterances in extraction's batches (`speech_batches`): audio seconds per second."""
    from speech_extract import RATE, utterances

    from pcmpipe.backbones.speech import speech_batches
    from pcmpipe.extract.sources import encode

    name = "hubert-tiny" if args.smoke else "hubert-base"
    n = 6 if args.smoke else args.utterances
    bb = _backbone(name, args)
    waves = utterances(n, high_s=3.0 if args.smoke else 10.0)
    batches = speech_batches([len(w) for w in waves], 64)
    encode(bb, bb.preprocess(waves[:2]))  # warm-up: kernels, allocator

    def run():
        for b in batches:
            encode(bb, bb.preprocess([waves[i] for i in b]))

    times = [_timing.timed(run, args.device)[0] for _ in range(1 if args.smoke else 2)]
    audio_s = sum(len(w) for w in waves) / RATE
    rate = audio_s / min(times)
    return _row(
        "speech",
        ">= 500 audio s/s",
        f"{rate:,.0f} audio s/s ({n} utterances of 1-{3 if args.smoke else 10} s, {audio_s:,.0f} s of audio, "
        f"{len(batches)} batches, {args.precision})",
        f"{rate / 500:.2f} x target",
        rate >= 500,
        utterances=n, audio_s=audio_s, seconds=times, audio_s_per_s=rate,
    )  # fmt: skip


def _epochs(cache: Path, runs: Path, name: str, device: str, epochs: int, **cfg) -> list[float]:
    """`pcmpipe.training.stage2.train` on the benchmark cache -> its recorded train seconds per epoch."""
    import plain_loop
    from train_epoch import DATASET

    from pcmpipe.config import TrainConfig
    from pcmpipe.training.stage2 import train

    train(TrainConfig.from_dict(dict(
        dataset=DATASET, modalities=["I", "T", "S"], loss="pcmr", batch_size=plain_loop.BATCH, epochs=epochs,
        patience=epochs + 1, cache_root=str(cache), runs_root=str(runs), name=name, device=device, progress=False,
        **cfg,
    )))  # fmt: skip
    lines = (runs / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_time_s"] for line in lines if line]


def train(args, emit: Callable[[dict], None]) -> dict:
    """Stage two's trainer (as is, and with `compile: true`) vs the plain PyTorch loop on the same device; the
    best epoch of each (the first pays for CUDA start-up and, compiled, for the compilation)."""
    import plain_loop
    from train_epoch import DATASET, write_cache

    images, evals, epochs = (40, 4, 1) if args.smoke else (6000, 100, 3)
    with tempfile.TemporaryDirectory(prefix="pcmpipe-gpu-train-") as tmp:
        cache, runs = Path(tmp) / "cache", Path(tmp) / "runs"
        write_cache(cache, images, 5, evals)
        ours = _epochs(cache, runs, "plain", args.device, epochs)
        data = plain_loop.load(cache, DATASET)
        base = plain_loop.run(data, epochs, seed=0, device=args.device)
        row = _train_row(len(data["T"]), epochs, ours, base, None)
        if not args.smoke:  # compiling takes the longest: the row so far stands if the cap ends it
            emit(row)
            row = _train_row(len(data["T"]), epochs, ours, base, _epochs(cache, runs, "compiled", args.device,
                                                                        epochs, compile=True))  # fmt: skip
    return row


def _train_row(rows: int, epochs: int, ours: list[float], base: list[float], compiled: list[float] | None) -> dict:
    best, best_base = min(ours), min(base)
    best_compiled = min(compiled) if compiled else None
    return _row(
        "train",
        "< 1 s per epoch",
        f"ours {best:.2f} s, compiled (`compile: true`) "
        f"{'not run' if best_compiled is None else f'{best_compiled:.2f} s'}, plain loop {best_base:.2f} s "
        f"({rows:,} rows; best of {epochs} epochs)",
        f"{best / best_base:.2f} x plain loop",
        min(best, best_compiled or best) < 1.0,
        rows=rows, ours_s=ours, compiled_s=compiled, plain_loop_s=base,
    )  # fmt: skip


def search(args, emit: Callable[[dict], None]) -> dict:
    """`FlatIndex` over a gallery held on the device (fp16, widened block by block) vs the floor: one float32
    product of the queries with the gallery widened beforehand, into a preallocated [Q, N] output."""
    from search import gallery

    from pcmpipe.index.flat import FlatIndex

    rows, dim, nq = (20_000, 64, 32) if args.smoke else (1_000_000, 256, 256)
    g16 = torch.from_numpy(gallery(rows, dim)).to(args.device)
    q = gallery(nq, dim, seed=1).astype(np.float32)
    flat = FlatIndex(g16)
    g32, qt = g16.float(), torch.from_numpy(q).to(args.device)
    scores = torch.empty(nq, rows, device=args.device)

    def floor():
        torch.mm(qt, g32.T, out=scores)

    res = _timing.compare(lambda: flat.search(q, 10), floor, repeats=3 if args.smoke else 10, device=args.device)
    _, found = flat.search(q, 10)
    floor()
    exact = scores.topk(10, dim=1).indices.cpu().numpy()
    agree = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
    ratio = res["baseline_s"] / res["ours_s"]
    return _row(
        "search",
        "flat within 1.5 x the floor (>= 0.67 x)",
        f"flat {res['ours_s'] * 1e3:.2f} ms, floor {res['baseline_s'] * 1e3:.2f} ms per batch of {nq} queries, top 10 "
        f"({rows:,} x {dim}; top-10 agreement with the floor's scores {agree:.2%})",
        f"{ratio:.2f} x floor",
        ratio >= 1 / 1.5,
        rows=rows, dim=dim, queries=nq, flat_s=res["ours_all"], floor_s=res["baseline_all"], agreement=agree,
    )  # fmt: skip


SECTIONS = {"image": image, "text": text, "speech": speech, "train": train, "search": search}
