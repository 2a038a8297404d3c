"""`pcmpipe demo`: the built-in pipeline is valid and marked synthetic; the fast demo runs end to end offline
(synthetic data, random-weight tiny backbones) and its trained heads beat untrained heads and chance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.errors import UserError
from pcmpipe.pipelines.demo import demo_pipeline, ensure_synthetic
from pcmpipe.pipelines.spec import pipeline_from_dict
from pcmpipe.report.results import load_runs
from pcmpipe.report.tables import mean_metric


def test_demo_pipeline_is_a_valid_synthetic_pipeline(tmp_path):
    p = pipeline_from_dict(demo_pipeline(tmp_path / "data", tmp_path / "cache", fast=True))
    assert set(p.runs) == {
        "demo-flickr8k-pcmc-ITS",
        "demo-flickr8k-pcmr-ITS",
        "demo-cub-pcmc-ITAC",
        "demo-cub-pcmr-ITAC",
    }
    assert all(d.options["synthetic"] is True for d in p.data.values())
    assert all(w.startswith("random") for d in p.data.values() for w in d.weights.values())
    assert all(r.train.runs_root == str(tmp_path / "cache" / "runs") for r in p.runs.values())
    assert {e.kind for e in p.evaluations} == {"zeroshot", "enrichment"}


# The demo's runs as the built-in dict gave them before the demo became demo.yaml (`pcmpipe demo` with its default
# --out demo): the same fingerprints, so the same numbers, and a demo run before the move is found done.
DEMO_FINGERPRINTS = {
    False: {
        "demo-flickr8k-pcmc-ITS": "40e824c7b28511597c2b5119b01e6185630d723e0086dcfb7b2e7b69c3978b70",
        "demo-flickr8k-pcmr-ITS": "dd8e063f6e95250f3f235820289774219ab9c38a1b826f5597a3792dc009c89b",
        "demo-cub-pcmc-ITAC": "00503eef5f0a48ef000b4f2780bd3e01ee0b0c8b03533de5c2d322c3b7ebf653",
        "demo-cub-pcmr-ITAC": "7e8df9edeafb046fd355c18ce6e10062567c434141c1b3d66642a6706161d84e",
    },
    True: {
        "demo-flickr8k-pcmc-ITS": "f355b5ba9eb0e524f2934976ca57ee78705deaaf1493eede7a16f072a90f62b6",
        "demo-flickr8k-pcmr-ITS": "96619d4d67b37d9b0661ec8ef36e0fb3b2323711799f5bf146d07b53f7369f44",
        "demo-cub-pcmc-ITAC": "3670ec7e4488da49b8cd0912dbeabd29b112edf340720135e3ebc5b661cce01d",
        "demo-cub-pcmr-ITAC": "c9cab0bb55c32a5360c139e6ef48cb35b99a200df7a22ebdca157422ba3bfd76",
    },
}


@pytest.mark.parametrize("fast", [False, True])
def test_demo_spec_keeps_the_demo_runs(tmp_path, monkeypatch, fast):
    monkeypatch.chdir(tmp_path)  # no cache under demo/ here: the loading mode resolves as on a fresh machine
    p = pipeline_from_dict(demo_pipeline(Path("demo/data"), Path("demo/cache"), fast=fast))
    assert {name: spec.fingerprint for name, spec in p.runs.items()} == DEMO_FINGERPRINTS[fast]


def test_demo_refuses_to_mix_sizes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for ds in ("flickr8k", "cub"):
        (data / f"{ds}.synth.json").write_text(json.dumps({"request": {"dataset": ds, "images": -1, "seed": 0}}))
    with pytest.raises(UserError, match="another size"):
        ensure_synthetic(data, fast=True)


@pytest.mark.slow
def test_fast_demo_end_to_end_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded: the demo uses random weights
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out)])
    assert res.exit_code == 0, res.output[-3000:]
    md = (out / "report" / "report.md").read_text()
    html = (out / "report" / "report.html").read_text()
    assert "SYNTHETIC data" in md and "RANDOM weights" in md and "data:image/png;base64," in html
    runs = load_runs(out / "cache" / "runs")
    assert {n for n, r in runs.items() if r.complete} >= {"demo-cub-pcmc-ITAC", "demo-flickr8k-pcmc-ITS"}
    cub = runs["demo-cub-pcmc-ITAC"]
    trained, untrained, chance = (mean_metric(cub, "r@1", s) for s in ("test", "untrained", "chance"))
    assert trained > 2 * max(untrained, chance), (trained, untrained, chance)
    assert cub.zeroshot["T1"]["A"]["C"] > 3 * 100 / cub.zeroshot["num_classes"]  # zero-shot beats chance (1/K)
    # a second call reuses everything: no run directory is rewritten
    stamps = {n: (r.directory / "test_metrics.json").stat().st_mtime_ns for n, r in runs.items()}
    res = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out)])
    assert res.exit_code == 0, res.output[-3000:]
    assert {n: (r.directory / "test_metrics.json").stat().st_mtime_ns for n, r in runs.items()} == stamps
    assert os.path.getsize(out / "report" / "report.html") > 10_000
