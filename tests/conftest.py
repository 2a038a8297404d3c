"""Fixtures shared across the test folders (tests/ mirrors the package; see docs/design.md and DEVELOPING.md).

Data that several modules need is built once per pytest session here and shared: synthetic datasets
(`synth_dataset`), planted feature caches (`planted_cache`) and one small trained run (`trained`). Shared data
is read, never written: a test that damages inputs copies them to its tmp_path first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): one worker per CPU this process may use, its affinity capped by a cgroup CPU
    quota. xdist's own count is the physical cores when psutil is installed (half the CPUs on an SMT machine) and
    ignores a container's quota (a 2-CPU quota on a 16-CPU host would start 16 workers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, quota) if quota else cpus)


def _cgroup_cpu_quota() -> int | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, v1 cfs_quota/period), rounded up; None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    return math.ceil(int(quota) / int(period))


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test: the models here are tiny, so thread hand-off dominates on a busy
    2-core machine; subprocesses get OMP_NUM_THREADS=1 from their tests instead."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`synth_dataset(kind, images, seed)` -> the folder of `pcmpipe synth <kind>` with those arguments, written
    the first time it is asked for in the session and shared after that (read-only)."""
    made: dict[tuple[str, int, int], Path] = {}

    def get(kind: str, images: int, seed: int = 0) -> Path:
        if (kind, images, seed) not in made:
            from pcmpipe.datasets.synthetic import synth

            root = tmp_path_factory.mktemp(f"{kind}-{images}-{seed}")
            synth(kind, root, images=images, seed=seed)
            made[kind, images, seed] = root
        return made[kind, images, seed]

    return get


@pytest.fixture(scope="session")
def planted_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`planted_cache(**kw)` -> a cache root holding `write_synthetic_cache(root, **kw)` (dataset "synth" unless
    kw says otherwise), written once per session for each kw and shared after that (read-only; a run trained
    on it goes to a runs root of the test's own)."""
    made: dict[str, Path] = {}

    def get(**kw) -> Path:
        key = repr(sorted(kw.items()))
        if key not in made:
            from synthetic_cache import write_synthetic_cache

            root = tmp_path_factory.mktemp("planted")
            write_synthetic_cache(root, **kw)
            made[key] = root
        return made[key]

    return get


@pytest.fixture(scope="session")
def make_run() -> Callable[..., Path]:
    """`extract_and_train` (tests/trained_run.py), for the tests that need a run of other modalities or backbones."""
    from trained_run import extract_and_train

    return extract_and_train


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"data", "cache", "run"}: the Flickr8k layout, its I/T caches and a finished two-epoch run on them, built
    once per session. Tests may add runs and caches beside them under names of their own (`make_run`); none
    changes what is there (a test that damages the run copies it first)."""
    from trained_run import TINY, extract_and_train

    from pcmpipe.datasets.synthetic import synth

    root = tmp_path_factory.mktemp("use")
    data, cache = root / "flickr8k", root / "cache"
    synth("flickr8k", data, images=12, seed=3)  # 8 / 2 / 2 images, 5 captions each
    run = extract_and_train(data, cache, ["I", "T"], TINY, epochs=2, name="walk")
    return {"data": data, "cache": cache, "run": run}
