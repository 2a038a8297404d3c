"""The training bar advances in every mode: `train` in memory and streamed, `run`, `demo` and `finetune`
(tests/training/test_finetune.py), through the renderers the CLI draws with (tests/bar_trace.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bar_trace import BarTrace, terminal
from synthetic_cache import write_synthetic_cache
from tiny_pipeline import tiny_pipeline

from pcmpipe.cli.render import PipelineRenderer
from pcmpipe.cli.training_progress import TrainingRenderer
from pcmpipe.config import TrainConfig
from pcmpipe.pipelines.run import run_pipeline
from pcmpipe.pipelines.spec import load_pipeline, pipeline_from_dict
from pcmpipe.training.stage2 import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bar") / "cache"
    write_synthetic_cache(root, images={"train": 60, "val": 8, "test": 8}, rows_per_shard=32)  # 45 steps of 4
    return root


def _train(cache: Path, tmp_path: Path, **kw) -> BarTrace:
    cfg = {"dataset": "synth", "modalities": "I,T", "cache_root": str(cache), "runs_root": str(tmp_path / "runs")}
    cfg.update(epochs=2, patience=2, batch_size=4, dim=16, device="cpu", **kw)
    renderer = TrainingRenderer(terminal())
    trace = BarTrace(renderer, renderer)
    try:
        train(TrainConfig.from_dict(cfg), on_event=trace)
    finally:
        renderer.close()
    return trace


@pytest.mark.parametrize("stream", [False, True], ids=["in memory", "streamed"])
def test_the_train_bar_reaches_the_last_step_of_every_epoch(cache, tmp_path, stream):
    trace = _train(cache, tmp_path, stream=stream, name="s" if stream else "m")
    assert trace.epochs == [(1, 1), (1, 2)] and trace.reached_the_end_of_every_epoch(), trace.shown


def test_without_step_events_no_bar_is_drawn_to_stand_still(cache, tmp_path):
    """`progress: false` (a pipeline's or a YAML's) sends no step events: the bar is not drawn at all, rather
    than standing at 'epoch 1/N 0/S' for the whole run as it did under `demo`."""
    renderer = TrainingRenderer(terminal())
    drawn = []

    def trace(event):
        renderer(event)
        drawn.append(renderer.bar is not None)

    train(
        TrainConfig.from_dict(
            {"dataset": "synth", "modalities": "I,T", "cache_root": str(cache), "runs_root": str(tmp_path / "r")}
            | {"epochs": 2, "batch_size": 4, "dim": 16, "device": "cpu", "progress": False}
        ),
        on_event=trace,
    )
    renderer.close()
    assert drawn and not any(drawn)


def test_the_run_bar_reaches_the_last_step_of_every_epoch(cache, tmp_path):
    doc = tiny_pipeline(cache, "bar", {"a": "pcmc", "b": "pcmr"})
    del doc["defaults"]["progress"]  # as the shipped pipelines: the setting's default
    doc["defaults"].update(batch_size=4, epochs=2)
    (tmp_path / "bar.yaml").write_text(yaml.safe_dump(doc))
    pipeline = load_pipeline(tmp_path / "bar.yaml", cache_root=str(cache), runs_root=str(tmp_path / "runs"))
    renderer = PipelineRenderer(terminal())
    trace = BarTrace(renderer, renderer.training)
    try:
        run_pipeline(pipeline, on_event=trace)
    finally:
        renderer.close()
    assert [s.name for s in trace.started] == ["a", "b"] and trace.reached_the_end_of_every_epoch(), trace.shown


def test_the_demo_trains_with_step_events():
    """The demo's runs (pcmpipe.pipelines.demo) leave `progress` on, so its bar moves (the slow test below
    watches it move)."""
    from pcmpipe.pipelines.demo import demo_pipeline

    pipeline = pipeline_from_dict(demo_pipeline(Path("data"), Path("cache"), fast=True), path=None)
    assert pipeline.runs and all(spec.train.progress for spec in pipeline.runs.values())


@pytest.mark.slow
def test_the_demo_bar_reaches_the_last_step_of_every_epoch(tmp_path):
    """`pcmpipe demo --fast` as the CLI draws it: every run's bar moves to its last step in every epoch."""
    from pcmpipe.pipelines.demo import run_demo

    renderer = PipelineRenderer(terminal())
    trace = BarTrace(renderer, renderer.training)
    try:
        run_demo(tmp_path / "demo", fast=True, on_event=trace)
    finally:
        renderer.close()
    assert len(trace.started) == 4 and trace.reached_the_end_of_every_epoch()
