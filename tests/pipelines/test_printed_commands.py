"""The plan's printed commands reproduce what the pipeline would do: each one, run as typed, writes a run with
the planned fingerprint (or the caches the plan extracts), after which the plan finds that step cached."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml
from synthetic_cache import write_synthetic_cache
from tiny_pipeline import tiny_pipeline
from typer.testing import CliRunner

from pcmpipe.cache.layout import cache_dir, manifest_in
from pcmpipe.cli import app
from pcmpipe.config import ExtractConfig, TrainConfig
from pcmpipe.datasets.synthetic import synth
from pcmpipe.pipelines.actions import run_step
from pcmpipe.pipelines.plan import make_plan
from pcmpipe.pipelines.spec import load_pipeline
from pcmpipe.training.rundir import final_dir, run_config

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text"}


def _run_printed(command: str) -> None:
    words = shlex.split(command)
    assert words[0] == "pcmpipe", command
    res = CliRunner().invoke(app, words[1:], env={"COLUMNS": "400"})
    assert res.exit_code == 0, (command, res.output)


def test_printed_train_commands_give_the_planned_fingerprints(tmp_path):
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, "synth", images={"train": 24, "val": 8, "test": 8})
    doc = tiny_pipeline(cache, "printed", {"p-pcmc": "pcmc", "p-pcmr": "pcmr"})
    # settings the old printed command dropped: each must reach the run through the command
    doc["defaults"].update(epochs=1, standardize="scale", dim=16, device="cpu", stream_val_mb=None)
    doc["runs"]["p-pcmr"].update(target="projections", threshold=0.9, rho=0.5, rho_on="norm")
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(doc))
    pipeline = load_pipeline(tmp_path / "printed.yaml", cache_root=str(cache), runs_root=str(tmp_path / "runs"))
    steps = [s for s in make_plan(pipeline) if s.kind == "train"]
    assert [s.status for s in steps] == ["missing", "missing"]
    for step in steps:
        _run_printed(step.command)
        spec = pipeline.runs[step.target]
        assert run_config(final_dir(spec.train.runs_root, spec.name))["fingerprint"] == spec.fingerprint, step.command
    assert [s.status for s in make_plan(pipeline) if s.kind == "train"] == ["cached", "cached"]


def test_printed_extract_command_writes_the_caches_the_pipeline_writes(tmp_path):
    """The printed command into one cache root, the pipeline's own step into another: the same fingerprints."""
    data = tmp_path / "flickr8k"
    synth("flickr8k", data, images=6, seed=3)
    doc = tiny_pipeline(tmp_path / "unused", "printed-extract", {"r": "pcmc"})
    doc["defaults"]["dataset"] = "flickr8k"
    doc["data"] = {
        "flickr8k": {
            "root": str(data),
            "modalities": ["I", "T"],
            "backbones": {**TINY, "P": "clip-tiny-text"},
            "weights": {"image": "random:0", "text": "random:1"},
            "extract": {"workers": 0, "batch_size": 4, "rows_per_shard": 8, "device": "cpu", "limit": 10},
        }
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    printed = load_pipeline(tmp_path / "p.yaml", cache_root=str(tmp_path / "printed"))
    [step] = [s for s in make_plan(printed) if s.kind == "extract"]
    assert step.status == "missing" and "--set" in step.command  # the per-modality backbone has no flag
    _run_printed(step.command)
    assert [s.status for s in make_plan(printed) if s.kind == "extract"] == ["cached"]

    planned = load_pipeline(tmp_path / "p.yaml", cache_root=str(tmp_path / "planned"))
    [own] = [s for s in make_plan(planned) if s.kind == "extract"]
    run_step(own, planned, lambda event: None)
    for m in ("I", "T"):
        for split in ("train", "val", "test"):
            a, b = (json.loads(manifest_in(cache_dir(root, "flickr8k", m, split)).read_text()) for root in
                    (tmp_path / "printed", tmp_path / "planned"))  # fmt: skip
            assert a["fingerprint"] == b["fingerprint"] and a["num_rows"] == b["num_rows"], (m, split)


@pytest.mark.parametrize(
    "model, settings",
    [
        (TrainConfig, {"dataset": "d", "modalities": "I,T", "stream": True, "stream_val_mb": None, "log_to": "wandb"}),
        (TrainConfig, {"dataset": "d", "modalities": "I,T", "cache_root": "/c", "runs_root": "cache/runs"}),
        (ExtractConfig, {"dataset": "d", "splits": "train", "strict": True, "max_padding": None, "dtype": "float16"}),
        (ExtractConfig, {"dataset": "d", "backbones": {"image": "x", "P": "y"}, "dataset_options": {"k": [1]}}),
    ],
)
def test_cli_args_give_the_config_back(model, settings):
    """Through the real merge of the commands (flags, then --set): the same config, field for field."""
    from pcmpipe.config import merge_settings

    cfg = model.from_dict(settings)
    args = cfg.to_cli_args()
    flags, sets = {}, []
    names = {model.flag_of(n): n for n in model.flag_names()}
    i = 0
    while i < len(args):
        if args[i] == "--set":
            sets.append(args[i + 1])
            i += 2
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[names[args[i]]] = args[i + 1]
            i += 2
        else:  # a switch
            flags[names[args[i]]] = True
            i += 1
    assert model.from_dict(merge_settings(None, flags, sets, model=model)) == cfg, args
