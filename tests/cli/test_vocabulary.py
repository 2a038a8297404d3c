"""One CLI vocabulary: one spelling per concept (old ones hidden but accepted), plain boolean flags, choices
shown as choices, and the shipped pipelines runnable by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.pipelines.spec import SPECS, load_pipeline, shipped_pipelines

ROOT = Path(__file__).resolve().parents[2]
HELP_ENV = {"COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
COMMANDS = [c.name for c in app.registered_commands]


def _help(*command: str) -> str:
    res = CliRunner().invoke(app, [*command, "--help"], env=HELP_ENV)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_boolean_flags_take_no_value_in_any_help(command):
    assert "<bool>" not in _help(*([command] if command else []))


def test_one_spelling_per_concept_in_the_help():
    extract, finetune = _help("extract"), _help("finetune")
    assert "--split " in extract and "--splits" not in extract
    assert "--root " in finetune and "--data-root" not in finetune
    for command in COMMANDS:
        text = _help(command)
        assert "--splits" not in text and "--data-root" not in text, command


@pytest.mark.parametrize(
    "command, shown",
    [
        ("train", ["<pcmc|pcmr>", "<instance|class>", "<learnable|fixed>", "<auto|cpu|cuda>"]),
        ("finetune", ["<pcmc|pcmr>", "<instance|class>", "<auto|cpu|cuda>", "--augment", "--no-augment"]),
        ("evaluate", ["<instance|class>", "<auto|cpu|cuda>", "[default: auto]"]),
        ("extract", ["<parquet|hdf5>", "<auto|cpu|cuda|cuda:N>"]),
        ("import-features", ["<parquet|hdf5>"]),
        ("synth", ["<tones|espeak|auto>"]),
    ],
)
def test_choices_are_shown_as_choices(command, shown):
    text = _help(command)
    for item in shown:
        assert item in text, (command, item)


def test_old_spellings_still_work(tmp_path):
    from pcmpipe.datasets.synthetic import synth

    synth("flickr8k", tmp_path / "f", images=6)
    for flag in ("--split", "--splits"):  # a bad value proves the option was read, before any backbone loads
        res = CliRunner().invoke(
            app,
            [
                "extract",
                "--dataset",
                "flickr8k",
                "--root",
                str(tmp_path / "f"),
                flag,
                "val,bogus",
                "--cache-root",
                str(tmp_path / "c"),
            ],
            env={"COLUMNS": "400"},
        )
        assert res.exit_code == 2 and "unknown split 'bogus'" in res.stderr, (flag, res.output)
    for flag in ("--root", "--data-root"):
        res = CliRunner().invoke(
            app, ["finetune", flag, str(tmp_path / "nope"), "--cache-root", str(tmp_path / "c")], env={"COLUMNS": "400"}
        )
        assert res.exit_code == 2 and str(tmp_path / "nope") in res.stderr, (flag, res.output)
    res = CliRunner().invoke(app, ["finetune", "--cache-root", str(tmp_path / "c")], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "pass --root" in res.stderr


def test_shipped_pipelines_run_by_name_and_by_path(tmp_path, monkeypatch):
    assert (ROOT / "pipelines").is_symlink() and (ROOT / "pipelines").resolve() == SPECS.resolve()
    assert "table1_flickr8k" in shipped_pipelines()
    by_name, by_path = load_pipeline("table1_flickr8k"), load_pipeline(ROOT / "pipelines" / "table1_flickr8k.yaml")
    assert by_name.name == by_path.name and set(by_name.runs) == set(by_path.runs)
    assert by_name.command == by_path.command == "pcmpipe run table1_flickr8k"
    res = CliRunner().invoke(
        app,
        ["run", "table5_enrichment", "--dry-run", "--cache-root", str(tmp_path / "c"), "--set", "epochs=2"],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 0, res.output
    assert "pcmpipe run table5_enrichment" in res.output and not (tmp_path / "c").exists()
    # a file of the user's own, outside the package, is named by its path
    own = tmp_path / "mine.yaml"
    own.write_text((SPECS / "table1_flickr8k.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert load_pipeline("mine.yaml").command == "pcmpipe run mine.yaml"


def test_run_names_what_exists(tmp_path):
    res = CliRunner().invoke(app, ["run", "demo", "--dry-run"], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "run `pcmpipe demo`" in res.stderr
    res = CliRunner().invoke(app, ["run", "tabel1", "--dry-run"], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "table1_flickr8k" in res.stderr and "Traceback" not in res.output


def test_the_demo_plan_advertises_a_command_that_exists(tmp_path):
    from pcmpipe.pipelines.demo import demo_pipeline
    from pcmpipe.pipelines.plan import make_plan
    from pcmpipe.pipelines.spec import pipeline_from_dict

    p = pipeline_from_dict(demo_pipeline(tmp_path / "data", tmp_path / "cache", fast=True), path=None)
    p.command = "pcmpipe demo --out x --fast"  # what run_demo sets
    commands = [s.command for s in make_plan(p) if s.kind in ("zeroshot", "enrichment")]
    assert commands and all("`pcmpipe demo --out x --fast`" in c for c in commands)
