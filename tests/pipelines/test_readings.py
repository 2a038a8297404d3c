"""The readings pipeline (pipelines/readings.yaml): one setting changed at a time around the defaults, at 3
seeds, on two datasets, and its `readings` table of mean ± spread over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean, stdev

import pytest
from rich.console import Console
from synthetic_cache import write_synthetic_cache

from pcmpipe.errors import UserError
from pcmpipe.pipelines.comparisons import compared_runs, mixed_comparisons
from pcmpipe.pipelines.run import run_pipeline
from pcmpipe.pipelines.spec import load_pipeline, pipeline_from_dict
from pcmpipe.report.build import build_report
from pcmpipe.report.display import display_rows
from pcmpipe.report.render.html import report_html
from pcmpipe.report.render.markdown import report_markdown
from pcmpipe.report.render.terminal import print_report
from pcmpipe.report.seeds import seed_cell

READINGS = ("rho_on", "target", "standardize", "cached_views")


def test_the_grid_changes_one_reading_at_a_time_around_the_defaults_at_three_seeds():
    p = load_pipeline("readings")
    (layout,) = p.tables
    assert set(layout["varies"]) == set(READINGS) and mixed_comparisons(p) == []
    assert set(compared_runs(layout)) == set(p.runs)  # every run is in the table
    default, *others = layout["rows"]
    for column in layout["columns"]:
        base = [p.runs[n].train for n in default["runs"][column]]
        assert [c.seed for c in base] == [0, 1, 2]
        assert {tuple(getattr(c, k) for k in READINGS) for c in base} == {("entries", "shared", "center", True)}
        assert len({c.dataset for c in base}) == 1
        for row in others:
            cfgs = [p.runs[n].train for n in row["runs"][column]]
            assert [c.seed for c in cfgs] == [0, 1, 2]
            for cfg, ref in zip(cfgs, base):
                changed = [k for k in READINGS if getattr(cfg, k) != getattr(ref, k)]
                rest = {k: v for k, v in cfg.to_dict().items() if k not in (*READINGS, "name")}
                assert len(changed) == 1 and rest == {k: v for k, v in ref.to_dict().items() if k in rest}
    # the seed-0 defaults are Table 1's and Table 2's own PCMR runs, reused
    table1 = load_pipeline("table1_flickr8k").runs["flickr8k-pcmr-ITS"]
    assert p.runs["flickr8k-pcmr-ITS"].fingerprint == table1.fingerprint
    cub = load_pipeline("table2_6_7_cub").runs["cub-pcmr-ITAC-frozen"]
    assert p.runs["cub-pcmr-ITAC-frozen"].fingerprint == cub.fingerprint


def test_a_cell_is_the_mean_and_sample_spread_of_its_seeds_or_empty():
    cell = seed_cell([10.0, 12.0, 14.0])
    assert (cell.ours, cell.spread) == (12.0, 2.0)
    assert seed_cell([10.0, None]).ours is None and seed_cell([]).ours is None
    assert seed_cell([7.0]).spread is None


def _doc(cache: Path, rows: dict[str, dict], seeds: list[int]) -> dict:
    runs = {f"{label}-s{s}": {**settings, "seed": s} for label, settings in rows.items() for s in seeds}
    return {
        "name": "readcheck",
        "data": {"synth": {"root": str(cache / "raw-not-needed"), "modalities": ["I", "T", "S"], "synthetic": True}},
        "defaults": {
            "dataset": "synth",
            "modalities": ["I", "T", "S"],
            "loss": "pcmr",
            "epochs": 2,
            "patience": 2,
            "batch_size": 16,
            "lr": 1e-3,
            "progress": False,
        },  # fmt: skip
        "runs": runs,
        "tables": [
            {
                "kind": "readings",
                "title": "r",
                "varies": ["rho_on"],
                "metrics": ["r@1", "r@5"],
                "columns": ["synth"],
                "rows": [{"label": label, "runs": {"synth": [f"{label}-s{s}" for s in seeds]}} for label in rows],
            }
        ],
    }


def test_a_readings_row_must_map_columns_to_lists_of_runs(tmp_path):
    doc = _doc(tmp_path, {"default": {}}, [0, 1])
    doc["tables"][0]["rows"][0]["runs"] = {"other": ["default-s0"]}
    with pytest.raises(UserError, match="runs must map columns"):
        pipeline_from_dict(doc)
    doc["tables"][0]["rows"][0]["runs"] = {"synth": ["default-s0", "nosuch"]}
    with pytest.raises(UserError, match="names run 'nosuch'"):
        pipeline_from_dict(doc)


@pytest.mark.slow  # four short trainings and the report
def test_the_readings_table_is_the_mean_and_spread_of_each_settings_runs(tmp_path):
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, "synth", images={"train": 48, "val": 12, "test": 12})
    p = pipeline_from_dict(_doc(cache, {"default": {}, "norm": {"rho_on": "norm"}}, [0, 1]), cache_root=str(cache))
    run_pipeline(p)
    report = build_report(cache / "runs")
    (table,) = [t for s in report.sections for t in s.tables if t.title == "r"]
    dirs = [f"{a}->{b}" for a in "ITS" for b in "ITS" if a != b]
    rows = display_rows(table)
    assert [label for _, label, _ in rows] == ["default", "norm"]
    for (_, label, cells), row in zip(rows, table.rows):
        for k, metric in enumerate(["r@1", "r@5"]):
            per_run = []
            for seed in (0, 1):
                test = json.loads((cache / "runs" / f"{label}-s{seed}" / "test_metrics.json").read_text())
                per_run.append(mean(test["instance"][d][metric] for d in dirs))
            assert row.cells[k].ours == pytest.approx(mean(per_run))
            assert row.cells[k].spread == pytest.approx(stdev(per_run))
            assert cells[k] == f"{mean(per_run):.1f} ± {stdev(per_run):.1f}"
    # every renderer shows the spread beside the mean
    console = Console(record=True, width=200)
    print_report(report, console)
    for text in (console.export_text(), report_markdown(report), report_html(report)):
        assert rows[0][2][0] in text
