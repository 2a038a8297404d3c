"""A settings YAML (`--config`), a pipeline file or a `--set` value nested 10^5 deep, an alias bomb or a recursive
alias: one line and exit code 2 from the real CLI, before any work (it was a RecursionError traceback, or
minutes of validating 10^7 expanded values)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.config import merge_settings
from pcmpipe.errors import UserError
from pcmpipe.pipelines.spec import load_pipeline

ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}
DEEP = "epochs: " + "[" * 100_000 + "]" * 100_000
# 9^7 = 4.8M strings: under readback's general bound, far over what a settings file or a pipeline holds
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh")
)
RECURSIVE = "modalities: &m [I, *m]\n"
CASES = {"deep": (DEEP, "is nested too deeply"), "bomb": (BOMB, "expands to more than 100,000 values"),
         "recursive": (RECURSIVE, "refers to itself")}  # fmt: skip


def one_line(args: list[str], fragment: str) -> None:
    res = CliRunner().invoke(app, args, env=ENV)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (res.output, res.exception)


@pytest.mark.parametrize("case", list(CASES))
def test_settings_yaml(tmp_path, case):
    text, fragment = CASES[case]
    (tmp_path / "c.yaml").write_text(text)
    one_line(["train", "--config", str(tmp_path / "c.yaml")], f"config file {tmp_path / 'c.yaml'} {fragment}")
    with pytest.raises(UserError, match=fragment):
        merge_settings(tmp_path / "c.yaml")


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_file(tmp_path, case):
    text, fragment = CASES[case]
    (tmp_path / "p.yaml").write_text(text)
    one_line(["run", str(tmp_path / "p.yaml"), "--dry-run"], f"pipeline file {tmp_path / 'p.yaml'} {fragment}")
    with pytest.raises(UserError, match=fragment):
        load_pipeline(tmp_path / "p.yaml")


def test_set_value_nested_too_deeply():
    one_line(["train", "--dataset", "d", "--modalities", "I,T", "--set", "lr=" + "[" * 100_000], "nested too deeply")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('lr: "\\U0011FFFF"', "is not valid YAML: chr() arg not in range"),  # found by fuzzing
        ("epochs: 2001-13-45", "is not valid YAML: month must be in 1..12"),
        ("epochs: " + "1" * 5000, "is not valid YAML: Exceeds the limit (4300 digits)"),
    ],
    ids=["escape", "date", "digits"],
)
def test_values_yaml_cannot_construct_are_one_line(tmp_path, text, fragment):
    (tmp_path / "c.yaml").write_text(text)
    one_line(["train", "--config", str(tmp_path / "c.yaml")], fragment)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"modalities": True}, "setting modalities=True has the wrong type"),  # found by fuzzing
        ({"finetune": True}, "finetune may list image, text, got True"),
        ({"dataset": []}, "trains on [] but `data` has no such dataset"),  # found by fuzzing: unhashable
    ],
    ids=["modalities", "finetune", "dataset"],
)
def test_pipeline_run_settings_of_the_wrong_type_are_one_line(tmp_path, change, fragment):
    import yaml

    from pcmpipe.pipelines.spec import SPECS

    doc = yaml.safe_load((SPECS / "table1_flickr8k.yaml").read_text())
    doc["runs"][next(iter(doc["runs"]))].update(change)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    one_line(["run", str(tmp_path / "p.yaml"), "--dry-run"], fragment)


def test_pipeline_top_level_of_the_wrong_type_is_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text("name: p\ndata: a string\nruns: {a: {}}\ntables: [{kind: [x]}]\n")
    one_line(["run", str(tmp_path / "p.yaml"), "--dry-run"], "data: Input should be a valid dictionary")


def test_pipeline_evaluation_naming_a_list_as_its_run_is_one_line(tmp_path):
    import yaml

    from pcmpipe.pipelines.spec import SPECS

    doc = yaml.safe_load((SPECS / "table1_flickr8k.yaml").read_text())
    doc["evaluations"] = [{"kind": "zeroshot", "run": ["a"]}]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    one_line(["run", str(tmp_path / "p.yaml"), "--dry-run"], "evaluation 1 refers to run ['a'], not defined")
