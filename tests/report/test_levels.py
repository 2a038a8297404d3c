"""Both match levels where the paper is silent: each run at class and instance level beside the paper's numbers,
the level closer to the paper marked on real data, nothing marked on synthetic data."""

from __future__ import annotations

import json

from pcmpipe.report.levels import CLOSEST, build_levels
from pcmpipe.report.results import load_runs

LAYOUT = {
    "kind": "directions",
    "title": "t7",
    "paper": "table7_cub_r@1",
    "paper_path": "rows",
    "metrics": ["r@1"],
    "columns": ["I->T", "T->I"],
    "rows": [{"label": "PCMC frozen", "run": "r", "paper_row": "PCMC frozen"}],
    "levels": ["class", "instance"],
}


def _runs(tmp_path):
    d = tmp_path / "runs" / "r"
    d.mkdir(parents=True)
    cfg = {"name": "r", "dataset": "cub", "modalities": ["I", "T"], "match": "class", "cache_root": str(tmp_path)}
    (d / "config.json").write_text(json.dumps({"config": cfg, "fingerprint": "f" * 64}))
    test = {
        "match": "class",
        "class": {"I->T": {"r@1": 80.0}, "T->I": {"r@1": 90.0}},
        "instance": {"I->T": {"r@1": 47.0}, "T->I": {"r@1": 31.0}},  # the paper prints 48.0 / 29.9
    }
    (d / "test_metrics.json").write_text(json.dumps(test))
    return load_runs(tmp_path / "runs")


def test_each_run_at_both_levels_and_the_closer_one_marked(tmp_path):
    table = build_levels(LAYOUT, _runs(tmp_path), None)
    rows = {r.label: [c.ours for c in r.cells] for r in table.rows if r.kind == "run"}
    assert rows == {
        "PCMC frozen (class level)": [80.0, 90.0],
        f"PCMC frozen (instance level, {CLOSEST})": [47.0, 31.0],
    }
    assert all(c.paper == p for r in table.rows if r.kind == "run" for c, p in zip(r.cells, (48.0, 29.9)))
    assert "mean |ours − paper| per level: class 46.0, instance 1.1 points" in table.notes[-1]


def test_nothing_marked_on_synthetic_data_and_one_level_is_the_plain_table(tmp_path):
    runs = _runs(tmp_path)
    table = build_levels(LAYOUT, runs, "synthetic data")
    assert not any(CLOSEST in r.label for r in table.rows) and table.delta_withheld == "synthetic data"
    assert "only be told on real data" in table.notes[-1]
    plain = build_levels({**LAYOUT, "levels": None}, runs, None)
    assert [r.label for r in plain.rows if r.kind == "run"] == ["PCMC frozen"]
    assert [c.ours for c in plain.rows[-1].cells] == [80.0, 90.0]  # the run's own (class) level


def _flickr_run(tmp_path, enrichment):
    d = tmp_path / "runs" / "f"
    d.mkdir(parents=True)
    cfg = {"name": "f", "dataset": "flickr8k", "modalities": ["I", "T", "S"], "cache_root": str(tmp_path)}
    (d / "config.json").write_text(json.dumps({"config": cfg, "fingerprint": "f" * 64}))
    (d / "test_metrics.json").write_text(json.dumps({"instance": {}, "image": {}}))
    (d / "enrichment.json").write_text(json.dumps(enrichment))
    return load_runs(tmp_path / "runs")


ENRICH = {
    "kind": "enrichment",
    "title": "t5",
    "paper": "table5_enrichment_r@1/Flickr8k",
    "run": "f",
    "blocks": {"{}->T": ["I", "I+S"]},
    "levels": ["instance", "image"],
}


def test_enrichment_at_caption_and_image_level_with_the_closer_marked(tmp_path):
    """Table 5's I+S cells: the fused rows are spoken captions, so the level decides which captions match."""
    r1 = {"instance": {"{}->T": {"I": 66.0, "I+S": 93.0}}, "image": {"{}->T": {"I": 66.0, "I+S": 99.5}}}
    runs = _flickr_run(tmp_path, {"match": "instance", "r@1": r1["instance"], "levels": r1})
    table = build_levels(ENRICH, runs, None)
    rows = {r.label: [c.ours for c in r.cells] for r in table.rows if r.kind == "run"}
    assert rows == {
        f"{{}}->T  ({{}} = I…) (instance level, {CLOSEST})": [66.0, 93.0],  # the paper: 66.8, 94.0
        "{}->T  ({} = I…) (image level)": [66.0, 99.5],
    }
    assert any(n.startswith("image level: any item of the query's image") for n in table.notes)


def test_an_enrichment_file_from_before_levels_fills_its_own_level_only(tmp_path):
    runs = _flickr_run(tmp_path, {"match": "instance", "r@1": {"{}->T": {"I": 66.0, "I+S": 93.0}}})
    rows = {r.label: [c.ours for c in r.cells] for r in build_levels(ENRICH, runs, None).rows}
    assert rows["{}->T  ({} = I…) (image level)"] == [None, None]  # never the instance number under image
    assert [v for k, v in rows.items() if "instance level" in k] == [[66.0, 93.0]]
