"""`pcmpipe train` under real torchrun (2 CPU processes, gloo) equals the same config on one process.

The config's batch size is the global batch: 2 ranks x 40 rows must follow 1 process x 80 rows step for step,
so the per-epoch losses, the validation scores (hence early stopping) and the final test metrics agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthetic_cache import write_synthetic_cache

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(var, None)  # the single-process reference must not think it is a rank


@pytest.fixture(scope="module")
def cache(planted_cache) -> Path:
    return planted_cache(drop_speech=0.3)  # missing speech: the gathered presence masks matter


def _settings(loss: str) -> dict:
    return {
        "dataset": "synth",
        "modalities": ["I", "T", "S"],
        "loss": loss,
        "batch_size": 80,
        "epochs": 3,
        "patience": 3,
        "lr": 2e-3,
        "dim": 64,
        "threads": 1,
        "progress": False,
        "device": "cpu",
    }


def _train(cache: Path, runs_root: Path, loss: str, nproc: int) -> subprocess.CompletedProcess:
    cfg = runs_root.parent / f"{loss}.yaml"
    cfg.write_text(yaml.safe_dump(_settings(loss)))
    args = ["train", "--config", str(cfg), "--cache-root", str(cache), "--runs-root", str(runs_root), "--name", loss]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    proc = subprocess.run(
        [sys.executable, *launcher, "-m", "pcmpipe", *args], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _shards(cache: Path, modality: str) -> list[dict]:
    from pcmpipe.cache import cache_dir, open_cache

    return open_cache(cache_dir(cache, "synth", modality, "train")).manifest["shards"]


def _epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _interrupt_after_first_epoch(cache: Path, runs_root: Path, loss: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Train one process in this interpreter and stop it right after the epoch-1 checkpoint (deterministic)."""
    from pcmpipe.config import TrainConfig
    from pcmpipe.training import rundir as runs
    from pcmpipe.training.stage2 import train
    from pcmpipe.training.state import load_checkpoint

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    cfg = TrainConfig.from_dict(
        {**_settings(loss), "cache_root": str(cache), "runs_root": str(runs_root), "name": loss}
    )
    with monkeypatch.context() as m:
        m.setattr("pcmpipe.training.state.write_metrics", interrupted)  # called right after each epoch's checkpoint
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    tmp = runs.temp_dir(runs_root, loss)
    assert load_checkpoint(tmp).epoch == 1
    return tmp


