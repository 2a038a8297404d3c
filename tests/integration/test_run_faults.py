"""Run directories under concurrency and SIGKILL: the per-run lock (two real `pcmpipe train --name X` at once),
and fault sweeps that SIGKILL `train` and `run` at seeded random points, chaining kill -> resume -> kill, and
compare every finished run with an uninterrupted one.

The sweep's processes are forked from one prepared interpreter (tests/forked_cli.py): each is a real process
running the real CLI, killed with a real SIGKILL as a process group, but it does not pay torch's import again
(about 3 s of CPU, which would make 20 kills per command cost minutes). PCMPIPE_FAULT_SWEEP_N raises the kill
count.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from forked_cli import ForkedCli
from safetensors import safe_open
from synthetic_cache import write_synthetic_cache
from tiny_pipeline import tiny_pipeline

from pcmpipe.training import rundir as runs

KILLS = int(os.environ.get("PCMPIPE_FAULT_SWEEP_N", "20"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _train_args(cache: Path, name: str, epochs: int, runs_root: Path | None = None) -> list[str]:
    args = ["train", "--dataset", "synth", "--modalities", "I,T", "--cache-root", str(cache), "--name", name]
    args += ["--epochs", str(epochs), "--patience", str(epochs), "--batch-size", "16", "--lr", "1e-3"]
    args += ["--threads", "1", "--device", "cpu", "--set", "progress=false"]
    return args + (["--runs-root", str(runs_root)] if runs_root else [])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "cache"
    write_synthetic_cache(root, "synth", images={"train": 48, "val": 12, "test": 12})
    return root


@pytest.mark.slow  # two 40-epoch trainings started together
def test_two_trains_of_one_name_at_once_one_refuses_in_one_line(cache, tmp_path):
    """Started together: one trains to the end, the other refuses naming the run; it never resumes from the
    other's live checkpoint, and the one that trains never loses its temp directory."""
    runs_root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "pcmpipe", *_train_args(cache, "X", 40, runs_root)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(err for p, (_, err) in zip(procs, outs) if p.returncode == 2)
    lines = [ln for ln in refused.splitlines() if ln.strip()]
    assert len(lines) == 1 and "run X" in lines[0] and "in use" in lines[0], refused
    assert "Traceback" not in "".join(o + e for o, e in outs)
    history = runs.read_metrics(runs_root / "X")
    assert [r["epoch"] for r in history] == list(range(1, 41))  # trained once, no epoch twice
    assert not any(p.name.startswith(".tmp-") for p in runs_root.iterdir())


# ---------------------------------------------------------------- the fault sweep

# what the commands import on their way: a forked child then starts where a warm process would (the sample join
# uses pandas; fine-tuning builds a CLIP tower)
WARM = (
    "pcmpipe.cli.training_progress", "pcmpipe.cli.render", "pcmpipe.config", "pcmpipe.heads", "pcmpipe.samples",
    "pcmpipe.training.stage2", "pcmpipe.evaluation.retrieval", "pcmpipe.pipelines.run", "pcmpipe.pipelines.spec",
    "pandas", "open_clip", "pcmpipe.backbones.clip", "pcmpipe.training.finetune",
)  # fmt: skip


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "time" not in k} for r in history]


def _outcome(run_dir: Path) -> dict:
    """What a finished run must reproduce exactly: metrics rows, test metrics, heads and embeddings bytes."""
    test = runs.read_json(run_dir / runs.COMPLETE_MARKER)
    return {
        "history": _strip(runs.read_metrics(run_dir)),
        "test": test,
        # heads and embeddings, bit for bit (the bytes of the file are not: safetensors writes its metadata
        # map in hash order)
        "files": {
            str(p.relative_to(run_dir)): _tensors_and_metadata(p) for p in sorted(run_dir.rglob("*.safetensors"))
        },
        # config.json records argv and paths, and files.json the bytes of it and of metrics.jsonl (with timings)
        "extra": {
            p.name: runs.read_json(p)
            for p in sorted(run_dir.glob("*.json"))
            if p.name not in ("config.json", "files.json")
        },
    }


def _tensors_and_metadata(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).reshape(-1).view(torch.uint8).numpy().tobytes() for k in f.keys()}
    return meta, tensors


def _no_leftovers(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]
    assert not left, left


