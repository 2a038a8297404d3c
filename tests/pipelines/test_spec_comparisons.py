"""Every table and figure of the shipped pipelines compares runs with one preprocessing (standardisation, PCMR
target and power reading, match level), unless the layout says it varies that setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcmpipe.pipelines.comparisons import compared_runs, mixed_comparisons
from pcmpipe.pipelines.spec import load_pipeline, pipeline_from_dict

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
FILES = sorted(PIPELINES.glob("*.yaml"))
DEMO = Path(__file__).resolve().parents[2] / "pcmpipe" / "pipelines" / "demo.yaml"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_no_shipped_table_mixes_two_preprocessings(path):
    assert mixed_comparisons(load_pipeline(path)) == []


LEVELS = ("instance", "image", "class")


@pytest.mark.parametrize("path", [*FILES, DEMO], ids=[*(f.stem for f in FILES), "demo"])
def test_a_title_names_only_the_match_level_its_table_shows(path):
    """A table shown at two levels (`levels`) names neither in its title: its rows say which is which. A title that
    names one level belongs to a table whose runs are all scored at it."""
    pipeline = load_pipeline(path)
    for layout in pipeline.tables:
        named = [lv for lv in LEVELS if f"{lv} match" in layout["title"] or f"{lv} level" in layout["title"]]
        shown = list(layout.get("levels") or [])
        if len(shown) > 1:
            assert named == [], layout["title"]
        elif named:
            runs = [pipeline.runs[n].train for n in compared_runs(layout) if n in pipeline.runs]
            assert runs and {r.match for r in runs} == set(named), layout["title"]


def test_fine_tuned_and_frozen_rows_share_the_standardisation():
    """Table 2's frozen rows (stage two) and fine-tuned rows (finetune) centre alike; so do Table 3's bi-modal A+C
    run (stage two: nothing to unfreeze) and the fine-tuned tri-modal runs it is compared with."""
    t2 = load_pipeline(PIPELINES / "table2_6_7_cub.yaml")
    assert {r.train.standardize for r in t2.runs.values()} == {"center"}
    assert {bool(r.finetune) for r in t2.runs.values()} == {True, False}
    t3 = load_pipeline(PIPELINES / "table3_cub_added_modality.yaml")
    assert t3.runs["cub-pcmc-AC-finetuned"].finetune == []
    assert {r.train.standardize for r in t3.runs.values()} == {"center"}


def _doc(second: dict, varies: list[str] | None = None) -> dict:
    table = {"kind": "directions", "title": "t", "metrics": ["r@1"], "columns": ["I->T"]}
    table["rows"] = [{"label": "a", "run": "a"}, {"label": "b", "run": "b"}]
    if varies:
        table["varies"] = varies
    return {
        "name": "p",
        "data": {"flickr8k": {"root": "data/flickr8k", "modalities": ["I", "T"]}},
        "defaults": {"dataset": "flickr8k", "modalities": ["I", "T"], "loss": "pcmr"},
        "runs": {"a": {}, "b": second},
        "tables": [table],
    }


def test_a_mixed_comparison_is_named_unless_the_layout_varies_it():
    p = pipeline_from_dict(_doc({"standardize": "none"}))
    assert compared_runs(p.tables[0]) == ["a", "b"]
    assert mixed_comparisons(p) == ["p: t: standardize differs: 'center' in a; 'none' in b"]
    assert mixed_comparisons(pipeline_from_dict(_doc({"standardize": "none"}, varies=["standardize"]))) == []
    # PCMR's readings count among PCMR runs only: a PCMC row ignores target and rho_on
    assert mixed_comparisons(pipeline_from_dict(_doc({"target": "projections"})))[0].startswith("p: t: target")
    assert mixed_comparisons(pipeline_from_dict(_doc({"loss": "pcmc", "rho_on": "norm"}))) == []


def test_the_plan_warns_about_a_mixed_comparison():
    from pcmpipe.pipelines.run import Note, run_pipeline

    notes = []
    run_pipeline(pipeline_from_dict(_doc({"standardize": "none"})), dry_run=True, on_event=notes.append)
    warned = [e.text for e in notes if isinstance(e, Note)]
    assert len(warned) == 1 and warned[0].startswith("warning: p: t: standardize differs")


def test_runs_on_different_datasets_are_compared_within_each_dataset():
    """The readings table puts Flickr8k (instance match) beside CUB (class match): not a mixed comparison; a
    difference between two runs of one dataset still is."""
    doc = _doc({"dataset": "cub", "match": "class"})
    doc["data"]["cub"] = {"root": "data/cub", "modalities": ["I", "T"]}
    assert mixed_comparisons(pipeline_from_dict(doc)) == []
    doc["runs"]["c"] = {"dataset": "cub", "match": "instance"}
    doc["tables"][0]["rows"].append({"label": "c", "run": "c"})
    assert mixed_comparisons(pipeline_from_dict(doc)) == ["p: t: match differs: 'class' in b; 'instance' in c"]
