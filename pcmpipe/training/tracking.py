"""Experiment tracking: the recipes' events (pcmpipe.training.events) forwarded to TensorBoard, W&B or MLflow.

One setting, `log_to` (`--log-to tensorboard,wandb,mlflow`), chooses the sinks; `metrics.jsonl` is written either
way. Each sink is an `on_event` consumer: it sees exactly what the terminal renderer sees, so tracking needs no
hook inside the training loops. Logs go to `<runs_root>/_tracking/<run name>/<sink>/` (a `_` directory is never
taken for a run), beside the run rather than inside it, because the run directory is renamed when it finishes.

    tensorboard  torch.utils.tensorboard event files      tensorboard --logdir cache/runs/_tracking
    wandb        an offline W&B run (wandb sync DIR to upload)
    mlflow       a local store: DIR/mlflow.db (SQLite), or a file store without SQLAlchemy
                 (mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db)

W&B and MLflow are optional: asking for one that is not installed is one error line saying what to install,
before any training starts. Scalars: `train/loss` per logged step (global step), and per epoch `epoch/loss`,
`epoch/val_mean_r1`, `epoch/best`, `epoch/lr` (one per optimizer group in fine-tuning), `epoch/time_s`; at the
end `test/mean_r1` (and `test/untrained_mean_r1`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pcmpipe.errors import UserError
from pcmpipe.training.events import EpochDone, Event, OnEvent, RunFinished, StepDone, TrainingStarted, emitter

TRACKING = "_tracking"
# sink -> the package that provides it (what the user installs)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def tracking_dir(runs_root: str | Path, name: str, sink: str) -> Path:
    """Where sink `sink` logs run `name`."""
    return Path(runs_root) / TRACKING / name / sink


def check_installed(sinks: list[str]) -> None:
    """UserError naming the pip command for the first requested sink whose package is missing."""
    for sink in sinks:
        package = PACKAGES[sink]
        if importlib.util.find_spec(package) is None:
            raise UserError(
                f"--log-to {sink} needs the {package} package, which is not installed: pip install {package}"
            )


class _TensorBoard:
    def __init__(self, directory: Path, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, directory: Path, config: dict, name: str) -> None:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        # offline: nothing leaves the machine unless the user runs `wandb sync`
        self.run = wandb.init(project="pcmpipe", name=name, dir=str(directory), mode="offline", config=config)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def mlflow_store_uri(directory: Path) -> str:
    """The tracking store under `directory`: SQLite (`mlflow.db`) where SQLAlchemy is installed, else a file store.

    MLflow 3 refuses new file stores ("maintenance mode") unless MLFLOW_ALLOW_FILE_STORE is set, and its SQLite
    store needs SQLAlchemy and Alembic, which `mlflow` brings and `mlflow-skinny` does not. Either way the logs
    stay in one local folder, offline."""
    if importlib.util.find_spec("sqlalchemy") is not None and importlib.util.find_spec("alembic") is not None:
        return f"sqlite:///{(directory / 'mlflow.db').resolve()}"
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store MLflow 2 used by default
    return directory.resolve().as_uri()


class _MLflow:
    def __init__(self, directory: Path, config: dict, name: str) -> None:
        from mlflow.tracking import MlflowClient

        directory.mkdir(parents=True, exist_ok=True)
        # a client of its own: no global mlflow state (active run, tracking URI) is touched
        self.client = MlflowClient(tracking_uri=mlflow_store_uri(directory))
        found = self.client.get_experiment_by_name("pcmpipe")
        artifacts = (directory / "artifacts").resolve().as_uri()
        exp = found.experiment_id if found is not None else self.client.create_experiment("pcmpipe", artifacts)
        self.run_id = self.client.create_run(exp, run_name=name).info.run_id
        for key, value in config.items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.client.log_metric(self.run_id, key.replace("@", "_at_"), value, step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def epoch_scalars(e: EpochDone) -> dict[str, float]:
    out = {"epoch/loss": e.loss, "epoch/val_mean_r1": e.val_mean_r1, "epoch/best": e.best, "epoch/time_s": e.time_s}
    if isinstance(e.lr, dict):
        out.update({f"epoch/lr/{group}": lr for group, lr in e.lr.items()})
    else:
        out["epoch/lr"] = e.lr
    return out


class Tracker:
    """An on_event consumer that opens its sinks when training starts and logs every scalar event to each."""

    def __init__(self, sinks: list[str], runs_root: str | Path, config: dict) -> None:
        self.sinks, self.runs_root, self.config = list(dict.fromkeys(sinks)), runs_root, config
        self.open: list[Any] = []
        self.steps = 1  # optimizer steps per epoch, for the global step of StepDone
        self.epoch = 0

    def _start(self, name: str) -> None:
        self.close()  # a second TrainingStarted in one process: the earlier sinks are done
        for sink in self.sinks:
            directory = tracking_dir(self.runs_root, name, sink)
            if sink == "tensorboard":
                self.open.append(_TensorBoard(directory, self.config))
            elif sink == "wandb":
                self.open.append(_WandB(directory, self.config, name))
            else:
                self.open.append(_MLflow(directory, self.config, name))

    def _log(self, values: dict[str, float], step: int) -> None:
        for sink in self.open:
            sink.log(values, step)

    def __call__(self, event: Event) -> None:
        if isinstance(event, TrainingStarted):
            self.steps = max(1, event.steps)
            self._start(event.name)
        elif isinstance(event, StepDone):
            self._log({"train/loss": event.loss}, (event.epoch - 1) * self.steps + event.step)
        elif isinstance(event, EpochDone):
            self.epoch = event.epoch
            self._log(epoch_scalars(event), event.epoch)
        elif isinstance(event, RunFinished):
            values = {"test/mean_r1": event.test_mean_r1}
            if event.untrained_mean_r1 is not None:
                values["test/untrained_mean_r1"] = event.untrained_mean_r1
            self._log(values, self.epoch)

    def close(self) -> None:
        while self.open:
            self.open.pop().close()


@contextlib.contextmanager
def tracked(cfg: Any, on_event: OnEvent | None, enabled: bool = True) -> Iterator[OnEvent]:
    """The callback a recipe reports to: `on_event` plus the sinks of `cfg.log_to` (none when not `enabled`,
    e.g. on the ranks of a torchrun that do not report). The sinks are closed when the block ends, also on error."""
    sinks = list(getattr(cfg, "log_to", []) or []) if enabled else []
    emit = emitter(on_event)
    if not sinks:
        yield emit
        return
    check_installed(sinks)
    tracker = Tracker(sinks, cfg.runs_root, {k: v for k, v in cfg.to_dict().items() if k != "log_to"})

    def both(event: Event) -> None:
        tracker(event)
        emit(event)

    try:
        yield both
    finally:
        tracker.close()
