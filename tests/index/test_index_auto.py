"""`pcmpipe index --kind auto`: the kind follows the gallery's size and the memory budget, the recall@10 of an
approximate index against exact search is measured and reported, and explicit kinds build or refuse in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pcmpipe.cache import ShardWriter
from pcmpipe.cli import app
from pcmpipe.errors import UserError
from pcmpipe.index import build_index
from pcmpipe.index.auto import fit, recall_at_k

ENV = {"COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}


def _gallery(out: Path, rows: int, dim: int = 32) -> np.ndarray:
    """An embeddings cache as `pcmpipe embed` writes it: clustered unit vectors."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, dim))[rng.integers(0, 64, rows)] + 0.3 * rng.standard_normal((rows, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    meta = {"run": "r", "run_fingerprint": "f" * 64, "modality": "I"}
    with ShardWriter(out, features={"embedding": ((dim,), "float32")}, key="id", links=[], meta=meta) as w:
        w.add([f"r{i}" for i in range(rows)], {}, {"embedding": x})
    return x


def test_the_kind_follows_size_and_budget():
    assert fit(1000, 512, 4096).kind == "flat"
    assert fit(1_000_000, 512, 4096).kind == "ivf"  # 2 GB of float32 fits, too many rows to scan
    small = fit(1_000_000, 512, 256)
    assert small.kind == "ivfpq" and 512 % small.pq_m == 0 and small.bytes <= 256 << 20
    assert fit(300_000, 512, 10).pq_m < fit(300_000, 512, 40).pq_m  # a larger budget buys more bytes per row
    with pytest.raises(UserError, match="holds no index of 1,000,000 x 512"):
        fit(1_000_000, 512, 1)
    with pytest.raises(UserError, match="positive"):
        fit(10, 4, 0)


def test_measured_recall_is_exact_for_flat_and_below_for_a_coarse_ivf(tmp_path):
    x = _gallery(tmp_path / "g", 3000)
    assert recall_at_k(build_index(x, "flat"), x) == 1.0
    coarse = build_index(x, "ivf", nlist=64, nprobe=1)
    assert 0.2 < recall_at_k(coarse, x) < 1.0


def test_cli_auto_picks_and_reports(tmp_path):
    _gallery(tmp_path / "small", 500)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "small")], env=ENV)
    assert r.exit_code == 0, r.output
    assert "(flat, chosen: 500 rows are few enough to scan exactly" in r.stdout and "recall@10: 1 (exact" in r.stdout
    assert json.loads((tmp_path / "small.index" / "index.json").read_text())["kind"] == "flat"
    # a budget below the float32 rows' 62.5 KiB: product quantisation, its recall measured and recorded
    _gallery(tmp_path / "big", 2000)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "big"), "--memory-budget", "0.06"], env=ENV)
    assert r.exit_code == 0, r.output
    recorded = json.loads((tmp_path / "big.index" / "index.json").read_text())
    assert recorded["kind"] == "ivfpq" and 0 < recorded["recall_at_10"] <= 1
    assert f"on 1000 gallery rows as queries: {recorded['recall_at_10']:.3f}" in r.stdout


def test_a_budget_beyond_this_machines_memory_is_one_line(tmp_path):
    _gallery(tmp_path / "g", 10)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "g"), "--memory-budget", "1e12"], env=ENV)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "--memory-budget must be at most" in lines[0], r.output
    assert not (tmp_path / "g.index").exists()


@pytest.mark.parametrize(
    ("kind", "rows", "ok", "fragment"),
    [
        ("ivf", 3, True, "recall@10 against flat"),
        ("flat", 3, True, "recall@10: 1"),
        ("ivfpq", 100, False, "needs at least 256 embeddings"),
    ],
)
def test_explicit_kinds_build_at_any_size_or_refuse_in_one_line(tmp_path, kind, rows, ok, fragment):
    _gallery(tmp_path / "g", rows)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "g"), "--kind", kind], env=ENV)
    if ok:
        assert r.exit_code == 0 and fragment in r.stdout, r.output
    else:
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr, r.output
