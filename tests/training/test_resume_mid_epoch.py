"""Stage two killed with a real SIGKILL within an epoch, then resumed, ends bit for bit where an uninterrupted
run ends: the same metrics.jsonl (less timings), test metrics, heads and test embeddings. In memory (one
seeded permutation per epoch) and streamed (a seeded order of shards and windows), PCMC and PCMR. (Kills at
epoch ends and at any other point: the fault sweep of tests/integration/test_run_faults.py.)

The moment of the kill: the run checkpoints every few steps (`checkpoint_every`) and is killed at its first
checkpoint inside an epoch after the first (tests/mid_epoch_kill.py says how).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mid_epoch_kill import kill_within_an_epoch, outcome, run_train, train_command
from synthetic_cache import write_synthetic_cache

from pcmpipe.config import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.training import rundir as runs
from pcmpipe.training.state import CHECKPOINT, EpochProgress

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


@pytest.mark.slow  # a reference run, a run SIGKILLed within an epoch and its resume, each a real process
@pytest.mark.parametrize(("mode", "loss"), [("memory", "pcmc"), ("streamed", "pcmr")])
def test_sigkill_within_an_epoch_resumes_to_the_uninterrupted_run(cache, tmp_path, mode, loss):
    from pcmpipe.training.stage2 import train

    extra = {"loss": loss, **(STREAMED if mode == "streamed" else {})}
    reference = train(TrainConfig.from_dict(settings(cache, tmp_path / "ref", **extra)))  # no mid-epoch saves

    runs_root = tmp_path / "runs"
    cmd = train_command(settings(cache, runs_root, checkpoint_every=2, **extra), tmp_path)
    tmp = runs.temp_dir(runs_root, "r")
    ckpt = kill_within_an_epoch(cmd, tmp, tmp_path / "killed.log", ENV)
    assert not (runs_root / "r").exists() and (tmp / CHECKPOINT).exists()  # no finished run yet, its checkpoint kept
    progress = ckpt.progress
    assert progress is not None and ckpt.meta["format"] == "pcmpipe-checkpoint/2"
    assert 0 < progress.steps_done < 15 and progress.steps_done % 2 == 0 and len(progress.losses) == progress.steps_done
    assert len(ckpt.meta["state"]["history"]) == ckpt.epoch  # the finished epochs' records ride along

    done = run_train(cmd, ENV)
    note = f"resuming r in epoch {ckpt.epoch + 1} after step {progress.steps_done}/15"
    assert note in done.stdout, done.stdout
    run = runs_root / "r"
    assert outcome(run) == outcome(reference) and len(outcome(run)["history"]) == SETTINGS["epochs"]
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


def test_a_partial_epoch_without_its_losses_is_one_line_not_a_wrong_resume(cache, tmp_path, monkeypatch):
    """A mid-epoch checkpoint whose partial-epoch tensors are gone (rewritten by another tool, checksum and all)
    is refused naming the file; it is never resumed as if its epoch had ended."""
    import json

    from safetensors.torch import save_file

    from pcmpipe.backbones.weights import state_sha256
    from pcmpipe.training import stage2
    from pcmpipe.training.state import CHECKPOINT, load_checkpoint, save_checkpoint

    def save_then_stop(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt  # right after the first mid-epoch checkpoint

    cfg = TrainConfig.from_dict(settings(cache, tmp_path, epochs=1, checkpoint_every=5))
    with monkeypatch.context() as m:
        m.setattr("pcmpipe.training.stage2_epochs.save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            stage2.train(cfg)
    tmp = runs.temp_dir(tmp_path, "r")
    ckpt = load_checkpoint(tmp)
    assert ckpt is not None and ckpt.progress is not None and ckpt.progress.steps_done == 5
    kept = {k: v for k, v in ckpt.tensors.items() if not k.startswith("progress.")}
    save_file(kept, str(tmp / CHECKPOINT), metadata={"pcmpipe": json.dumps(ckpt.meta), "sha256": state_sha256(kept)})
    with pytest.raises(UserError, match=f"checkpoint {tmp / CHECKPOINT} is unreadable"):
        stage2.train(cfg)