def _warm_span(forker: ForkedCli, argv: Callable[[Path], list[str]], tmp: Path, ref: str = "ref-runs") -> float:
    """Run `argv(runs root)` to the end twice, the second time into `tmp / ref` (the reference) -> the seconds of
    that second run. A fresh forker's first child pays the lazy imports and cold file reads (4 s against 0.7 s
    for a tiny train): kill points spread over it would mostly land after a warm run had ended, and the sweep
    would need six times the chains to land its kills."""
    assert forker.run([argv(tmp / "warm-up")]) == [0]
    t0 = time.monotonic()
    assert forker.run([argv(tmp / ref)]) == [0]
    return time.monotonic() - t0  # one warm uninterrupted run: the kill points spread over its length


def _sweep(forker: ForkedCli, argv: list[str], reference: dict[Path, dict], span: float, seed: str) -> int:
    """SIGKILL `argv` at seeded random points in [0, span) s, each time resuming the chain, until KILLS kills
    have landed on a live process; every chain that completes must give the runs of `reference` (run
    directory -> outcome) exactly, and is then removed so the next chain starts from nothing. -> chains."""
    rng = random.Random(seed)
    kills = chains = 0
    while True:
        last = kills >= KILLS  # the last chain runs to the end
        [code] = forker.run([argv], kill_after=None if last else rng.uniform(0, span))
        if code is None:
            kills += 1
            continue
        assert code == 0
        chains += 1
        for run_dir, want in reference.items():
            assert _outcome(run_dir) == want, run_dir
            _no_leftovers(run_dir.parent)
        if last:
            return chains
        for parent in {run_dir.parent for run_dir in reference}:  # a pipeline's runs share one runs root
            shutil.rmtree(parent)


@pytest.mark.slow  # a SIGKILL sweep: 20 kills and the chains they resume
def test_train_killed_anywhere_resumes_to_the_uninterrupted_run(cache, tmp_path):
    forker = ForkedCli(tmp_path, ENV, WARM)
    try:
        span = _warm_span(forker, lambda root: _train_args(cache, "ref", 4, root), tmp_path)
        reference = _outcome(tmp_path / "ref-runs" / "ref")
        assert len(reference["history"]) == 4
        swept = tmp_path / "runs"
        _sweep(forker, _train_args(cache, "ref", 4, swept), {swept / "ref": reference}, span, "train")
    finally:
        forker.close()


@pytest.mark.slow  # two runs and an evaluation per chain: over the CI budget at 20 kills
def test_run_killed_anywhere_resumes_to_the_uninterrupted_pipeline(cache, tmp_path):
    spec = tmp_path / "faults.yaml"
    evaluations = [{"kind": "enrichment", "run": "f-pcmr", "blocks": {"{}->I": ["T"]}}]
    spec.write_text(yaml.safe_dump(tiny_pipeline(cache, "faults", {"f-pcmc": "pcmc", "f-pcmr": "pcmr"}, evaluations)))
    forker = ForkedCli(tmp_path, ENV, WARM)

    def argv(runs_root: Path) -> list[str]:
        return ["run", str(spec), "--cache-root", str(cache), "--runs-root", str(runs_root)]

    try:
        span = _warm_span(forker, argv, tmp_path, "ref")
        swept = tmp_path / "runs"
        reference = {swept / n: _outcome(tmp_path / "ref" / n) for n in ("f-pcmc", "f-pcmr")}
        _sweep(forker, argv(swept), reference, span, "run")
    finally:
        forker.close()


@pytest.fixture(scope="module")
def cub(synth_dataset) -> Path:
    return synth_dataset("cub", images=2, seed=0)  # 150 train / 150 val / 100 test images


def _finetune_args(cub: Path, tmp: Path, runs_root: Path) -> list[str]:
    args = ["finetune", "--data-root", str(cub), "--modalities", "I,C", "--unfreeze", "image", "--name", "ft"]
    args += ["--batch-size", "50", "--epochs", "2", "--patience", "2", "--cache-root", str(tmp / "cache")]
    args += ["--image-backbone", "clip-tiny-image", "--weights-image", "random:0", "--workers", "0"]
    return args + ["--device", "cpu", "--runs-root", str(runs_root), "--set", "progress=false"]


@pytest.mark.slow  # a SIGKILL sweep: 20 kills and the chains they resume
def test_finetune_killed_anywhere_resumes_to_the_uninterrupted_run(cub, tmp_path):
    forker = ForkedCli(tmp_path, ENV, WARM)
    try:
        span = _warm_span(forker, lambda root: _finetune_args(cub, tmp_path, root), tmp_path)
        reference = _outcome(tmp_path / "ref-runs" / "ft")
        assert len(reference["history"]) == 2 and "image_backbone.safetensors" in reference["files"]
        swept = tmp_path / "runs"
        _sweep(forker, _finetune_args(cub, tmp_path, swept), {swept / "ft": reference}, span, "finetune")
    finally:
        forker.close()