@pytest.mark.slow  # 2-4 launches (1-3 torchrun): about 25-50 s on 2 shared cores
@pytest.mark.parametrize("loss", ["pcmc", "pcmr"])
def test_two_ranks_follow_one_process(cache: Path, tmp_path: Path, loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _train(cache, tmp_path / "one", loss, 1)
    two = _train(cache, tmp_path / "two", loss, 2)
    assert two.stdout.count("epoch 1/3 loss") == 1  # only rank 0 reports
    run1, run2 = tmp_path / "one" / loss, tmp_path / "two" / loss
    assert sorted(p.name for p in run2.iterdir()) == sorted(p.name for p in run1.iterdir())
    assert not list((tmp_path / "two").glob(".tmp-*"))  # renamed once, nothing left behind

    e1, e2 = _epochs(run1), _epochs(run2)
    assert [e["epoch"] for e in e2] == [e["epoch"] for e in e1] == [1, 2, 3]
    for a, b in zip(e1, e2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a["epoch"], a["loss"], b["loss"])
        assert b["logit_scale"] == pytest.approx(a["logit_scale"], rel=1e-4)
        assert b["lr"] == a["lr"]
        assert b["val"] == a["val"] and b["best"] == a["best"]
    assert e1[-1]["loss"] < e1[0]["loss"]  # it trained: a frozen run would match trivially

    cfg1, cfg2 = (json.loads((r / "config.json").read_text()) for r in (run1, run2))
    assert cfg1["fingerprint"] == cfg2["fingerprint"]  # the same experiment, not only the same numbers
    t1, t2 = (json.loads((r / "test_metrics.json").read_text()) for r in (run1, run2))
    assert t2 == t1
    print(f"{loss}: losses 1 proc {[e['loss'] for e in e1]} / 2 ranks {[e['loss'] for e in e2]}; test metrics equal")
    if loss == "pcmr":  # resuming does not depend on the loss; one check keeps the suite short
        return
    # A run interrupted after epoch 1 on one process resumes on 2 ranks and still ends where one process does.
    _interrupt_after_first_epoch(cache, tmp_path / "resume", loss, monkeypatch)
    resumed = _train(cache, tmp_path / "resume", loss, 2)
    assert "resuming" in resumed.stdout
    run3 = tmp_path / "resume" / loss
    e3 = _epochs(run3)
    assert [e["epoch"] for e in e3] == [1, 2, 3]
    for a, b in zip(e1, e3):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["val"] == a["val"]
    assert json.loads((run3 / "test_metrics.json").read_text()) == t1
    again = _train(cache, tmp_path / "resume", loss, 2)  # complete: every rank returns, none waits forever
    assert "already complete" in again.stdout


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist_stream_cache")
    # 40-row shards: a rank's slice of the global batch of 80 is one shard (see the test below)
    write_synthetic_cache(root, drop_speech=0.3, rows_per_shard=40)
    return root


@pytest.mark.slow  # 2 torchrun launches and an in-process reference: about 30 s on 2 shared cores
def test_streamed_two_ranks_read_their_own_shards_and_resume_within_an_epoch(small_shards: Path, tmp_path: Path):
    """Streamed on 2 ranks, without shuffling, killed by SIGKILL within epoch 2 and resumed on 2 ranks.

    What holds exactly: rank r reads base shards r, r + 2, ... in cache order, and with 40-row shards its slice
    of global batch s is shard 2 s + r, so the global batches are those of in-memory training without shuffling
    (rows 80 s .. 80 s + 79). The run therefore follows one in-memory process as 2 in-memory ranks do (same
    validation scores and test metrics; losses within the float rounding of 2-rank gradient averaging)."""
    from mid_epoch_kill import kill_within_an_epoch, run_train, train_command

    from pcmpipe.config import TrainConfig
    from pcmpipe.training import rundir as runs
    from pcmpipe.training.stage2 import train

    common = {**_settings("pcmc"), "cache_root": str(small_shards), "name": "s", "shuffle": False}
    reference = train(TrainConfig.from_dict({**common, "runs_root": str(tmp_path / "one")}))  # 1 process, in memory

    runs_root = tmp_path / "two"
    streamed = {**common, "runs_root": str(runs_root), "stream": True, "memory_budget_mb": 1e-4, "checkpoint_every": 2}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = train_command(streamed, tmp_path, launcher)
    ckpt = kill_within_an_epoch(cmd, runs.temp_dir(runs_root, "s"), tmp_path / "killed.log", ENV)
    assert ckpt.progress is not None and ckpt.progress.world == 2 and ckpt.progress.steps_done in (2, 4)
    done = run_train(cmd, ENV)
    assert f"resuming s in epoch {ckpt.epoch + 1} after step {ckpt.progress.steps_done}/6" in done.stdout

    run = runs_root / "s"
    record = runs.run_config(run)
    assert record["config"]["stream"] is True
    # each rank read its own base shards: disjoint, together every shard of the split
    base = {f"{m}/{Path(s['file']).name}" for m in ("T", "S") for s in _shards(small_shards, m)}
    mine = [set(r) for r in record["stream_shards"]]
    assert len(mine) == 2 and not mine[0] & mine[1] and mine[0] | mine[1] == base
    assert [sum(f.startswith("T/") for f in r) for r in mine] == [6, 6]  # 12 caption shards, 6 a rank

    e1, e2 = _epochs(reference), _epochs(run)
    assert [e["epoch"] for e in e2] == [1, 2, 3]
    for a, b in zip(e1, e2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a["epoch"], a["loss"], b["loss"])
        assert b["lr"] == a["lr"] and b["val"] == a["val"] and b["best"] == a["best"]
    assert e1[-1]["loss"] < e1[0]["loss"]
    assert runs.read_json(run / "test_metrics.json") == runs.read_json(reference / "test_metrics.json")
    assert not list(runs_root.glob(".tmp-*"))
