"""`pcmpipe serve` under load: mixed text and image queries against a 100,000-item gallery at 1, 4 and 32
concurrent clients, over HTTP on loopback, against the same queries through `Run.search` in this process.

* The run: synthetic Flickr8k images, extracted with CLIP-sized towers (clip-vit-b32 image and text, random
  weights: the compute of CLIP without a download) and trained one epoch. The gallery: 100,000 unit vectors
  written as an embeddings cache of the run's I modality, served with `--gallery I=DIR` (flat index).
* Queries alternate a caption (T -> I) and an image file uploaded as the query (I -> I), k = 10.
* Service: `pcmpipe serve` in its own process with the same torch thread count; clients are asyncio tasks
  (httpx) in this process, each sending its next query when the last is answered. Bounded: a fixed number of
  queries per level and --max-seconds per level.
* Baselines, in this process: `Run.search` one query at a time (its p50 and p99), and the same queries
  encoded in batches of 32 (one `Run.embed` per modality per batch, one search of the flat index).
Targets (issue 25): p99 at 1 client within 1.3 x the in-process p99 of one query; throughput at 32 clients at
least 0.7 x the batched in-process rate.

    python benchmarks/serve_load.py --threads 1
    python benchmarks/serve_load.py --smoke --no-write
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

LEVELS = (1, 4, 32)


def make_run(root: Path, backbones: dict, images: int) -> Path:
    """Synthetic Flickr8k -> caches with `backbones` (random weights) -> a one-epoch run directory."""
    from pcmpipe.config import ExtractConfig, TrainConfig
    from pcmpipe.datasets.synthetic import synth
    from pcmpipe.extract import extract
    from pcmpipe.training.stage2 import train

    data, cache = root / "flickr8k", root / "cache"
    synth("flickr8k", data, images=images, seed=0)
    extract(ExtractConfig.from_dict(dict(dataset="flickr8k", root=str(data), modalities=["I", "T"], backbones=backbones,
            weights={k: "random:0" for k in backbones}, device="cpu", workers=0, cache_root=str(cache))))  # fmt: skip
    cfg = TrainConfig.from_dict(
        dict(dataset="flickr8k", modalities="I,T", cache_root=str(cache), runs_root=str(cache / "runs"), epochs=1,
             batch_size=16, dim=256, progress=False, name="load", device="cpu")
    )  # fmt: skip
    return Path(train(cfg))


def write_gallery(run, out: Path, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` unit vectors as an embeddings cache naming the run and modality I -> (ids, vectors)."""
    from pcmpipe.cache import ShardWriter

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, run.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.asarray([f"g{i}" for i in range(rows)])
    meta = {"run": run.path.name, "run_fingerprint": run.fingerprint, "modality": "I"}
    with ShardWriter(out, features={"embedding": ((run.dim,), "float32")}, key="id", links=[], meta=meta,
                     rows_per_shard=50_000) as w:  # fmt: skip
        w.add(list(ids), {}, {"embedding": x})
    return ids, x


def queries(data: Path, n: int) -> list[tuple[str, str]]:
    """n queries alternating (T, caption) and (I, image path)."""
    from pcmpipe.datasets import open_dataset

    ds = open_dataset("flickr8k", data)
    texts = [r.text for r in ds.records("T", "train")]
    paths = [str(r.path) for r in ds.records("I", "train")]
    return [("T", texts[i % len(texts)]) if i % 2 == 0 else ("I", paths[i % len(paths)]) for i in range(n)]


def in_process(run, gallery, qs: list[tuple[str, str]]) -> dict:
    """Per-query latencies of Run.search, and the rate of the same queries encoded in batches of 32."""
    for m, q in qs[:4]:  # builds both backbones
        run.search(q, from_=m, to="I", k=10, gallery=gallery)
    lat = []
    for m, q in qs:
        t0 = time.perf_counter()
        run.search(q, from_=m, to="I", k=10, gallery=gallery)
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(qs), 32):
        batch = qs[i : i + 32]
        items = {m: [q for mm, q in batch if mm == m] for m in ("T", "I")}
        # ids by position, as the service gives them: one image may be queried twice in a batch
        vecs = [run.embed_inputs(m, x, ids=[str(n) for n in range(len(x))])[1] for m, x in items.items()]
        gallery.search(np.concatenate(vecs), 10)
    batched = len(qs) / (time.perf_counter() - t0)
    return {"p50": statistics.median(lat), "p99": float(np.percentile(lat, 99)), "batched_rate": batched}


