"""Stage-two peak memory against the training split's size: streamed (pcmpipe.samples.stream) vs in memory.

Image-text pairs (one caption per image, as in LAION-style data): I 512 + T 512, float16 on disk, so 3 x 10^6 pairs
are about 6 GiB of features. For each size the cache is written (then deleted), and `pcmpipe.training.stage2.train`
runs one epoch (PCMC, batch 256) in a fresh child process that reports its own peak RSS
(VmHWM of /proc/self/status, not ru_maxrss: see `_PEAK`) and the epoch's `train_time_s` from metrics.jsonl.
Rows:
* streamed peak RSS from the smallest to the largest size (target: flat within 1.2 x);
* streamed epoch time vs in memory on the smallest size, same run (target: >= 0.8 x the in-memory throughput);
* Flickr8k-scale in-memory peak with float16 features (6,000 I, 30,000 T and S 13 x 768, as
  benchmarks/train_epoch.py but fp16 on disk; target <= 1.2 GiB, 1.98 GiB with float32).

    python benchmarks/train_memory.py                     # 3e4, 3e5 (and --rows 3000000 for the large one)
    python benchmarks/train_memory.py --smoke --no-write
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _timing  # noqa: E402

GIB = 1024**3
DATASET = "benchpairs"
CHUNK = 65536


def write_pairs(root: Path, dataset: str, rows: int, eval_rows: int, seed: int = 0) -> None:
    """I and T caches of `rows` image-text pairs (train) and `eval_rows` each in val and test, float16."""
    from pcmpipe.cache import ShardWriter, cache_dir

    rng = np.random.default_rng(seed)
    for split, n in (("train", rows), ("val", eval_rows), ("test", eval_rows)):
        for m, key, links in (("I", "image_id", []), ("T", "caption_id", ["image_id"])):
            with ShardWriter(
                cache_dir(root, dataset, m, split),
                features={"feat": ((512,), "float16")},
                key=key,
                links=links,
                meta={"backbone": "random", "dataset": dataset, "split": split},
                rows_per_shard=16384,
            ) as w:
                for s in range(0, n, CHUNK):
                    img = [f"{split}{i:08d}" for i in range(s, min(n, s + CHUNK))]
                    ids = img if m == "I" else [f"{i}#0" for i in img]
                    x = rng.standard_normal((len(ids), 512), dtype=np.float32).astype(np.float16)
                    w.add(ids, {"image_id": img} if links else {}, {"feat": x})


def write_flickr_fp16(root: Path, images: int, eval_images: int) -> None:
    """Flickr8k-shaped I, T, S caches (5 captions an image) in float16."""
    from pcmpipe.cache import ShardWriter, cache_dir

    rng = np.random.default_rng(0)
    shapes = {"I": (512,), "T": (512,), "S": (13, 768)}
    for split, n_img in (("train", images), ("val", eval_images), ("test", eval_images)):
        img_ids = [f"{split}{i:05d}" for i in range(n_img)]
        cap_ids = [f"{i}#{j}" for i in img_ids for j in range(5)]
        for m, shape in shapes.items():
            rows = img_ids if m == "I" else cap_ids
            key, links = ("image_id", []) if m == "I" else ("caption_id", ["image_id"])
            with ShardWriter(
                cache_dir(root, "benchflickr16", m, split),
                features={"feat": (shape, "float16")},
                key=key,
                links=links,
                meta={"backbone": "random", "dataset": "benchflickr16", "split": split},
            ) as w:
                for s in range(0, len(rows), 4096):
                    ids = rows[s : s + 4096]
                    x = rng.standard_normal((len(ids), *shape), dtype=np.float32).astype(np.float16)
                    w.add(ids, {} if m == "I" else {"image_id": [c.split("#")[0] for c in ids]}, {"feat": x})


# The child's own high-water mark: VmHWM of /proc/self/status (the address space made by exec). Not ru_maxrss:
# Linux carries the parent's high-water mark across vfork + exec (subprocess's default), so after this process
# wrote the 3 x 10^6-row cache (~1.2 GiB resident) every child reported at least that (the 1.21-1.22 GiB rows).
_PEAK = (
    "next((int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')), None) "
    "or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024"
)


def run_child(cache: Path, runs: Path, dataset: str, modalities: str, stream: bool, threads: int | None, **kw):
    """One epoch of `train()` in a fresh process -> (train seconds, peak RSS bytes of that process)."""
    settings = dict(
        dataset=dataset,
        modalities=modalities,
        batch_size=kw.pop("batch_size", 256),
        epochs=1,
        patience=2,
        cache_root=str(cache),
        runs_root=str(runs),
        name=f"{dataset}-{'stream' if stream else 'memory'}",
        device="cpu",
        progress=False,
        stream=stream,
        **kw,
    )
    code = (
        "import json, resource, sys, torch\n"
        f"{f'torch.set_num_threads({threads})' if threads else ''}\n"
        "from pcmpipe.config import TrainConfig\nfrom pcmpipe.training.stage2 import train\n"
        f"run = train(TrainConfig.from_dict({settings!r}))\n"
        "rec = json.loads((run / 'metrics.jsonl').read_text().splitlines()[0])\n"
        f"print(json.dumps({{'peak': ({_PEAK}), 'train_s': rec['train_time_s']}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(runs, ignore_errors=True)
    return out["train_s"], out["peak"]


def main() -> None:
    def extra(p):
        p.add_argument("--rows", type=int, nargs="+", default=[30_000, 300_000], help="train pairs per size")
        p.add_argument("--flickr-images", type=int, default=6000, help="Flickr8k-scale row: train images")
        p.add_argument("--no-flickr", action="store_true", help="skip the Flickr8k-scale fp16 row")
        p.add_argument("--tmp", default=None, help="where the caches are written (default: the system temp dir)")

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    if args.smoke:
        args.rows, args.flickr_images = [2000, 6000], 40
    eval_rows = 1000 if not args.smoke else 100
    peaks: dict[int, int] = {}
    times: dict[str, float] = {}
    for i, rows in enumerate(sorted(args.rows)):
        with tempfile.TemporaryDirectory(prefix="pcmpipe-bench-", dir=args.tmp) as tmp:
            cache, runs = Path(tmp) / "cache", Path(tmp) / "runs"
            t0 = time.perf_counter()
            write_pairs(cache, DATASET, rows, eval_rows)
            print(f"{rows:,} pairs written in {time.perf_counter() - t0:.0f} s", flush=True)
            # A small budget: the looked-up images are spilled at every size, so the sizes compare like for like.
            spill = {"spill_dir": tmp, "memory_budget_mb": 16}
            if i == 0:  # the throughput comparison, same run, smallest size
                times["memory"], _ = run_child(cache, runs, DATASET, "I,T", False, args.threads)
            times[f"stream{rows}"], peaks[rows] = run_child(cache, runs, DATASET, "I,T", True, args.threads, **spill)
            print(f"{rows:,}: streamed {times[f'stream{rows}']:.1f} s, peak {peaks[rows] / GIB:.2f} GiB", flush=True)
    flickr_peak = None
    if not args.no_flickr:
        with tempfile.TemporaryDirectory(prefix="pcmpipe-bench-", dir=args.tmp) as tmp:
            cache, runs = Path(tmp) / "cache", Path(tmp) / "runs"
            write_flickr_fp16(cache, args.flickr_images, args.flickr_images // 6)
            _, flickr_peak = run_child(cache, runs, "benchflickr16", "I,T,S", False, args.threads, batch_size=80)

    small, large = min(peaks), max(peaks)
    growth = peaks[large] / peaks[small]
    sizes = ", ".join(f"{r:,}: {peaks[r] / GIB:.2f} GiB" for r in sorted(peaks))
    _timing.report(
        args,
        f"stage-two streamed peak RSS vs train rows (I 512 + T 512 pairs, fp16 on disk, batch 256; {small:,} to "
        f"{large:,})",
        "flat: <= 1.2 x from smallest to largest",
        sizes,
        f"{growth:.2f} x",
        growth <= 1.2,
    )
    rate = times["memory"] / times[f"stream{small}"]
    _timing.report(
        args,
        f"stage-two streamed epoch vs in memory ({small:,} pairs, batch 256, same run)",
        ">= 0.8 x in-memory throughput",
        f"streamed {times[f'stream{small}']:.2f} s, in memory {times['memory']:.2f} s",
        f"{rate:.2f} x",
        rate >= 0.8,
    )
    if flickr_peak is None:
        return
    n_cap = 5 * args.flickr_images
    _timing.report(
        args,
        f"stage-two in-memory peak with fp16 features ({n_cap:,} train captions, I 512 + T 512 + S 13x768, batch 80)",
        "<= 1.2 GiB (1.98 GiB with fp32)",
        f"{flickr_peak / GIB:.2f} GiB peak RSS of the training process",
        f"{flickr_peak / (1.2 * GIB):.2f} x budget",
        flickr_peak <= 1.2 * GIB,
    )


if __name__ == "__main__":
    main()
