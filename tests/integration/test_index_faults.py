"""`pcmpipe index` under concurrency, SIGKILL and a full disk: the index folder always holds one job's three
files (vectors, ids and metadata of the same build), never a mix, and a failed job leaves the old index.

Jobs are forked from one prepared interpreter (tests/forked_cli.py): each is a real
process running the real CLI, started together with another or SIGKILLed as a process group, without paying
torch's import each time. Two embeddings caches A and B of equal size but different ids and vectors make a mix
visible: ids of one with vectors of the other open without error and answer wrongly, which `_consistent` tells
by searching every stored vector for itself. PCMPIPE_FAULT_SWEEP_N sets the number of kills.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from forked_cli import ForkedCli

from pcmpipe.cache import ShardWriter
from pcmpipe.index import open_index

pytestmark = pytest.mark.slow
KILLS = int(os.environ.get("PCMPIPE_FAULT_SWEEP_N", "20"))
RACES = 12  # the old shared temp name mixed the two jobs' files in about half of such races
ROWS, DIM = 8_000, 64  # 2 MB of vectors: a write that takes long enough to be caught in the middle
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}

# what the command imports on its way: a forked child then starts where a warm process would
WARM = ("faiss", "pyarrow.parquet", "pcmpipe.cache", "pcmpipe.index.store", "pcmpipe.index.folder",
        "pcmpipe.runs.gallery", "pcmpipe.cli.quiet")  # fmt: skip


def _embeddings(out: Path, prefix: str, seed: int) -> np.ndarray:
    """An embeddings cache as `pcmpipe embed` writes it (named run and modality) -> its normalised vectors."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    meta = {"run": "r", "run_fingerprint": "f" * 64, "modality": "I", "normalised": True}
    with ShardWriter(out, features={"embedding": ((DIM,), "float32")}, key="id", links=[], meta=meta) as w:
        w.add([f"{prefix}{i}" for i in range(ROWS)], {}, {"embedding": emb})
    return emb


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("index-faults")
    return {"root": root, "A": _embeddings(root / "A", "a", 0), "B": _embeddings(root / "B", "b", 1)}


def _consistent(folder: Path, sources: dict) -> str:
    """Which source the index folder holds ("A" or "B"), asserting that its ids, vectors and metadata all
    come from that one build: every id of one source, in order, and every vector found as its own row."""
    index = open_index(folder)
    which = "A" if index.ids[0] == "a0" else "B"
    assert list(index.ids) == [f"{which.lower()}{i}" for i in range(ROWS)]
    assert index.meta["source"].endswith(which)
    sample = np.random.default_rng(len(index.ids)).choice(ROWS, 200, replace=False)
    found, _ = index.search(sources[which][sample], 1)
    assert (found[:, 0] == index.ids[sample]).all(), f"vectors of another build beside the ids of {which}"
    return which


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_two_index_jobs_into_one_folder_leave_one_jobs_index(sources, tmp_path):
    """Both jobs succeed; the folder holds the index of the job that swapped last, whole. One job starts a
    seeded random fraction of a job's length after the other, so their writes overlap differently each race."""
    forker = ForkedCli(tmp_path, ENV, WARM)
    out = tmp_path / "g.index"
    jobs = [["index", str(sources["root"] / s), "--out", str(out)] for s in ("A", "B")]
    rng = random.Random("race")
    won = set()
    try:
        assert forker.run(jobs[:1]) == [0]  # the forker is up
        t0 = time.monotonic()
        assert forker.run(jobs[:1]) == [0]
        span = time.monotonic() - t0
        for race in range(RACES):
            delays = [0.0, rng.uniform(0, span)][:: 1 if race % 2 else -1]
            assert forker.run(jobs, delays=delays) == [0, 0]
            won.add(_consistent(out, sources))
            assert _leftovers(tmp_path) == []
    finally:
        forker.close()
    assert won  # which one wins each race is the scheduler's choice


def test_an_index_job_killed_anywhere_leaves_a_whole_index(sources, tmp_path):
    """SIGKILL `index` at seeded random points while it replaces the folder's index by the other source's:
    the folder opens as A or as B, whole, after every kill; the next job clears what the killed one left."""
    forker = ForkedCli(tmp_path, ENV, WARM)
    out = tmp_path / "g.index"
    rng = random.Random("index")
    try:
        assert forker.run([["index", str(sources["root"] / "B"), "--out", str(out)]]) == [0]  # the forker is up
        t0 = time.monotonic()
        assert forker.run([["index", str(sources["root"] / "A"), "--out", str(out)]]) == [0]
        span = time.monotonic() - t0  # one uninterrupted job: the kill points spread over its length
        held, kills = "A", 0
        while kills < KILLS:
            other = "B" if held == "A" else "A"
            [code] = forker.run([["index", str(sources["root"] / other), "--out", str(out)]], rng.uniform(0, span))
            kills += code is None
            if out.exists():
                held = _consistent(out, sources)
                assert held == other or code is None
            else:  # killed between setting the old folder aside and renaming the new one in
                assert code is None and any(".old-" in n for n in _leftovers(tmp_path))
        assert forker.run([["index", str(sources["root"] / "B"), "--out", str(out)]]) == [0]
        assert _consistent(out, sources) == "B" and _leftovers(tmp_path) == []
    finally:
        forker.close()


def test_a_full_disk_under_index_is_one_line_and_keeps_the_old_index(sources, tmp_path):
    """A real write failure: RLIMIT_FSIZE caps file size below index.faiss (Python ignores SIGXFSZ, so FAISS's
    fwrite fails with EFBIG, which FAISS raises as a RuntimeError)."""
    out = tmp_path / "g.index"
    cmd = [sys.executable, "-m", "pcmpipe", "index", str(sources["root"] / "A"), "--out", str(out)]
    assert subprocess.run(cmd, env=ENV, capture_output=True, timeout=300).returncode == 0
    limit = ROWS * DIM * 2  # half of the vectors

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd[4] = str(sources["root"] / "B")
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, preexec_fn=cap, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {out / 'index.faiss'}: file too large for this system's limits"), lines
    assert "(EFBIG)" in lines[0] and "MB free there" in lines[0]
    assert _consistent(out, sources) == "A" and _leftovers(tmp_path) == []
