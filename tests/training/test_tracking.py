"""--log-to: the recipes' events reach TensorBoard (event files read back), W&B and MLflow (offline / file store,
only where installed); a sink whose package is missing is one line naming the pip install."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.config import TrainConfig, config_fingerprint
from pcmpipe.errors import UserError
from pcmpipe.training.stage2 import train
from pcmpipe.training.tracking import check_installed, mlflow_store_uri, tracking_dir
from tests.synthetic_cache import write_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_synthetic_cache(root)
    return root


def _cfg(cache, tmp_path, **kw):
    base = dict(
        dataset="synth", modalities="I,T", cache_root=str(cache), runs_root=str(tmp_path / "runs"), epochs=3,
        patience=3, batch_size=32, lr=2e-3, dim=32, progress=True, name="tracked",
    )  # fmt: skip
    return TrainConfig.from_dict({**base, **kw})


def test_log_to_is_not_fingerprinted_and_is_checked(cache, tmp_path):
    cfg = _cfg(cache, tmp_path, log_to="tensorboard")
    assert cfg.log_to == ["tensorboard"]
    assert config_fingerprint(cfg) == config_fingerprint(_cfg(cache, tmp_path))
    with pytest.raises(UserError, match="log_to"):
        _cfg(cache, tmp_path, log_to="tensorbored")


def test_tensorboard_event_files_hold_the_epochs(cache, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(_cfg(cache, tmp_path, log_to="tensorboard"))
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # still written
    acc = EventAccumulator(str(tracking_dir(tmp_path / "runs", "tracked", "tensorboard")))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"epoch/loss", "epoch/val_mean_r1", "epoch/lr", "train/loss", "test/mean_r1"} <= set(tags)
    losses = acc.Scalars("epoch/loss")
    assert [e.step for e in losses] == [h["epoch"] for h in history]
    assert [e.value for e in losses] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    assert acc.Scalars("test/mean_r1")[0].value > 0


def test_a_missing_sink_is_one_line_naming_the_install(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # Python's own "not importable" marker: find_spec gives None
    with pytest.raises(UserError, match="pip install wandb"):
        check_installed(["wandb"])
    args = ["train", "--dataset", "synth", "--modalities", "I,T", "--cache-root", str(cache), "--epochs", "1"]
    r = CliRunner().invoke(app, [*args, "--runs-root", str(tmp_path / "runs"), "--log-to", "tensorboard,wandb"])
    assert r.exit_code == 2 and "pip install wandb" in r.output and "Traceback" not in r.output
    runs = tmp_path / "runs"  # nothing was trained: at most the run's hidden lock file is there
    assert not runs.exists() or not any(not p.name.startswith(".") for p in runs.iterdir())


@pytest.mark.slow  # a training logged to an offline wandb run: wandb alone takes seconds
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed (pip install wandb)")
def test_wandb_offline_run(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(_cfg(cache, tmp_path, log_to="wandb"))
    assert list(tracking_dir(tmp_path / "runs", "tracked", "wandb").rglob("*.wandb"))


@pytest.mark.slow  # a training logged to a local MLflow store: about 25 s under load, most of it MLflow
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (pip install mlflow)")
def test_mlflow_local_store(cache, tmp_path):
    from mlflow.tracking import MlflowClient

    train(_cfg(cache, tmp_path, log_to="mlflow"))
    client = MlflowClient(tracking_uri=mlflow_store_uri(tracking_dir(tmp_path / "runs", "tracked", "mlflow")))
    exp = client.get_experiment_by_name("pcmpipe")
    (run,) = client.search_runs([exp.experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "epoch/loss")) == 3
    if all(importlib.util.find_spec(p) for p in ("sqlalchemy", "alembic")):  # MLflow 3's store of choice
        assert (tracking_dir(tmp_path / "runs", "tracked", "mlflow") / "mlflow.db").is_file()
