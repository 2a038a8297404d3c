"""benchmarks/gpu.py on CPU: its smoke run measures all five rows into the GPU table and the JSON under $OUT, and
a measurement that runs past its cap is killed and reported as such while the others still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU_TABLE_BEGIN = "<!-- GPU table: rows are rewritten by benchmarks/gpu.py -->"


def _run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    doc, out = tmp_path / "performance.md", tmp_path / "out"
    doc.write_text("# Performance\n\nIntro text stays.\n")
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "OUT": str(out)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--threads", "1", "--doc", str(doc)]
    proc = subprocess.run([*cmd, *extra], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, doc, out / "gpu.json"


@pytest.mark.slow
def test_smoke_run_writes_every_row_and_the_json(tmp_path: Path) -> None:
    proc, doc, saved = _run(tmp_path)
    result = json.loads(saved.read_text())
    assert set(result["rows"]) == {"image", "text", "speech", "train", "search"}
    assert result["precision"] == "fp32" and result["torch"] and result["smoke"] is True
    for name, row in result["rows"].items():
        assert not row["measured"].startswith("not measured"), (name, row)
        assert row["figures"], name
    text = doc.read_text()
    assert "Intro text stays." in text and text.count(GPU_TABLE_BEGIN) == 1
    table = text.split(GPU_TABLE_BEGIN, 1)[1]
    assert sum("(smoke sizes)" in ln and "precision fp32" in ln for ln in table.splitlines()) == 5
    assert "measurement" in proc.stdout and "search" in proc.stdout.splitlines()[-1]  # the summary table


def test_a_measurement_past_its_cap_is_killed_and_reported(tmp_path: Path) -> None:
    _, doc, saved = _run(tmp_path, "--only", "train", "--budget-s", "0.5")
    row = json.loads(saved.read_text())["rows"]["train"]
    assert row["measured"] == "not measured: ran past its cap of 0 s" or "ran past its cap" in row["measured"]
    assert row["ok"] is None and row["seconds"] < 30
    assert "ran past its cap" in doc.read_text()


def test_the_row_emitted_before_the_cap_is_kept(monkeypatch) -> None:
    import argparse
    import time

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import _device_rows
        import gpu
    finally:
        sys.path.remove(str(REPO / "benchmarks"))

    def slow(args, emit):  # a measurement whose optional part outlives its cap
        emit({"what": _device_rows.WHAT["train"], "target": "t", "measured": "ours 0.50 s", "ratio": "r", "ok": True})
        time.sleep(60)

    monkeypatch.setitem(_device_rows.SECTIONS, "train", slow)
    row = gpu.run_section("train", argparse.Namespace(device="cpu", threads=None), cap=3.0)
    assert row["measured"] == "ours 0.50 s (the rest ran past its cap of 3 s)"
    assert row["ok"] is True and "partial" not in row and 3.0 <= row["seconds"] < 30
