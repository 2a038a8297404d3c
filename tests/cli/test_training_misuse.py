"""`train` and `finetune` refuse, before any work, settings that would size memory, processes or output past what
this machine or the run's files can hold; and a dataset with no cache yet says how to make one."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app

ENV = {"COLUMNS": "400"}


def _refused(args: list[str]) -> str:
    res = CliRunner().invoke(app, args, env=ENV)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--batch-size", "100000000"], "--batch-size: the loss's batch x batch matrices (1 modality pair) would take"),
        (["--epochs", "1000000"], "--epochs must be between 1 and 10000 (metrics.jsonl and the checkpoint keep"),
        (["--set", "eval_batch=1000000000"], "--eval-batch: one embedding pass over that many rows would take"),
        (["--set", "shuffle_buffer=1000000000000"], "--shuffle-buffer: the shuffle window would take"),
        (["--set", "memory_budget_mb=1e12"], "--memory-budget-mb must be at most"),
        (["--set", "stream_val_mb=1e12"], "--stream-val-mb must be at most"),
        (["--set", "num_workers=100000"], "--num-workers must be between 0 and"),
    ],
    ids=["batch", "epochs", "eval_batch", "shuffle_buffer", "memory_budget", "stream_val", "workers"],
)
def test_train_refuses_sizes_past_the_machine_before_any_work(tmp_path, extra, fragment):
    runs_root = tmp_path / "runs"
    args = ["train", "--dataset", "synth", "--modalities", "I,T", "--cache-root", str(tmp_path / "cache")]
    line = _refused([*args, "--runs-root", str(runs_root), *extra])
    assert fragment in line, line
    assert "machine" in line or "record per epoch" in line  # where the limit comes from
    assert not runs_root.exists()  # refused before the run was claimed


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--workers", "100000"], "--workers must be between 0 and"),
        (["--set", "encode_batch=10000000"], "--encode-batch: one tower pass over that many rows would take"),
    ],
    ids=["workers", "encode_batch"],
)
def test_finetune_refuses_sizes_past_the_machine_before_any_work(tmp_path, extra, fragment):
    line = _refused(["finetune", "--root", str(tmp_path / "nowhere"), "--runs-root", str(tmp_path / "r"), *extra])
    assert fragment in line and "machine" in line, line
    assert not (tmp_path / "r").exists()


def test_a_dataset_not_cached_yet_says_how_to_make_its_cache(tmp_path):
    cache = tmp_path / "cache"
    (cache / "flowers" / "I").mkdir(parents=True)
    (cache / "birds").mkdir()
    line = _refused(["train", "--dataset", "pets", "--modalities", "I,T", "--cache-root", str(cache)])
    assert f"no cache of dataset 'pets' under {cache}/ (cached there: birds, flowers)" in line, line
    assert "pcmpipe extract --dataset pets" in line and "pcmpipe import-features" in line
    assert "valid choices" not in line
    empty = _refused(["train", "--dataset", "pets", "--modalities", "I,T", "--cache-root", str(tmp_path / "none")])
    assert "(cached there: none)" in empty


def test_the_machine_sized_bound_follows_the_modalities():
    """The batch-size bound counts the loss's pairs of modalities: a batch that fits two may not fit six."""
    from pcmpipe import limits
    from pcmpipe.config import TrainConfig
    from pcmpipe.config.bounds import LOSS_BYTES_PER_ENTRY
    from pcmpipe.errors import UserError

    budget = limits.memory_bytes() / 2
    batch = int((budget / LOSS_BYTES_PER_ENTRY / 2) ** 0.5)  # fits 1 pair, not 15
    TrainConfig.from_dict({"dataset": "x", "modalities": "I,T", "batch_size": batch})
    with pytest.raises(UserError, match=r"\(15 modality pairs\)"):
        TrainConfig.from_dict({"dataset": "x", "modalities": "A,B,C,D,E,F", "batch_size": batch})
