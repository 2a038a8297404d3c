"""`pcmpipe train` / `pcmpipe evaluate` as a user runs them: real subprocesses, exit codes, one-line errors.

A real SIGKILL of `pcmpipe train` and its resume are tested in tests/training/test_resume_mid_epoch.py (within an
epoch) and tests/integration/test_run_faults.py (at seeded random points)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from synthetic_cache import write_synthetic_cache
from typer.testing import CliRunner

from pcmpipe.cli import app

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
FAST = ["--dataset", "synth", "--modalities", "I,T,S", "--batch-size", "32", "--lr", "2e-3", "--threads", "1"]


# every test here on one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(planted_cache):
    return planted_cache(drop_speech=0.3)


def pcmpipe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pcmpipe", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _mean_r1(node: dict) -> float:
    vals = [v["r@1"] for k, v in node.items() if "->" in k]
    return sum(vals) / len(vals)


@pytest.mark.slow
def test_train_cli_learns_far_above_chance_and_untrained(cache, tmp_path):
    runs_root = tmp_path / "runs"
    res = pcmpipe(
        "train",
        "--loss",
        "pcmr",
        *FAST,
        "--epochs",
        "8",
        "--cache-root",
        str(cache),
        "--runs-root",
        str(runs_root),
        "--name",
        "cli",
    )
    assert res.returncode == 0, res.stderr
    assert "epoch 1/8 loss" in res.stdout  # not a TTY: one plain line per epoch
    run = runs_root / "cli"
    test = json.loads((run / "test_metrics.json").read_text())
    untrained = json.loads((run / "untrained_metrics.json").read_text())
    r1, u1 = _mean_r1(test["instance"]), _mean_r1(untrained["instance"])
    chance = test["chance"]["instance"]["mean"]["r@1"]
    print(
        f"\nCLI pcmr: test mean r@1 {r1:.1f} (untrained {u1:.1f}, chance {chance:.1f}); "
        + ", ".join(f"{k} {v['r@1']:.1f}" for k, v in test["instance"].items() if "->" in k)
    )
    assert r1 > 5 * chance and r1 > u1 + 15
    assert all(test["instance"][d]["r@1"] > 3 * test["chance"]["instance"][d]["r@1"] for d in ("I->T", "T->I", "I->S"))

    res = CliRunner().invoke(app, ["evaluate", str(run), "--match", "instance", "--out", str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    assert "I->T" in res.stdout and "instance-level match" in res.stdout
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["instance"] == test["instance"]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--lr", "1e30"], "loss became NaN at epoch 1 step"),
        (["--loss", "clip"], "unknown loss 'clip'; valid choices: pcmc, pcmr"),
        (["--modalities", "I,Q"], "unknown modality 'Q'; valid choices:"),
        (["--dataset", "nope"], "no cache of dataset 'nope' under"),
        (["--epochs", "many"], "setting epochs='many' has the wrong type"),
        (["--set", "learning_rate=1"], "unknown training setting learning_rate; did you mean lr?"),
        (["--modalities", "I,A"], "no cached features at"),
    ],
)
def test_user_errors_exit_2_with_one_line(cache, tmp_path, extra, fragment):
    # In-process through the real CLI app (the subprocess path is covered above; this saves a torch import each).
    res = CliRunner().invoke(
        app,
        ["train", *FAST, "--epochs", "2", "--cache-root", str(cache), "--runs-root", str(tmp_path / "r"), *extra],
        env={"COLUMNS": "400"},
    )
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in res.stderr
    # nothing but the run's lock file (hidden; an OS lock, free once the process ends)
    assert not (tmp_path / "r").exists() or not any(not p.name.startswith(".") for p in (tmp_path / "r").iterdir())


def test_yaml_config_with_flag_overrides(cache, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"dataset: synth\nmodalities: [I, T]\nloss: pcmr\nepochs: 9\nbatch_size: 32\n"
        f"cache_root: {cache}\nruns_root: {tmp_path / 'runs'}\nname: fromyaml\n"
    )
    res = CliRunner().invoke(app, ["train", "--config", str(path), "--epochs", "1", "--loss", "pcmc"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "runs" / "fromyaml" / "config.json").read_text())["config"]
    assert (cfg["epochs"], cfg["loss"], cfg["modalities"], cfg["batch_size"]) == (1, "pcmc", ["I", "T"], 32)
    path.write_text("dataset: synth\nmodalities: [I, T]\nlearning_rate: 1\n")
    res = CliRunner().invoke(app, ["train", "--config", str(path)], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "unknown training setting learning_rate; did you mean lr?" in res.stderr


def test_yaml_cache_root_places_the_run_and_set_wins(cache, tmp_path):
    # no --runs-root anywhere: the run goes beside the YAML's cache, as finetune already did
    path = tmp_path / "run.yaml"
    path.write_text(
        f"dataset: synth\nmodalities: I,T\nepochs: 9\nbatch_size: 32\ncache_root: {cache}\n"
        f"name: beside\nstream_val_mb: '8'\n"
    )
    res = CliRunner().invoke(
        app, ["train", "--config", str(path), "--epochs", "3", "--set", "epochs=1", "--set", "lr=2e-3"]
    )
    assert res.exit_code == 0, res.output
    run = cache / "runs" / "beside"
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert (cfg["epochs"], cfg["lr"], cfg["stream_val_mb"]) == (1, 2e-3, 8.0)


def test_missing_cache_names_extract_command(tmp_path):
    write_synthetic_cache(tmp_path / "c", dataset="cub", images={"train": 20, "val": 5, "test": 5})
    res = CliRunner().invoke(
        app,
        ["train", "--dataset", "cub", "--modalities", "I,T,A", "--cache-root", str(tmp_path / "c")],
        env={"COLUMNS": "400"},
    )
    assert res.exit_code == 2
    assert f"no cached features at {tmp_path / 'c' / 'cub' / 'A' / 'train'}" in res.stderr.replace("\n", "")
    assert "pcmpipe extract --dataset cub --modalities A --split train" in res.stderr.replace("\n", "")


def test_missing_cache_of_a_modality_the_dataset_cannot_extract_says_import(tmp_path):
    # flickr8k has no attributes (A): extract cannot make them, import-features can
    write_synthetic_cache(tmp_path / "c", dataset="flickr8k", images={"train": 20, "val": 5, "test": 5})
    res = CliRunner().invoke(
        app,
        ["train", "--dataset", "flickr8k", "--modalities", "I,A", "--cache-root", str(tmp_path / "c")],
        env={"COLUMNS": "400"},
    )
    assert res.exit_code == 2
    err = res.stderr.replace("\n", "")
    assert "pcmpipe import-features A --dataset flickr8k --split train" in err and "pcmpipe extract" not in err