def start_server(run_dir: Path, gallery_dir: Path, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(_timing.REPO)}
    cmd = [sys.executable, "-m", "pcmpipe", "serve", str(run_dir), "--port", "0", "--gallery", f"I={gallery_dir}"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = re.search(r"open (http://\S+)", log.read_text())
        if found:
            return proc, found.group(1).rstrip("/")
        if proc.poll() is not None:
            raise SystemExit(f"pcmpipe serve exited: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("pcmpipe serve did not start in 600 s")


async def _ask(client, url: str, m: str, q: str) -> None:
    if m == "T":
        r = await client.post(f"{url}/api/search", json={"from": "T", "to": "I", "text": q, "k": 10})
    else:
        with open(q, "rb") as f:
            r = await client.post(f"{url}/api/search/file", data={"from": "I", "to": "I", "k": "10"},
                                  files={"file": ("q.jpg", f.read())})  # fmt: skip
    if r.status_code != 200 or len(r.json()["hits"]) != 10:
        raise SystemExit(f"query failed: {r.status_code} {r.text[:300]}")


async def load(url: str, qs: list[tuple[str, str]], clients: int, max_seconds: float) -> dict:
    """`clients` tasks sending the queries one after another -> throughput, p50, p99 (seconds)."""
    import httpx

    lat: list[float] = []
    todo = iter(qs)
    stop = time.perf_counter() + max_seconds

    async def client_loop(client) -> None:
        for m, q in todo:
            if time.perf_counter() > stop:
                return
            t0 = time.perf_counter()
            await _ask(client, url, m, q)
            lat.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"n": len(lat), "rate": len(lat) / wall, "p50": statistics.median(lat), "p99": float(np.percentile(lat, 99))}


def main() -> None:
    def extra(p):
        p.add_argument("--rows", type=int, default=100_000, help="gallery size")
        p.add_argument("--queries", type=int, default=64, help="queries per client level (x clients/4 above 4)")
        p.add_argument("--max-seconds", type=float, default=240.0, help="time cap per client level")

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    from pcmpipe.index import EmbeddingIndex, build_index
    from pcmpipe.runs import load_run

    backbones = {"image": "clip-vit-b32-image", "text": "clip-vit-b32-text"}
    if args.smoke:
        args.rows, args.queries, args.max_seconds = 5_000, 16, 60.0
        backbones = {"image": "clip-tiny-image", "text": "clip-tiny-text"}
    threads = args.threads or 1
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        run_dir = make_run(root, backbones, images=24)
        run = load_run(run_dir)
        ids, vectors = write_gallery(run, root / "gallery", args.rows)
        gallery = EmbeddingIndex(build_index(vectors, "flat"), ids)
        counts = {c: max(args.queries, args.queries * c // 4) for c in LEVELS}
        qs = queries(root / "flickr8k", max(counts.values()))
        base = in_process(run, gallery, qs[: args.queries])
        proc, url = start_server(run_dir, root / "gallery", threads, root / "serve.log")
        try:
            asyncio.run(load(url, qs[:8], 2, args.max_seconds))  # warm-up: both backbones built
            found = {c: asyncio.run(load(url, qs[: counts[c]], c, args.max_seconds)) for c in LEVELS}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    report(args, base, found)


def report(args, base: dict, found: dict) -> None:
    levels = "; ".join(
        f"{c} clients: {r['rate']:.1f} q/s, p50 {r['p50'] * 1e3:.0f} ms, p99 {r['p99'] * 1e3:.0f} ms ({r['n']} queries)"
        for c, r in found.items()
    )
    measured = (
        f"{levels}; in process: p50 {base['p50'] * 1e3:.0f} ms, p99 {base['p99'] * 1e3:.0f} ms per query, "
        f"{base['batched_rate']:.1f} q/s in batches of 32"
    )
    print(measured)
    what = f"serve, mixed text + image queries, {args.rows:,}-item flat gallery, loopback"
    p99 = found[1]["p99"] / base["p99"]
    _timing.report(args, f"{what}: p99 at 1 client vs in-process Run.search", "<= 1.3 x in-process p99",
                   measured, f"{p99:.2f} x", p99 <= 1.3)  # fmt: skip
    rate = found[32]["rate"] / base["batched_rate"]
    _timing.report(args, f"{what}: throughput at 32 clients vs batched in-process", ">= 0.7 x batched rate",
                   measured, f"{rate:.2f} x", rate >= 0.7)  # fmt: skip


if __name__ == "__main__":
    main()
