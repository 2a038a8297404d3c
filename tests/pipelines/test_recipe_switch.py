"""`pcmpipe run --recipe paper` (or `recipe: paper` in the file) trains every run from the paper's literal text,
under its own runs root; without it the runs keep pcmpipe's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.config.paper_recipe import PAPER_SETTINGS
from pcmpipe.errors import UserError
from pcmpipe.pipelines.comparisons import mixed_comparisons
from pcmpipe.pipelines.run import make_plan
from pcmpipe.pipelines.spec import load_pipeline, pipeline_from_dict

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_recipe_paper_sets_the_literal_text_and_its_own_runs_root():
    ours = load_pipeline(PIPELINES / "table2_6_7_cub.yaml")
    paper = load_pipeline(PIPELINES / "table2_6_7_cub.yaml", recipe="paper")
    assert PAPER_SETTINGS == {"rho_on": "norm", "target": "projections", "standardize": "none"}
    assert paper.recipe == "paper" and paper.record()["recipe"] == "paper" and ours.recipe == "ours"
    for name, run in paper.runs.items():
        assert {k: getattr(run.train, k) for k in PAPER_SETTINGS} == PAPER_SETTINGS, name
        assert run.train.runs_root == "cache/runs-paper" and run.fingerprint != ours.runs[name].fingerprint
        assert (run.train.lr, run.train.epochs) == (ours.runs[name].train.lr, ours.runs[name].train.epochs)
    assert {r.train.standardize for r in ours.runs.values()} == {"center"}
    assert mixed_comparisons(paper) == []  # fine-tuned and frozen rows: uncentred alike
    moved = load_pipeline(
        PIPELINES / "table1_flickr8k.yaml", recipe="paper", cache_root="/x", overrides=["rho_on=entries"]
    )
    assert {r.train.runs_root for r in moved.runs.values()} == {"/x/runs-paper"}
    assert {r.train.rho_on for r in moved.runs.values()} == {"entries"}  # --set still wins


def test_the_file_key_selects_it_and_a_wrong_value_is_one_line():
    doc = {
        "recipe": "paper",
        "data": {"flickr8k": {"root": "d", "modalities": ["I", "T"]}},
        "runs": {"a": {"dataset": "flickr8k", "modalities": ["I", "T"], "loss": "pcmr"}},
        "tables": [{"kind": "learning", "title": "t", "runs": ["a"]}],
    }
    assert pipeline_from_dict(doc).runs["a"].train.target == "projections"
    with pytest.raises(UserError) as e:
        pipeline_from_dict({**doc, "recipe": "literal"})
    assert "recipe" in str(e.value) and "\n" not in str(e.value)


def test_cli_dry_run_with_the_papers_recipe(tmp_path):
    res = CliRunner().invoke(
        app,
        ["run", "table1_flickr8k", "--recipe", "paper", "--dry-run", "--cache-root", str(tmp_path / "c")],
    )
    assert res.exit_code == 0 and "flickr8k-pcmr-ITS" in res.output, res.output
    assert not (tmp_path / "c").exists()
    # the printed plan trains into the paper's own runs root, not the cache's runs/ (wide: one command a line)
    wide = CliRunner().invoke(
        app,
        ["run", "table1_flickr8k", "--recipe", "paper", "--dry-run", "--cache-root", str(tmp_path / "c")],
        env={"COLUMNS": "400"},
    )
    assert f"--runs-root {tmp_path / 'c' / 'runs-paper'}" in wide.output, wide.output
    assert f"--runs-root {tmp_path / 'c' / 'runs'} " not in wide.output
    # the plan's commands train what the plan names: the paper's settings spelled out
    p = load_pipeline("table1_flickr8k", recipe="paper", cache_root=str(tmp_path / "c"))
    pcmr = next(s.command for s in make_plan(p) if s.target == "flickr8k-pcmr-ITS")
    assert "--standardize none" in pcmr and "--target projections" in pcmr and "--rho-on norm" in pcmr
    assert f"--runs-root {tmp_path / 'c' / 'runs-paper'}" in pcmr
