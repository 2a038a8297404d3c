"""SIGKILL fault sweep of `pcmpipe extract`, and two extractions into one new cache at once.

The sweep chains kills to stay cheap: one real `pcmpipe extract` (tiny backbones, synthetic Flickr8k with speech,
every split; every other start decodes in a worker process, --workers 1), a process forked from a prepared
interpreter (tests/forked_cli.py: no torch import per start), is killed with SIGKILL at a seeded random point,
started again and killed at the next point, 20 times (PCMPIPE_FAULT_SWEEP_N raises it), then run to the end by a
fresh `python -m pcmpipe extract`. The points are seeded shard counts plus a seeded delay, so kills land during
start-up, mid-shard, between a shard's rename and its manifest update, and in every modality. No kill may rewrite
a shard a manifest already lists, and the result must equal an uninterrupted run byte for byte (batch size 1: a
resume changes no batch, so no feature can differ), with no temp file, no stale lock owner record, no duplicated
row and no surviving child process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from forked_cli import ForkedCli, exit_code

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import manifest_in, manifests_under

PARTS = [(m, s) for m in ("I", "T", "S") for s in ("train", "val", "test")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "120"}


def _command(root: Path, cache_root: Path, *extra: str, workers: int = 0) -> list[str]:
    return [
        sys.executable, "-m", "pcmpipe", "extract", "--dataset", "flickr8k", "--root", str(root),
        "--cache-root", str(cache_root), "--modalities", "I,T,S", "--device", "cpu",
        "--workers", str(workers), "--batch-size", "1", "--rows-per-shard", "2",
        "--image-backbone", "clip-tiny-image", "--text-backbone", "clip-tiny-text", "--audio-backbone", "hubert-tiny",
        "--weights-image", "random:0", "--weights-text", "random:0", "--weights-audio", "random:0", *extra,
    ]  # fmt: skip


def _listed_shards(cache_root: Path) -> dict[Path, tuple[int, str]]:
    """Every shard file a manifest lists -> (mtime_ns, sha256 of its bytes)."""
    out = {}
    for manifest in manifests_under(cache_root) if cache_root.is_dir() else []:
        for shard in json.loads(manifest.read_text())["shards"]:
            path = manifest.parent / shard["file"]
            out[path] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _complete(cache_root: Path, m: str, s: str) -> bool:
    try:
        open_cache(cache_dir(cache_root, "flickr8k", m, s), verify=False)
        return True
    except Exception:
        return False


def _shard_files(cache_root: Path) -> int:
    """Shard files renamed into place so far (listed or not)."""
    return sum(1 for _ in cache_root.rglob("part-*.parquet")) if cache_root.is_dir() else 0


def _children(pid: int) -> list[int]:
    """Every live descendant of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# what extraction imports on its way (tiny CLIP towers, HuBERT, decoding): a forked child starts warm
WARM = ("open_clip", "transformers", "pcmpipe.extract.runner", "pcmpipe.backbones.clip", "pcmpipe.backbones.hubert")


