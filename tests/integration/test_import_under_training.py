"""`import-features --overwrite` of a split while a real streamed `train` reads it, in real processes.

The training holds every split it reads shared (pcmpipe.cache.lock.reading); the import takes the split's
exclusive lock, as extract does. So an import with --lock-timeout refuses in one line, and one without waits for
the training to end: the run's losses and the fingerprints its config.json records are those of the data it was
started on, and the new cache is in place after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic_cache import write_synthetic_cache
from typer.testing import CliRunner

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cli import app
from pcmpipe.training import rundir as runs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "400", "NO_COLOR": "1"}


def _train_args(cache: Path, name: str) -> list[str]:
    args = ["train", "--dataset", "synth", "--modalities", "I,T", "--cache-root", str(cache), "--name", name]
    args += ["--epochs", "30", "--patience", "30", "--batch-size", "16", "--lr", "1e-3", "--threads", "1"]
    return args + ["--device", "cpu", "--set", "progress=false", "--set", "stream=true"]


def _history(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if "time" not in k} for r in runs.read_metrics(run)]


def _new_vectors(cache: Path, where: Path) -> list[str]:
    """Other vectors for synth/T/train, the modality a streamed run reads shard by shard every epoch (same ids
    and links, negated features): import-features arguments."""
    cols, feats = open_cache(cache_dir(cache, "synth", "T", "train")).read()
    np.save(where / "new.npy", -feats["feat"])
    rows = "".join(f"{i}\t{m}\t{c}\n" for i, m, c in zip(cols["caption_id"], cols["image_id"], cols["class_id"]))
    (where / "new.tsv").write_text("caption_id\timage_id\tclass_id\n" + rows)
    args = ["--dataset", "synth", "--split", "train", "--npy", where / "new.npy", "--ids", where / "new.tsv"]
    args += ["--key", "caption_id", "--links", "image_id,class_id"]
    return ["import-features", "T", *map(str, args), "--cache-root", str(cache), "--overwrite"]


@pytest.mark.slow  # a streamed training and two imports as real processes, then a reference training
def test_import_overwrite_waits_for_or_refuses_a_running_streamed_training(tmp_path):
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, "synth", images={"train": 48, "val": 12, "test": 12}, rows_per_shard=16)
    shutil.copytree(cache, tmp_path / "reference")
    old = open_cache(cache_dir(cache, "synth", "T", "train")).fingerprint
    imp = [sys.executable, "-m", "pcmpipe", *_new_vectors(cache, tmp_path)]
    log = tmp_path / "train.log"
    with log.open("w") as out:
        train = subprocess.Popen([sys.executable, "-m", "pcmpipe", *_train_args(cache, "s")], env=ENV, stdout=out,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    waiting = None
    try:
        metrics = cache / "runs" / ".tmp-s" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.is_file() and metrics.read_text().strip()):  # an epoch done: its data is held
            assert train.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no epoch within 300 s"
            time.sleep(0.05)
        refused = subprocess.run([*imp, "--lock-timeout", "0.5"], env=ENV, capture_output=True, text=True, timeout=120)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert "cache synth/T/train is in use by another job" in lines[0] and "Traceback" not in refused.stderr
        assert train.poll() is None, "the training ended before the refused import: the test proves nothing"
        waiting = subprocess.Popen(imp, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert train.wait(timeout=600) == 0, log.read_text()
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0 and "wrote 144 rows" in out, err
    finally:
        for proc in (train, waiting):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    run = cache / "runs" / "s"
    recorded = runs.read_json(run / "config.json")["caches"]["train"]["T"]
    assert recorded["fingerprint"] == old  # config.json names the data the run was trained on
    assert open_cache(cache_dir(cache, "synth", "T", "train")).fingerprint not in (old, "")  # imported after
    reference = CliRunner().invoke(app, _train_args(tmp_path / "reference", "s"), env=ENV)
    assert reference.exit_code == 0, reference.output
    assert _history(run) == _history(tmp_path / "reference" / "runs" / "s")  # losses of the old data, all epochs
