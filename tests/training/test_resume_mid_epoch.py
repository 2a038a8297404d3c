"""Stage two killed with a real SIGKILL within an epoch, then resumed, ends bit for bit where an uninterrupted
run ends: the same metrics.jsonl (less timings), test metrics, heads and test embeddings. In memory (one
seeded permutation per epoch) and streamed (a seeded order of shards and windows), PCMC and PCMR.

How the moment is picked: the run checkpoints every few steps (`checkpoint_every`); the test watches the
checkpoint file, and each time it changes stops the process (SIGSTOP), reads it, and SIGKILLs the process at
the first checkpoint written inside an epoch after the first. The kill lands a step or so after that
checkpoint, sometimes while the next one is being written, so the resume redoes steps and drops a stray file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from synthetic_cache import write_synthetic_cache

from pcmpipe.config import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.training import rundir as runs
from pcmpipe.training.state import CHECKPOINT, Checkpoint, EpochProgress, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(var, None)  # a reference run must not think it is a rank

SETTINGS = {
    "dataset": "synth",
    "modalities": ["I", "T", "S"],
    "epochs": 3,
    "patience": 3,
    "batch_size": 32,  # 480 captions: 15 steps an epoch
    "lr": 2e-3,
    "dim": 32,
    "threads": 1,
    "progress": False,
    "device": "cpu",
}
STREAMED = {"stream": True, "memory_budget_mb": 1e-4, "shuffle_buffer": 64}  # windows of 4 shards


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume_cache")
    # 16-row shards: a streamed epoch spans many windows, and a resume skips whole ones without reading them
    write_synthetic_cache(root, drop_speech=0.3, rows_per_shard=16)
    return root


def settings(cache: Path, runs_root: Path, **kw) -> dict:
    return {**SETTINGS, "cache_root": str(cache), "runs_root": str(runs_root), "name": "r", **kw}


def train_command(config: dict, where: Path, launcher: list[str] | None = None) -> list[str]:
    """`pcmpipe train --config <yaml of config>`, optionally under a launcher (torchrun's arguments)."""
    path = where / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, *(launcher or []), "-m", "pcmpipe", "train", "--config", str(path)]


def process_tree(pid: int) -> list[int]:
    """pid and its live descendants (torchrun starts its ranks in sessions of their own: a process-group kill
    would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while listed
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def signal_tree(tree: list[int], sig: signal.Signals) -> None:
    for p in tree:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def kill_within_an_epoch(cmd: list[str], tmp: Path, log: Path, timeout: float = 300) -> Checkpoint:
    """Run `cmd`; SIGKILL it (and every process it started) at its first checkpoint inside epoch 2 or later
    (module docstring) -> that checkpoint, the one the resume starts from."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    seen = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc={proc.returncode}) before a mid-epoch checkpoint:\n{log.read_text()}")
            try:
                stat = (tmp / CHECKPOINT).stat()
            except FileNotFoundError:
                time.sleep(0.002)
                continue
            if (stat.st_ino, stat.st_mtime_ns) != seen:  # written atomically: a new file each time
                tree = process_tree(proc.pid)
                signal_tree(tree, signal.SIGSTOP)
                ckpt = load_checkpoint(tmp)
                assert ckpt is not None
                if ckpt.progress is not None and ckpt.epoch >= 1:
                    signal_tree(tree, signal.SIGKILL)
                    proc.wait()
                    return ckpt
                seen = (stat.st_ino, stat.st_mtime_ns)
                signal_tree(tree, signal.SIGCONT)
            time.sleep(0.002)
        pytest.fail(f"no mid-epoch checkpoint within {timeout}s")
    finally:
        if proc.poll() is None:
            signal_tree(process_tree(proc.pid), signal.SIGKILL)
            proc.wait()


def tensors(path: Path) -> dict[str, bytes]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).reshape(-1).view(torch.uint8).numpy().tobytes() for k in f.keys()}


def outcome(run: Path) -> dict:
    """What an interrupted run must reproduce exactly (timings and config.json's argv aside)."""
    history = [{k: v for k, v in r.items() if "time" not in k} for r in runs.read_metrics(run)]
    results = {p.name: runs.read_json(p) for p in sorted(run.glob("*.json")) if p.name != "config.json"}
    return {"history": history, **results, **{str(p.relative_to(run)): tensors(p) for p in run.rglob("*.safetensors")}}


@pytest.mark.parametrize(("mode", "loss"), [("memory", "pcmc"), ("streamed", "pcmr")])
def test_sigkill_within_an_epoch_resumes_to_the_uninterrupted_run(cache, tmp_path, mode, loss):
    from pcmpipe.training.stage2 import train

    extra = {"loss": loss, **(STREAMED if mode == "streamed" else {})}
    reference = train(TrainConfig.from_dict(settings(cache, tmp_path / "ref", **extra)))  # no mid-epoch saves

    runs_root = tmp_path / "runs"
    cmd = train_command(settings(cache, runs_root, checkpoint_every=2, **extra), tmp_path)
    ckpt = kill_within_an_epoch(cmd, runs.temp_dir(runs_root, "r"), tmp_path / "killed.log")
    progress = ckpt.progress
    assert progress is not None and ckpt.meta["format"] == "pcmpipe-checkpoint/2"
    assert 0 < progress.steps_done < 15 and progress.steps_done % 2 == 0 and len(progress.losses) == progress.steps_done
    assert len(ckpt.meta["state"]["history"]) == ckpt.epoch  # the finished epochs' records ride along

    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    note = f"resuming r in epoch {ckpt.epoch + 1} after step {progress.steps_done}/15"
    assert note in done.stdout, done.stdout
    run = runs_root / "r"
    assert outcome(run) == outcome(reference)
    assert runs.run_config(run)["config"]["stream"] is (True if mode == "streamed" else None)
    assert not list(runs_root.rglob(".*.tmp")) and not list(runs_root.glob(".tmp-*"))


def test_a_streamed_epoch_resumes_only_on_the_processes_that_began_it(cache, tmp_path):
    """Streamed, each rank reads its own shards: the rest of an epoch begun on 2 processes is not 1's."""
    from pcmpipe.training.stage2 import _partial_epoch

    cfg = TrainConfig.from_dict(settings(cache, tmp_path, **STREAMED))
    begun = EpochProgress(4, torch.zeros(4), torch.Generator().get_state(), world=2)
    with pytest.raises(UserError, match="on 2 process.*--nproc_per_node 2"):
        _partial_epoch(cfg, begun, 15, tmp_path)
    in_memory = TrainConfig.from_dict(settings(cache, tmp_path))
    assert _partial_epoch(in_memory, begun, 15, tmp_path) is begun  # one global order: any world continues it
    with pytest.raises(UserError, match="does not fit"):
        _partial_epoch(in_memory, begun, 4, tmp_path)  # the epoch no longer has that many steps