def _kill_at(cli: ForkedCli, argv: list[str], cache_root: Path, shards: int, delay: float) -> bool:
    """Start `pcmpipe argv`, SIGKILL it (the process alone) `delay` s after `shards` shard files exist; False if
    it finished first. Its decoding workers must die with it on their own."""
    [pid] = cli.start([argv])
    deadline = time.monotonic() + 300
    while _alive(pid) and _shard_files(cache_root) < shards and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    kids = _children(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # a kill after it ended (a zombie until the forker reaps it) changes nothing
    [code] = map(exit_code, cli.statuses())
    if code is not None:
        assert code == 0
        return False
    deadline = time.monotonic() + 5  # a decoding worker gets SIGKILL from the kernel when its parent dies
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [k for k in kids if _alive(k)] == [], "a child of the killed extract outlived it"
    return True


def _snapshot(cache_root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under the cache's dataset directory."""
    base = cache_root / "flickr8k"
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def flickr(synth_dataset) -> Path:
    return synth_dataset("flickr8k", images=6, seed=5)  # 4 train images, 20 captions, 20 spoken captions


@pytest.fixture(scope="module")
def reference(flickr, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("reference")
    done = subprocess.run(_command(flickr, cache), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return cache


@pytest.mark.slow  # 20 process start-ups: several CPU minutes, over the 60 s this sweep was meant to take
def test_sigkill_sweep_then_resume_is_byte_identical(flickr, reference, tmp_path):
    n = int(os.environ.get("PCMPIPE_FAULT_SWEEP_N", "20"))
    total = _shard_files(reference)  # train 2 + 10 + 10, val and test 1 + 3 + 3 each
    rng = random.Random(12)
    points = sorted((rng.randrange(total), rng.uniform(0.0, 0.3)) for _ in range(n))
    cache = tmp_path / "swept"
    landed, in_speech = [], False
    cli = ForkedCli(tmp_path, ENV, WARM)
    try:
        for i, (shards, delay) in enumerate(points):
            before = _listed_shards(cache)
            landed.append(_kill_at(cli, _command(flickr, cache, workers=i % 2)[3:], cache, shards, delay))
            after = _listed_shards(cache)
            assert {p: after[p] for p in before} == before, "a finished shard was rewritten"
            in_speech |= landed[-1] and any(p.parts[-3] == "S" for p in after)
    finally:
        cli.close()
    killed = sum(landed)
    assert killed >= min(n, 10), f"only {killed} of {n} kills landed before the run finished"
    assert in_speech, "no kill landed once speech shards were written"

    kept = _listed_shards(cache)
    begun = {p.parent for p in kept} - {cache_dir(cache, "flickr8k", m, s) for m, s in PARTS if _complete(cache, m, s)}
    # wide enough for the summary table's status column whatever the length of the cache path in its title
    done = subprocess.run(
        _command(flickr, cache), env={**ENV, "COLUMNS": "400"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert not begun or "resumed" in done.stdout  # a split left with some of its shards is resumed
    final = _listed_shards(cache)
    assert {p: final[p] for p in kept} == kept, "a finished shard was rewritten"
    want, got = _snapshot(reference), _snapshot(cache)
    assert got == want  # shards, manifests, .errors.jsonl and the (empty) lock files; no temp or owner file left
    for m, s in PARTS:
        cols, _ = open_cache(cache_dir(cache, "flickr8k", m, s)).read()
        assert len(set(cols["id"].tolist())) == len(cols["id"])


@pytest.mark.slow  # three extraction processes after the reference's: half a CPU minute
def test_two_extractions_into_one_new_cache(flickr, reference, tmp_path):
    cache = tmp_path / "shared"
    cmd = _command(flickr, cache)
    a = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    assert a.returncode == b.returncode == 0, outs
    assert "Traceback" not in "".join(o + e for o, e in outs)
    want, got = _snapshot(reference), _snapshot(cache)
    assert got == want  # complete, each shard once, byte for byte
    for m, s in PARTS:
        manifest = json.loads(manifest_in(cache_dir(cache, "flickr8k", m, s)).read_text())
        files = [sh["file"] for sh in manifest["shards"]]
        assert manifest["complete"] and len(files) == len(set(files))

    # a job that will not wait refuses in one line naming the lock; the cache is untouched
    from pcmpipe.cache.lock import exclusive

    split = cache_dir(cache, "flickr8k", "I", "train")
    with exclusive(split, "test holder", wait=False) as lock:
        refused = subprocess.run(
            _command(flickr, cache, "--lock-timeout", "0.2"), env=ENV, capture_output=True, text=True, timeout=600
        )
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(lock) in lines[0] and f"pid {os.getpid()}" in lines[0], refused.stderr
    assert _snapshot(cache) == got
