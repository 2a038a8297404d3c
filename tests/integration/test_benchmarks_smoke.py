"""Every benchmark script runs in its --smoke mode (tiny sizes) and writes its table row, so none can rot.

The scripts run as real subprocesses, exactly as documented in docs/performance.md, but write into a temporary
copy of the table instead of docs/performance.md. Also checks the table writer of benchmarks/_timing.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
SCRIPTS = [
    "eval_memory.py",
    "eval_directions.py",
    "text_extract.py",
    "speech_extract.py",
    "image_extract.py",
    "train_epoch.py",
    "extract_pipeline.py",
    "finetune_cost.py",
    "train_memory.py",
    "search.py",
    "embed.py",
    "pcmr_target.py",
    "views.py",
    "precision.py",
    "gpu.py",
    "loss_step.py",
    "serve_load.py",
]


def _run(script: str, doc: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", "--threads", "1", "--doc", str(doc), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_every_benchmark_script_is_covered() -> None:
    found = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "plain_loop.py")
    assert found == sorted(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke(script: str, tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nIntro text stays.\n")
    proc = _run(script, doc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = doc.read_text()
    assert "Intro text stays." in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "(smoke sizes)" in ln]
    assert rows, text
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 7 and cells[4] in ("yes", "**no**", "n/a"), row
        assert f"benchmarks/{script} --smoke" in cells[6], row


def test_write_row_replaces_only_its_row(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import _timing
    finally:
        sys.path.remove(str(BENCH))
    doc = tmp_path / "perf.md"
    doc.write_text("# Perf\n\nbefore\n")
    _timing.write_row(doc, "a | b", "t", "m1", "r1", True)
    _timing.write_row(doc, "other", "t", "m2", "r2", False)
    _timing.write_row(doc, "a | b", "t", "m3", "r3", None)
    text = doc.read_text()
    assert text.startswith("# Perf\n\nbefore\n") and text.count(_timing.TABLE_BEGIN) == 1
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(rows) == 2
    assert rows[0].startswith("| a \\| b | t | m3 | r3 | n/a |") and rows[1].startswith(
        "| other | t | m2 | r2 | **no** |"
    )
