"""Resume: `pcmpipe extract` killed with SIGKILL at several points (a real subprocess and its decoding worker,
killed as a process group) and started again ends with exactly the rows of an uninterrupted run: no id lost,
none duplicated, and no finished shard rewritten."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may download

import numpy as np
import pytest
from extraction import extract

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import manifests_under
from pcmpipe.datasets.synthetic import synth

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}
PARTS = [(m, s) for m in ("I", "T", "S") for s in ("train", "val", "test")]
ROWS_PER_SHARD = 3


def _command(root: Path, cache_root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pcmpipe",
        "extract",
        "--dataset",
        "flickr8k",
        "--root",
        str(root),
        "--cache-root",
        str(cache_root),
        "--modalities",
        "I,T,S",
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--rows-per-shard",
        str(ROWS_PER_SHARD),
        "--image-backbone",
        "clip-tiny-image",
        "--text-backbone",
        "clip-tiny-text",
        "--audio-backbone",
        "hubert-tiny",
        "--weights-image",
        "random:0",
        "--weights-text",
        "random:0",
        "--weights-audio",
        "random:0",
    ]


def _finished_shards(cache_root: Path) -> dict[Path, tuple[int, str]]:
    """Every shard file listed in a manifest -> (mtime_ns, sha256 of its bytes)."""
    import json

    out = {}
    for manifest in manifests_under(cache_root):
        for shard in json.loads(manifest.read_text())["shards"]:
            path = manifest.parent / shard["file"]
            out[path] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _count_listed(cache_root: Path) -> int:
    """Shards listed in manifests so far (manifests are replaced atomically, so always parse)."""
    import json

    return sum(len(json.loads(m.read_text())["shards"]) for m in manifests_under(cache_root))


def _kill_when(cmd: list[str], cache_root: Path, shards: int, timeout: float = 240) -> None:
    """Start `cmd`, SIGKILL its whole process group once manifests under cache_root list `shards` shards."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"extraction finished (rc={proc.returncode}) before {shards} shards were written")
            if cache_root.is_dir() and _count_listed(cache_root) >= shards:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no {shards} shards within {timeout}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_equals_uninterrupted(tmp_path):
    root = tmp_path / "flickr8k"
    synth("flickr8k", root, images=6, seed=3)
    reference = tmp_path / "reference"
    extract(
        "flickr8k",
        root,
        backbones=TINY,
        weights=RANDOM,
        cache_root=reference,
        workers=1,
        batch_size=2,
        rows_per_shard=ROWS_PER_SHARD,
    )

    resumed = tmp_path / "resumed"
    cmd = _command(root, resumed)
    # kill before any shard (models loading / first batch), inside the image shards, then inside speech
    for shards in (0, 2, 16):
        before = _finished_shards(resumed) if resumed.exists() else {}
        _kill_when(cmd, resumed, shards)
        after = _finished_shards(resumed)
        assert {p: after[p] for p in before} == before, "a finished shard was rewritten"
    assert any(p.parts[-3] == "S" for p in _finished_shards(resumed)), "the last kill should land in speech"
    assert not all(open_cache_ok(resumed, m, s) for m, s in PARTS)

    kept = _finished_shards(resumed)
    done = subprocess.run(
        cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stdout
    final = _finished_shards(resumed)
    assert {p: final[p] for p in kept} == kept, "a finished shard was rewritten"

    for m, s in PARTS:
        want = open_cache(cache_dir(reference, "flickr8k", m, s))
        got = open_cache(cache_dir(resumed, "flickr8k", m, s))
        assert got.fingerprint == want.fingerprint
        (wc, wf), (gc, gf) = want.read(), got.read()
        assert len(set(gc["id"].tolist())) == len(gc["id"]) == len(wc["id"])  # none lost, none twice
        w_order, g_order = np.argsort(wc["id"]), np.argsort(gc["id"])
        assert gc["id"][g_order].tolist() == wc["id"][w_order].tolist()
        for c in want.links:
            assert gc[c][g_order].tolist() == wc[c][w_order].tolist()
        # same weights, same inputs; batch composition differs after a resume, hence float tolerance
        np.testing.assert_allclose(gf["features"][g_order], wf["features"][w_order], atol=1e-5, rtol=0)


def open_cache_ok(cache_root: Path, m: str, s: str) -> bool:
    try:
        open_cache(cache_dir(cache_root, "flickr8k", m, s), verify=False)
        return True
    except Exception:
        return False


def test_resume_in_process_skips_done_ids(tmp_path, monkeypatch):
    """A writer interrupted by an exception keeps its finished shards; the next run encodes only the rest."""
    root = tmp_path / "flickr8k"
    synth("flickr8k", root, images=6, seed=4)
    import pcmpipe.extract.sources as sources

    calls = {"n": 0}
    real = sources.encode

    def failing(backbone, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # what Ctrl-C does between two batches
        return real(backbone, batch)

    kw = dict(
        modalities=["T"],
        splits=["train"],
        backbones=TINY,
        weights=RANDOM,
        cache_root=tmp_path / "c",
        rows_per_shard=4,
        batch_size=2,
    )
    monkeypatch.setattr(sources, "encode", failing)
    with pytest.raises(KeyboardInterrupt):
        extract("flickr8k", root, **kw)
    monkeypatch.setattr(sources, "encode", real)
    directory = cache_dir(tmp_path / "c", "flickr8k", "T", "train")
    kept = _finished_shards(tmp_path / "c")
    assert sum(1 for _ in kept) >= 1
    summary = extract("flickr8k", root, **kw)
    part = summary.parts[0]
    assert part.status == "resumed" and part.rows == 20 and part.new_rows == 20 - 6  # 3 batches of 2 were kept
    assert {p: v for p, v in _finished_shards(tmp_path / "c").items() if p in kept} == kept
    assert len(set(open_cache(directory).read()[0]["id"].tolist())) == 20


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_single_process_cache(tmp_path):
    """`torchrun --nproc_per_node 2 -m pcmpipe extract`: each rank encodes its part into its own shards, rank 0
    merges; the result has the fingerprint, ids and features of a one-process run."""
    root = tmp_path / "flickr8k"
    synth("flickr8k", root, images=6, seed=5)
    single, multi = tmp_path / "single", tmp_path / "multi"
    extract(
        "flickr8k",
        root,
        backbones=TINY,
        weights=RANDOM,
        cache_root=single,
        workers=0,
        batch_size=2,
        rows_per_shard=ROWS_PER_SHARD,
    )
    cmd = _command(root, multi)
    cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pcmpipe"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("extract flickr8k") == 1  # only rank 0 prints the summary
    for m, s in PARTS:
        directory = cache_dir(multi, "flickr8k", m, s)
        assert {p.name[:8] for p in directory.glob("part-*")} <= {"part-r00"}  # rank-prefixed shards only
        want, got = open_cache(cache_dir(single, "flickr8k", m, s)), open_cache(directory)
        assert got.fingerprint == want.fingerprint
        (wc, wf), (gc, gf) = want.read(), got.read()
        w_order, g_order = np.argsort(wc["id"]), np.argsort(gc["id"])
        assert gc["id"][g_order].tolist() == wc["id"][w_order].tolist()
        np.testing.assert_allclose(gf["features"][g_order], wf["features"][w_order], atol=1e-5, rtol=0)
