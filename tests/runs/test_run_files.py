"""Damaged and crafted run folders: a run directory's or an export's config.json that is not what pcmpipe wrote is
one line from load_run, embed, search and evaluate (never a KeyError or TypeError), an export's weights never
name a file outside it, and evaluate scores an export as it scores its run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pcmpipe
from pcmpipe.cli import app
from pcmpipe.errors import UserError
from pcmpipe.runs.export import export_run
from pcmpipe.training.evaluate import evaluate_run

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    return export_run(trained["run"], tmp_path_factory.mktemp("exp") / "export").out


def _copy(folder: Path, where: Path) -> Path:
    return Path(shutil.copytree(folder, where / folder.name))


def _edit(folder: Path, change) -> None:
    """A crafted config.json, in a run without files.json (which would refuse any edit before the config is
    parsed: tests/training/test_run_manifest.py), so that what the config's validation says is tested."""
    path = folder / "config.json"
    value = change(json.loads(path.read_text()))
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    (folder / "files.json").unlink(missing_ok=True)


def _one_line(args: list) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert res.exit_code == 2, (args, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def _weights(config: dict, spec) -> dict:
    """The export's config with backbones.T.weights = spec."""
    return {**config, "backbones": {**config["backbones"], "T": {**config["backbones"]["T"], "weights": spec}}}


def _without(key: str):
    return lambda c: {k: v for k, v in c.items() if k != key}


def _set(key: str, value):
    return lambda c: {**c, key: value}


DEEP = "[" * 100_000 + "]" * 100_000
RUN_DAMAGE = {
    "a list": (lambda c: [c], "holds a JSON list"),
    "no config": (_without("config"), "config: Field required"),
    "config a string": (_set("config", "flickr8k"), "config: Input should be a valid dictionary"),
    "modalities an int": (lambda c: {**c, "config": {**c["config"], "modalities": 5}}, "config.modalities"),
    "caches a list": (_set("caches", [1]), "caches: Input should be a valid dictionary"),
    "tower of no kind": (_set("backbones", {"I": {"name": "x", "kind": "../../x"}}), "backbones.I.kind"),
    "nested 10^5 deep": (lambda c: DEEP, "nested"),
}
EXPORT_DAMAGE = {
    "a list": (lambda c: [c], "holds a JSON list"),
    "no backbones": (_without("backbones"), "backbones: Field required"),
    "no training_config": (_without("training_config"), "training_config: Field required"),
    "backbones a string": (_set("backbones", "clip"), "backbones: Input should be a valid dictionary"),
    "training_config an int": (_set("training_config", 5), "training_config: Input should be a valid dictionary"),
    "weights an int": (lambda c: _weights(c, 5), "backbones.T.weights: Input should be a valid string"),
    "nested 10^5 deep": (lambda c: DEEP, "nested"),
}


@pytest.mark.parametrize("kind", ["run", "export"])
def test_a_damaged_config_is_one_line_everywhere(trained, exported, tmp_path, kind):
    source = trained["run"] if kind == "run" else exported
    damage = RUN_DAMAGE if kind == "run" else EXPORT_DAMAGE
    for name, (change, fragment) in damage.items():
        folder = _copy(source, tmp_path / name.replace(" ", "_"))
        _edit(folder, change)
        with pytest.raises(UserError, match="config") as err:
            pcmpipe.load_run(folder)
        assert fragment in str(err.value) and "\n" not in str(err.value), (name, err.value)
        _one_line(["embed", folder, "--modality", "T", "--text", "x", "--out", tmp_path / "e"])
        _one_line(["search", folder, "--query", "x", "--from", "T", "--to", "I"])
        _one_line(["evaluate", folder])
        assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "weights",
    ["../../x.pkl", "/etc/passwd", "{outside}", "link.safetensors", "weightsfile", "sub/../../x.pkl", ".."],
)
def test_an_export_names_no_weights_outside_itself(exported, tmp_path, monkeypatch, weights):
    """A crafted config.json cannot make load_run open a file outside the export: by a relative or absolute path,
    through a symbolic link inside the folder, or through a bare name that a file in the working directory has
    (a weights string that names an existing file is read as a checkpoint)."""
    outside = tmp_path / "x.pkl"
    outside.write_bytes(b"not weights")
    (tmp_path / "weightsfile").write_bytes(b"not weights")
    folder = _copy(exported, tmp_path / "crafted")
    (folder / "link.safetensors").symlink_to(outside)
    monkeypatch.chdir(tmp_path)  # where "weightsfile" is a file
    spec = weights.format(outside=outside)
    _edit(folder, lambda c: _weights(c, spec))
    with pytest.raises(UserError, match="weights") as err:
        pcmpipe.load_run(folder)
    assert "backbones.T.weights" in str(err.value) and "\n" not in str(err.value)
    line = _one_line(["embed", folder, "--modality", "T", "--text", "x", "--out", tmp_path / "e"])
    assert "backbones.T.weights" in line


def test_an_export_keeps_its_own_files_and_known_weight_names(exported, tmp_path):
    """What an export may name: a file inside it (a fine-tuned tower; resolved, so a link inside the folder is
    fine too) and the weights names pcmpipe knows."""
    folder = _copy(exported, tmp_path / "ok")
    (folder / "tower.safetensors").write_bytes(b"")
    (folder / "alias.safetensors").symlink_to("tower.safetensors")
    for spec in ("tower.safetensors", "alias.safetensors", "random:3", "default", "openai", "hf:org/name"):
        _edit(folder, lambda c, spec=spec: _weights(c, spec))
        got = pcmpipe.load_run(folder).backbones["T"]["weights"]
        assert got == (str((folder / "tower.safetensors").resolve()) if spec.endswith(".safetensors") else spec)


def test_evaluate_scores_an_export_as_its_run(trained, exported):
    ours, theirs = evaluate_run(trained["run"], ks=(1, 5)), evaluate_run(exported, ks=(1, 5))
    assert theirs["instance"] == ours["instance"] and theirs["dataset"] == "flickr8k"
    res = CliRunner().invoke(app, ["evaluate", str(exported), "--recall-k", "1"], env=ENV)
    assert res.exit_code == 0 and "T->I" in res.output, res.output


def test_an_export_is_scored_on_another_cache_only_with_its_backbones(trained, exported, tmp_path):
    """--dataset/--cache-root on an export: the other cache must come from the export's backbones and weights."""
    from extraction import extract

    other = tmp_path / "cache"
    extract(
        "flickr8k", trained["data"], modalities=["I", "T"], splits=["test"], device="cpu", workers=0,
        backbones={"image": "clip-tiny-image", "text": "clip-tiny-text"},
        weights={"image": "random:1", "text": "random:0"}, cache_root=other,
    )  # fmt: skip
    with pytest.raises(
        UserError, match=r"extracted with clip-tiny-image random:1 .*, the run's I with clip-tiny-image"
    ):
        evaluate_run(exported, dataset="flickr8k", cache_root=str(other))
    assert os.path.isdir(other / "flickr8k" / "I" / "test")
