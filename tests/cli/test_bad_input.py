"""Careless input through the real CLI: each mistake is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.pipelines.spec import SPECS

ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


def one_line_error(*args, fragment: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert res.exit_code == 2, (args, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], (args, res.stderr)
    assert "Traceback" not in res.output
    return lines[0]


def _pipeline(tmp_path: Path, **data_changes) -> Path:
    doc = yaml.safe_load((SPECS / "table1_flickr8k.yaml").read_text())
    doc["data"]["flickr8k"].update(data_changes)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


TRAIN = ["train", "--dataset", "ds", "--modalities", "I,T"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([*TRAIN, "--threads", "100000"], "--threads must be <= "),
        ([*TRAIN, "--set", "dim=1.0e+8"], "--dim must be <= 65536"),
        (["download", "flickr8k", "--root", "{tmp}/dl", "--retries", "-1"], "--retries must be between 0 and"),
        (["download", "flickr8k", "--root", "{tmp}/dl", "--base-url", "not a url"], "is not a URL"),
        (["synth", "flickr8k", "--out", "{tmp}/s", "--images", "1000000000"], "--images for flickr8k must be <="),
    ],
)
def test_bad_values_are_one_line(tmp_path, args, fragment):
    one_line_error(*[a.format(tmp=tmp_path) for a in args], fragment=fragment)
    assert not (tmp_path / "dl").exists() and not (tmp_path / "s").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"modalities": 5}, "data.flickr8k.modalities must list modality names"),
        ({"extract": {"batchsize": 8}}, "unknown extract option batchsize; did you mean batch_size?"),
        ({"extract": {"batch_size": "big"}}, "batch_size='big' has the wrong type"),
        ({"extract": {"workers": True}}, "workers=True has the wrong type"),
        ({"extract": {"dataset_options": {"class_vectors": "mean"}}}, "unknown option class_vectors"),
    ],
)
def test_bad_pipeline_data_fails_at_dry_run(tmp_path, change, fragment):
    one_line_error("run", _pipeline(tmp_path, **change), "--dry-run", "--cache-root", tmp_path, fragment=fragment)


def test_good_extract_options_pass_the_check(tmp_path):
    from pcmpipe.pipelines.spec import load_pipeline

    extract = {"batch_size": 8, "fmt": "hdf5", "workers": 0, "max_padding": 0, "splits": ["train"]}
    assert load_pipeline(_pipeline(tmp_path, extract=extract)).data["flickr8k"].options["extract"] == extract


LATIN1 = "caf\xe9".encode("latin-1")  # 0xe9: 'é' in Latin-1, an invalid start byte in UTF-8


def test_latin1_files_name_the_file_and_the_byte(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"epochs: 2\nname: " + LATIN1 + b"\n")
    line = one_line_error("train", "--config", config, fragment=f"config file {config} is not UTF-8")
    assert "byte 0xe9 at offset 19" in line
    pipeline = tmp_path / "p.yaml"
    pipeline.write_bytes(b"# " + LATIN1 + b"\n" + _pipeline(tmp_path).read_bytes())
    line = one_line_error("run", pipeline, "--dry-run", fragment=f"pipeline file {pipeline} is not UTF-8")
    assert "offset 5" in line
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbfa\n" + LATIN1 + b"\n")  # BOM first: offsets count it
    args = ["import-features", "E", "--dataset", "ds", "--split", "train", "--npy", tmp_path / "x.npy"]
    line = one_line_error(*args, "--ids", tmp_path / "ids.txt", "--cache-root", tmp_path / "c", fragment="not UTF-8")
    assert "offset 8" in line and not (tmp_path / "c" / "ds" / "E").exists()
