"""Pipeline files: every YAML loads into typed configs; `pcmpipe run` does only what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from synthetic_cache import write_synthetic_cache
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.config import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.pipelines.events import PlanReady, StepFinished, StepStarted
from pcmpipe.pipelines.plan import make_plan
from pcmpipe.pipelines.run import run_pipeline
from pcmpipe.pipelines.spec import load_pipeline, pipeline_from_dict
from pcmpipe.report.build import build_report
from pcmpipe.report.display import display_rows
from pcmpipe.training.events import RunFinished, TrainingStarted

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
FILES = sorted(PIPELINES.glob("*.yaml"))


def test_there_is_a_pipeline_per_paper_table_and_figure():
    names = {f.stem for f in FILES}
    assert {
        "table1_flickr8k",
        "table2_6_7_cub",
        "table3_cub_added_modality",
        "figure1_m_modalities",
        "table4_zero_shot",
        "table5_enrichment",
        "ablation_rho",
        "figure3_tsne",
    } <= names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_pipeline_file_loads(path):
    p = load_pipeline(path)
    assert p.name == path.stem and p.runs and p.tables
    for r in p.runs.values():
        assert isinstance(r.train, TrainConfig) and r.train.name == r.name
        assert r.train.runs_root == "cache/runs"
        if r.finetune:  # fine-tuned runs carry the fine-tuner's settings
            assert r.train.unfreeze == r.finetune and r.train.data_root == p.data[r.train.dataset].root


def test_a_run_shared_by_several_pipelines_is_the_same_run():
    """Table 5 reuses Table 1/2 runs, Figure 1 reuses Tables 1 and 3: same name must mean same fingerprint."""
    seen: dict[str, tuple[str, str]] = {}
    for path in FILES:
        for name, r in load_pipeline(path).runs.items():
            if name in seen:
                assert seen[name][0] == r.fingerprint, f"{name}: {path.stem} differs from {seen[name][1]}"
            seen[name] = (r.fingerprint, path.stem)


def test_paper_settings_in_the_files():
    t1 = load_pipeline(PIPELINES / "table1_flickr8k.yaml")
    r = t1.runs["flickr8k-pcmr-ITS"].train
    assert (r.loss, r.batch_size, r.lr, r.weight_decay, r.epochs, r.patience, r.rho) == (
        "pcmr",
        80,
        1e-4,
        0.2,
        50,
        5,
        1.0,
    )
    cub = load_pipeline(PIPELINES / "table2_6_7_cub.yaml")
    assert {r.train.batch_size for r in cub.runs.values()} == {128}
    assert cub.runs["cub-pcmc-ITAC-frozenimage"].finetune == ["text"]
    assert load_pipeline(PIPELINES / "ablation_rho.yaml").runs["flickr8k-pcmr-ITS-rho0"].train.rho == 0.0
    assert r.rho_on == "entries"  # Eq. 6's power on each residual entry (docs/conventions.md "PCMR power factor")


def test_plan_commands_spell_out_the_rho_settings(tmp_path):
    def commands(overrides):
        p = load_pipeline(PIPELINES / "ablation_rho.yaml", overrides=overrides, cache_root=str(tmp_path))
        return {s.target: s.command for s in make_plan(p) if s.kind == "train"}

    plain = commands([])
    assert "--rho" not in plain["flickr8k-pcmr-ITS"] and "--rho 0.0" in plain["flickr8k-pcmr-ITS-rho0"]
    assert all("--rho-on" not in c for c in plain.values())  # the default is not spelled out
    assert all("--rho-on norm" in c for c in commands(["rho_on=norm"]).values())


def test_overrides_and_roots():
    p = load_pipeline(
        PIPELINES / "table1_flickr8k.yaml", overrides=["epochs=2", "data.flickr8k.root=/d/f8k"], cache_root="/tmp/c"
    )
    assert all(
        r.train.epochs == 2 and r.train.cache_root == "/tmp/c" and r.train.runs_root == "/tmp/c/runs"
        for r in p.runs.values()
    )
    assert p.data["flickr8k"].root == "/d/f8k"
    assert load_pipeline(PIPELINES / "table1_flickr8k.yaml", roots=["/x"]).data["flickr8k"].root == "/x"
    f1 = load_pipeline(PIPELINES / "figure1_m_modalities.yaml", roots=["cub=/c", "flickr8k=/f"])
    assert (f1.data["cub"].root, f1.data["flickr8k"].root) == ("/c", "/f")
    with pytest.raises(UserError, match="DATASET=PATH"):
        load_pipeline(PIPELINES / "figure1_m_modalities.yaml", roots=["/x"])
    with pytest.raises(UserError, match="unknown training setting"):
        load_pipeline(PIPELINES / "table1_flickr8k.yaml", overrides=["epochz=2"])
    with pytest.raises(UserError, match="key=value"):
        load_pipeline(PIPELINES / "table1_flickr8k.yaml", overrides=["epochs"])


def test_mistakes_in_a_pipeline_are_one_line_user_errors(tmp_path):
    doc = yaml.safe_load((PIPELINES / "table1_flickr8k.yaml").read_text())
    bad_run = json.loads(json.dumps(doc))
    bad_run["tables"][0]["rows"][0]["run"] = "nope"
    with pytest.raises(UserError, match="'nope'"):
        pipeline_from_dict(bad_run)
    bad_kind = json.loads(json.dumps(doc))
    bad_kind["tables"][0]["kind"] = "pie"
    with pytest.raises(UserError, match="kind"):
        pipeline_from_dict(bad_kind)
    bad_loss = json.loads(json.dumps(doc))
    bad_loss["runs"]["flickr8k-pcmc-ITS"]["loss"] = "mse"
    with pytest.raises(UserError, match="flickr8k-pcmc-ITS.*loss"):
        pipeline_from_dict(bad_loss)
    res = CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "not found" in res.output and "Traceback" not in res.output


def _synthetic_pipeline(cache: Path) -> dict:
    return {
        "name": "synthcheck",
        "title": "synthetic check",
        "data": {
            "synth": {"root": str(cache / "raw-not-needed"), "modalities": ["I", "T", "S", "C"], "synthetic": True}
        },
        "defaults": {"dataset": "synth", "epochs": 2, "patience": 2, "batch_size": 32, "lr": 1e-3, "progress": False},
        "runs": {
            "s-pcmc": {"loss": "pcmc", "modalities": ["I", "T", "S"]},
            "s-pcmr": {"loss": "pcmr", "modalities": ["I", "T", "S", "C"], "match": "class"},
        },
        "evaluations": [
            {"kind": "enrichment", "run": "s-pcmr", "blocks": {"{}->I": ["T", "T+C"], "T->{}": ["I", "I+C"]}}
        ],
        "tables": [
            {
                "kind": "directions",
                "title": "t",
                "metrics": ["r@1"],
                "columns": ["I->T", "T->I"],
                "varies": ["match"],  # the two runs are matched at their own levels on purpose
                "rows": [{"label": "PCMC", "run": "s-pcmc"}, {"label": "PCMR", "run": "s-pcmr"}],
            },
            {
                "kind": "enrichment",
                "title": "e",
                "run": "s-pcmr",
                "blocks": {"{}->I": ["T", "T+C"], "T->{}": ["I", "I+C"]},
            },
        ],
    }


@pytest.mark.slow  # an end-to-end pipeline: two runs, an enrichment and the report
def test_run_trains_what_is_missing_then_reuses_everything(tmp_path):
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, "synth", with_class_modality=True, images={"train": 64, "val": 16, "test": 16})
    p = pipeline_from_dict(_synthetic_pipeline(cache), cache_root=str(cache))
    plan = make_plan(p)
    assert [(s.kind, s.status) for s in plan] == [
        ("extract", "cached"),
        ("train", "missing"),
        ("train", "missing"),
        ("enrichment", "missing"),
    ]
    events: list = []
    run_pipeline(p, dry_run=True, on_event=events.append)  # the plan only, reported as data
    assert [type(e) for e in events] == [PlanReady] and [s.kind for s in events[0].steps] == [s.kind for s in plan]
    assert not (cache / "runs" / "s-pcmc").exists()

    events.clear()
    steps = run_pipeline(p, on_event=events.append)
    ran = [s for s in steps if s.status == "done"]
    # the runs' own training events pass through as they are, between their step's start and finish
    pipeline_events = [e for e in events if isinstance(e, (PlanReady, StepStarted, StepFinished))]
    assert [type(e) for e in pipeline_events] == [PlanReady] + [StepStarted, StepFinished] * len(ran) and len(ran) == 3
    assert any(isinstance(e, TrainingStarted) for e in events) and any(isinstance(e, RunFinished) for e in events)
    assert [e.step for e in events if isinstance(e, StepFinished)] == ran
    runs = cache / "runs"
    assert (runs / "s-pcmc" / "test_metrics.json").is_file() and (runs / "_pipelines" / "synthcheck.json").is_file()
    enr = json.loads((runs / "s-pcmr" / "enrichment.json").read_text())
    assert enr["match"] == "class" and set(enr["r@1"]) == {"{}->I", "T->{}"}
    # the un-enriched cells are the plain directions: they equal the trainer's own test metrics
    test = json.loads((runs / "s-pcmr" / "test_metrics.json").read_text())["class"]
    assert enr["r@1"]["{}->I"]["T"] == pytest.approx(test["T->I"]["r@1"])
    assert enr["r@1"]["T->{}"]["I"] == pytest.approx(test["T->I"]["r@1"])
    stamp = (runs / "s-pcmc" / "test_metrics.json").stat().st_mtime_ns

    again = make_plan(pipeline_from_dict(_synthetic_pipeline(cache), cache_root=str(cache)))
    assert all(s.status == "cached" for s in again)
    run_pipeline(pipeline_from_dict(_synthetic_pipeline(cache), cache_root=str(cache)))
    assert (runs / "s-pcmc" / "test_metrics.json").stat().st_mtime_ns == stamp  # reused, not retrained

    # another setting -> another fingerprint: the plan says the run is missing (train refuses to overwrite it)
    changed = pipeline_from_dict(_synthetic_pipeline(cache), cache_root=str(cache), overrides=["seed=1"])
    assert [s.status for s in make_plan(changed) if s.kind == "train"] == ["missing", "missing"]

    # the report reads what the run wrote: the enrichment cell equals the file's value
    report = build_report(runs)
    sec = report.sections[0]
    table = next(t for t in sec.tables if t.title == "e")
    assert display_rows(table)[0][2][0] == f"{enr['r@1']['{}->I']['T']:.1f}"  # row {}->I, column "alone"
    assert any("SYNTHETIC" in line for line in sec.provenance)


def test_cli_dry_run_prints_the_plan(tmp_path):
    res = CliRunner().invoke(
        app, ["run", str(PIPELINES / "table1_flickr8k.yaml"), "--dry-run", "--cache-root", str(tmp_path / "c")]
    )
    assert res.exit_code == 0, res.output
    assert "missing" in res.output and "flickr8k-pcmr-ITS" in res.output and "pcmpipe train" in res.output
    assert not (tmp_path / "c").exists()  # a dry run writes nothing


def test_report_skips_a_run_of_another_config_under_the_same_name(tmp_path):
    """The pipeline planned s-pcmc with seed 0; a run trained with seed 1 sits under that name. The report
    leaves it out of the pipeline's table and says why, instead of showing its numbers as the pipeline's."""
    from pcmpipe.training.stage2 import train

    cache = tmp_path / "cache"
    write_synthetic_cache(cache, "synth", with_class_modality=True, images={"train": 32, "val": 8, "test": 8})
    doc = _synthetic_pipeline(cache)
    doc["runs"] = {"s-pcmc": doc["runs"]["s-pcmc"]}
    doc["evaluations"], doc["tables"] = [], doc["tables"][:1]
    doc["tables"][0]["rows"] = doc["tables"][0]["rows"][:1]
    p = pipeline_from_dict(doc, cache_root=str(cache))
    run_pipeline(p)
    assert "s-pcmc" not in build_report(cache / "runs").sections[0].missing_runs
    other = TrainConfig.from_dict({**p.runs["s-pcmc"].train.to_dict(), "seed": 1, "runs_root": str(tmp_path / "o")})
    (cache / "runs" / "s-pcmc").rename(tmp_path / "planned")
    train(other).rename(cache / "runs" / "s-pcmc")  # another config under the pipeline's run name
    sec = build_report(cache / "runs").sections[0]
    assert sec.missing_runs == {"s-pcmc"}
    assert display_rows(sec.tables[0])[0][2] == ["—", "—"]  # I->T and T->I: missing, not the other run's
    assert [line for line in sec.provenance if "skipped" in line] == [
        f"run s-pcmc skipped: its config fingerprint {_fingerprint_of(cache)[:12]} is not this pipeline's "
        f"{p.runs['s-pcmc'].fingerprint[:12]} (another run under the same name)"
    ]


def _fingerprint_of(cache: Path) -> str:
    return json.loads((cache / "runs" / "s-pcmc" / "config.json").read_text())["fingerprint"]


def test_a_cache_made_with_other_weights_is_not_cached_for_the_plan(tmp_path, one_thread):
    """The demo's random-weight features are not table 1's: the planner says so and extract refuses them."""
    from extraction import extract

    from pcmpipe.datasets.synthetic import synth

    root, cache = tmp_path / "flickr8k", tmp_path / "cache"
    synth("flickr8k", root, images=6, seed=1)
    tiny = {"image": "clip-tiny-image", "text": "clip-tiny-text"}
    extract("flickr8k", root, modalities=["I"], cache_root=cache, backbones=tiny, weights={"image": "random:0"},
            workers=0, batch_size=4, device="cpu")  # fmt: skip
    doc = {
        "name": "w",
        "data": {"flickr8k": {"root": str(root), "modalities": ["I", "T"], "backbones": {"image": "clip-tiny-image"}}},
        "runs": {"r": {"dataset": "flickr8k", "modalities": ["I", "T"], "epochs": 1}},
        "tables": [{"kind": "directions", "title": "t", "metrics": ["r@1"], "columns": ["I->T"],
                    "rows": [{"label": "x", "run": "r"}]}],
    }  # fmt: skip
    step = next(s for s in make_plan(pipeline_from_dict(doc, cache_root=str(cache))) if s.kind == "extract")
    assert step.status == "missing" and "I train was built with clip-tiny-image (random:0)" in step.detail
    assert "the plan names clip-tiny-image (default)" in step.detail
    same = {**doc, "data": {"flickr8k": {**doc["data"]["flickr8k"], "weights": {"image": "random:0"}}}}
    step = next(s for s in make_plan(pipeline_from_dict(same, cache_root=str(cache))) if s.kind == "extract")
    assert "stale" not in step.detail  # T is missing, I is this plan's
