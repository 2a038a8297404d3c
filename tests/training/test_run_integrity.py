"""The run directory under misuse: a finished temp run of another config, reserved run names, symbolic links
where pcmpipe keeps its own folders, crafted or damaged run records, and the run lock's refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_cache import write_synthetic_cache
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.config import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.training import rundir as runs

FP_A, FP_B = "a" * 64, "b" * 64
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}


def _record(fingerprint: str, **config) -> dict:
    """A config.json as record_config writes it, reduced to what a RunRecord requires."""
    return {"config": {"dataset": "synth", "modalities": ["I", "T"], **config}, "fingerprint": fingerprint}


def _finished(directory: Path, fingerprint: str) -> Path:
    directory.mkdir(parents=True)
    runs.write_json(directory / "config.json", _record(fingerprint))
    runs.write_json(directory / runs.COMPLETE_MARKER, {"epoch": 1})
    return directory


# ---- a finished temp run is adopted only by its own config ----
def test_a_finished_temp_run_of_another_config_is_refused_not_adopted(tmp_path):
    """`.tmp-ph` is what a kill between the completion marker and the rename leaves. Another config claiming
    `ph` must not take it as its own result; the config that wrote it adopts it."""
    tmp = _finished(runs.temp_dir(tmp_path, "ph"), FP_A)
    with pytest.raises(UserError) as info:
        runs.claim(tmp_path, "ph", FP_B)
    msg = str(info.value)
    assert "\n" not in msg and str(tmp) in msg and "another config" in msg and "--name" in msg
    assert tmp.is_dir() and not runs.final_dir(tmp_path, "ph").exists()  # nothing moved, nothing lost
    claim = runs.claim(tmp_path, "ph", FP_A)
    assert claim.status == "done" and runs.run_record(claim.final).fingerprint == FP_A and not tmp.exists()


@pytest.mark.parametrize("name", [".tmp-victim", ".damaged-victim", "_pipelines", ".hidden", ".."])
def test_reserved_run_names_are_refused_in_one_line(tmp_path, name):
    with pytest.raises(UserError, match="marks pcmpipe's own entries"):
        TrainConfig.from_dict({"dataset": "synth", "modalities": "I,T", "name": name})
    with pytest.raises(UserError, match="marks pcmpipe's own entries"):
        runs.claim(tmp_path, name, FP_A)  # the library refuses it too, not only the schema
    res = CliRunner().invoke(app, ["train", "--dataset", "synth", "--modalities", "I,T", "--name", name])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "start it with a letter or digit" in lines[0], res.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_train_never_adopts_the_finished_temp_run_of_another_config(tmp_path):
    """Real `pcmpipe train` processes. Run `ph` (PCMC on I,T, one epoch) is trained, then put back in the state a
    kill between its completion marker and its rename leaves (`.tmp-ph`, marker written). `train --name ph` with
    another loss, modalities and epochs refuses in one line and changes nothing; the first config adopts it."""
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, images={"train": 32, "val": 8, "test": 8})
    runs_root = tmp_path / "runs"

    def train(*args: str) -> subprocess.CompletedProcess:
        common = ["--dataset", "synth", "--cache-root", str(cache), "--runs-root", str(runs_root), "--name", "ph"]
        common += ["--batch-size", "8", "--threads", "1", "--device", "cpu", "--set", "progress=false"]
        cmd = [sys.executable, "-m", "pcmpipe", "train", *common, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)

    first = ["--loss", "pcmc", "--modalities", "I,T", "--epochs", "1"]
    done = train(*first)
    assert done.returncode == 0, done.stderr
    tmp = runs.temp_dir(runs_root, "ph")
    os.replace(runs.final_dir(runs_root, "ph"), tmp)
    before = {p.relative_to(tmp): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}

    other = train("--loss", "pcmr", "--modalities", "I,T,S", "--epochs", "2")
    lines = other.stderr.strip().splitlines()
    assert other.returncode == 2 and len(lines) == 1, other.stderr
    assert str(tmp) in lines[0] and "finished run of another config" in lines[0] and "Traceback" not in other.stderr
    assert "run written" not in other.stdout and not runs.final_dir(runs_root, "ph").exists()
    assert {p.relative_to(tmp): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()} == before

    again = train(*first)
    assert again.returncode == 0 and "run written to" in again.stdout, again.stderr
    record = runs.run_record(runs.final_dir(runs_root, "ph"))
    assert record.config.loss == "pcmc" and record.config.modalities == ["I", "T"]


# ---- symbolic links where pcmpipe keeps its own folders ----
def _outside(tmp_path: Path) -> Path:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not pcmpipe's")
    return elsewhere


def test_a_temp_run_that_is_a_symlink_is_refused_and_never_followed(tmp_path):
    runs_root = tmp_path / "runs"
    runs_root.mkdir()
    elsewhere = _outside(tmp_path)
    link = runs.temp_dir(runs_root, "x")
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UserError) as info:
        runs.claim(runs_root, "x", FP_A)
    assert "symbolic link" in str(info.value) and str(link) in str(info.value) and "\n" not in str(info.value)
    assert link.is_symlink() and (elsewhere / "keep.txt").read_text() == "not pcmpipe's"
    # a finished run behind the link is not adopted either: that would rename the link into the runs root
    _finished(elsewhere / "run", FP_A)
    link.unlink()
    link.symlink_to(elsewhere / "run", target_is_directory=True)
    with pytest.raises(UserError, match="symbolic link"):
        runs.claim(runs_root, "x", FP_A)
    assert not runs.final_dir(runs_root, "x").exists()


def test_a_set_aside_slot_that_is_a_symlink_is_replaced_not_followed(tmp_path):
    """A finished run whose completion marker is gone is moved to `.damaged-<name>`; a symbolic link there goes
    itself, and the folder it points to keeps its files."""
    runs_root = tmp_path / "runs"
    final = _finished(runs.final_dir(runs_root, "x"), FP_A)
    (final / runs.COMPLETE_MARKER).unlink()
    elsewhere = _outside(tmp_path)
    aside = runs_root / ".damaged-x"
    aside.symlink_to(elsewhere, target_is_directory=True)
    claim = runs.claim(runs_root, "x", FP_A)
    assert claim.status == "fresh" and any(".damaged-x" in n for n in claim.notes)
    assert not aside.is_symlink() and (aside / "config.json").is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]


# ---- run records read back bounded and validated ----
DEEP = "[" * 100_000 + "]" * 100_000
CRAFTED = {
    "a list": "[1, 2]",
    "no config": json.dumps({"fingerprint": FP_A}),
    "no fingerprint": json.dumps({"config": {"dataset": "synth", "modalities": ["I", "T"]}}),
    "a string for config": json.dumps({"config": "synth", "fingerprint": FP_A}),
    "an int for caches": json.dumps({**_record(FP_A), "caches": 3}),
    "a string for a split's caches": json.dumps({**_record(FP_A), "caches": {"test": "I"}}),
    "nested brackets": json.dumps({**_record(FP_A), "x": None}).replace("null", DEEP),
}


@pytest.mark.parametrize("content", CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_run_config_is_one_line_naming_it(tmp_path, content):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(content)
    for read in (runs.run_config, runs.run_record):
        with pytest.raises(UserError) as info:
            read(run)
        assert str(run / "config.json") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="config.json"):
        runs.claim(tmp_path / "runs", "r", FP_A)
    res = CliRunner().invoke(app, ["evaluate", str(run)], env={"COLUMNS": "400"})
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "config.json" in lines[0], res.output


def test_deeply_nested_run_files_are_one_line_or_a_missing_result(tmp_path):
    run = _finished(tmp_path / "r", FP_A)
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n' + DEEP + "\n")
    with pytest.raises(UserError, match=r"metrics.jsonl is damaged \(its line 2 is nested"):
        runs.read_metrics(run)
    (run / runs.COMPLETE_MARKER).write_text(DEEP)
    assert not runs.result_ok(run)  # a damaged marker is a missing result (the run is trained again)
    (run / "embeddings").mkdir()
    (run / "embeddings" / "I.safetensors").write_bytes(b"")
    for content in (DEEP, '["key", "columns"]', '{"key": "image_id", "columns": {"id": "abc"}}'):
        (run / "embeddings" / "I.json").write_text(content)
        with pytest.raises(UserError, match="I.json"):
            runs.load_embeddings(run)


def test_the_run_lock_refusal_names_what_runs_can_do(tmp_path):
    with runs.run_lock(tmp_path, "x"):
        with pytest.raises(UserError) as info, runs.run_lock(tmp_path, "x"):
            pass
    msg = str(info.value)
    assert "in use by another job" in msg and "another --name" in msg and "lock timeout" not in msg
    assert list(tmp_path.iterdir()) == []  # the job ended: its lock file went with it


def test_the_report_names_a_deeply_nested_run_file_and_leaves_its_values_out(tmp_path):
    from pcmpipe.report.results import load_runs

    good = _finished(tmp_path / "good", FP_A)
    (good / runs.COMPLETE_MARKER).write_text(DEEP)
    _finished(tmp_path / "bad", FP_A)
    (tmp_path / "bad" / "config.json").write_text(DEEP)
    problems: list[str] = []
    found = load_runs(tmp_path, problems)
    assert set(found) == {"good"} and found["good"].test is None
    assert any(str(good / runs.COMPLETE_MARKER) in p and "nested" in p for p in problems), problems
    assert any(str(tmp_path / "bad" / "config.json") in p for p in problems), problems
