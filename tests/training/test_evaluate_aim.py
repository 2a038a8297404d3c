"""`pcmpipe evaluate` aimed by the user: --recall-k, another cached dataset with the run's backbones, CSV output."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cli import app
from pcmpipe.config import TrainConfig
from pcmpipe.training.stage2 import train
from tests.synthetic_cache import write_modality, write_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    small = {"train": 64, "val": 16, "test": 16}
    write_synthetic_cache(root / "cache", images=small)
    write_synthetic_cache(
        root / "other", dataset="synth2", seed=0, images=small
    )  # same maps: another dataset, same "backbones"
    cfg = dict(
        dataset="synth", modalities="I,T", cache_root=str(root / "cache"), runs_root=str(root / "runs"), epochs=2,
        patience=2, batch_size=32, lr=2e-3, dim=32, progress=False, name="aim",
    )  # fmt: skip
    return root, train(TrainConfig.from_dict(cfg))


def _evaluate(run_dir, out, *args: str) -> dict:
    r = CliRunner().invoke(app, ["evaluate", str(run_dir), "--out", str(out), *args])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def test_recall_k_and_csv_beside_json(run, tmp_path):
    root, run_dir = run
    result = _evaluate(run_dir, tmp_path / "m.json", "--recall-k", "1,5,10", "--csv", str(tmp_path / "m.csv"))
    assert result["ks"] == [1, 5, 10] and set(result["instance"]["T->I"]) == {"r@1", "r@5", "r@10", "R-P"}
    assert result["instance"]["T->I"]["r@10"] >= result["instance"]["T->I"]["r@5"] >= result["instance"]["T->I"]["r@1"]
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    found = {(x["level"], x["direction"], x["metric"]): float(x["value"]) for x in rows}
    assert found["instance", "T->I", "r@10"] == pytest.approx(result["instance"]["T->I"]["r@10"], rel=1e-5)
    levels = [lv for lv in ("instance", "class") if lv in result]
    assert len(rows) == sum(len(v) for lv in levels for v in result[lv].values())
    bad = CliRunner().invoke(app, ["evaluate", str(run_dir), "--recall-k", "one"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output


def test_another_cached_dataset_with_the_runs_backbones(run, tmp_path):
    root, run_dir = run
    other = _evaluate(run_dir, tmp_path / "o.json", "--dataset", "synth2", "--cache-root", str(root / "other"))
    own = json.loads((run_dir / "test_metrics.json").read_text())
    assert other["dataset"] == "synth2"  # the same data under another name: the same numbers
    assert other["instance"]["T->I"]["r@1"] == pytest.approx(own["instance"]["T->I"]["r@1"], abs=1e-6)
    # features from another backbone are refused, not silently scored
    for m, key in (("I", "image_id"), ("T", "caption_id")):
        cols, feats = open_cache(cache_dir(root / "other", "synth2", m, "test")).read()
        links = {c: list(v) for c, v in cols.items() if c not in ("id", key)}
        write_modality(
            tmp_path / "c", "synth3", m, "test", key=key, links=links, ids=list(cols["id"]),
            features=feats["feat"], meta={"backbone": "another-encoder"},
        )  # fmt: skip
    r = CliRunner().invoke(app, ["evaluate", str(run_dir), "--dataset", "synth3", "--cache-root", str(tmp_path / "c")])
    assert r.exit_code == 2 and "extract it with the run's backbone" in r.output
