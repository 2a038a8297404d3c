"""Your own data as a table (CSV, TSV, JSONL, Parquet) described by dataset.yaml: records with the declared ids
and links, the same records whatever the file type, extraction through the paper's path (errors.jsonl,
--strict, the cache, resume), and a text-only table that trains end to end with `pcmpipe train`."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from extraction import extract
from typer.testing import CliRunner
from user_data import caption_rows, write_csv

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import errors_in
from pcmpipe.cli import app
from pcmpipe.datasets import open_dataset
from pcmpipe.errors import UserError

SPEC = """
files: {files}
split_column: split
modalities:
  I: {{kind: image, column: file, id: image_id}}
  T: {{kind: text, column: caption, id: caption_id}}
  S: {{kind: audio, column: wav, id: caption_id}}
  A: {{kind: vector, column: attrs, id: image_id}}
"""
TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mydata")
    rows = caption_rows(root)
    rows[0]["file"] = "img/missing.jpg"  # image im0: no such file
    (root / "img" / "5.jpg").write_bytes(b"not a jpeg")  # image im5: unreadable
    write_csv(root / "captions.csv", rows)
    (root / "dataset.yaml").write_text(SPEC.format(files="captions.csv"))
    return root


def test_records_carry_declared_ids_and_links(table):
    ds = open_dataset("mydata", table)
    assert ds.modalities == ("I", "T", "S", "A")
    assert [ds.kind(m) for m in ds.modalities] == ["image", "text", "audio", None]
    assert ds.key("T") == "caption_id" and ds.key("I") == "image_id"
    images = ds.records("I", "train")
    assert [r.id for r in images] == ["im0", "im1", "im2"]  # one record per image, not per caption row
    assert images[1].links == {"image_id": "im1"} and images[1].path == table / "img" / "1.jpg"
    caps = ds.records("T", "test")
    assert [r.id for r in caps] == ["im4#0", "im4#1", "im5#0", "im5#1"]
    assert caps[0].links == {"caption_id": "im4#0", "image_id": "im4"}  # a caption names its image
    vec = ds.records("A", "val")[0].vector
    assert vec is not None and vec.dtype == np.float32 and vec.shape == (4,)


def test_every_file_type_gives_the_same_records(table, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = caption_rows(tmp_path, media=False)
    rows[0]["file"] = "img/missing.jpg"
    want = {(m, s): open_dataset("mydata", table).records(m, s) for m in "IT" for s in ("train", "test")}
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r["split"], []).append({k: v for k, v in r.items() if k != "split"})
    forms = {
        "tsv": "{train: train.tsv, val: val.tsv, test: test.tsv}",
        "jsonl": "{train: train.jsonl, val: val.jsonl, test: test.jsonl}",
        "parquet": "{train: '*train.parquet', val: '*val.parquet', test: '*test.parquet'}",
    }
    for split, part in by_split.items():
        write_csv(tmp_path / f"{split}.tsv", part, delimiter="\t")
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        pq.write_table(pa.Table.from_pylist(part), tmp_path / f"{split}.parquet")
    for form, files in forms.items():
        (tmp_path / "dataset.yaml").write_text(SPEC.format(files=files).replace("split_column: split\n", ""))
        ds = open_dataset("mydata", tmp_path)
        for (m, s), records in want.items():
            got = ds.records(m, s)
            assert [(r.id, r.links, r.text) for r in got] == [(r.id, r.links, r.text) for r in records], form
            assert [r.path.relative_to(tmp_path) if r.path else None for r in got] == [
                r.path.relative_to(table) if r.path else None for r in records
            ], form


def test_extract_skips_and_lists_bad_inputs_resumes_and_refuses_strict(table, tmp_path, one_thread):
    cache = tmp_path / "cache"
    kw = dict(backbones=TINY, weights=RANDOM, cache_root=cache, workers=0, device="cpu")
    summary = extract("mydata", table, **kw)
    by_part = {(p.modality, p.split): p for p in summary.parts}
    assert by_part[("I", "train")].rows == 2 and by_part[("I", "test")].rows == 1  # im0, im5 skipped
    reasons = {e["id"]: e["reason"] for e in summary.errors}
    assert reasons["im0"].startswith("missing file") and reasons["im5"].startswith("unreadable image")
    listed = [json.loads(line) for line in errors_in(cache_dir(cache, "mydata", "I", "train")).read_text().splitlines()]
    assert [e["id"] for e in listed] == ["im0"]
    t = open_cache(cache_dir(cache, "mydata", "T", "train"))
    cols, feats = t.read()
    assert t.key == "caption_id" and t.links == ["image_id"] and feats["features"].shape == (6, 32)
    assert dict(zip(cols["id"], cols["image_id"]))["im2#1"] == "im2"
    s = open_cache(cache_dir(cache, "mydata", "S", "test"))
    assert s.shapes["features"] == (5, 64) and s.meta["dataset"] == "mydata"
    a_cols, a = open_cache(cache_dir(cache, "mydata", "A", "val")).read()
    assert np.allclose(a["features"][0], open_dataset("mydata", table).records("A", "val")[0].vector)
    again = extract("mydata", table, **kw)
    assert {p.status for p in again.parts} == {"cached"}  # same fingerprint: nothing re-encoded
    with pytest.raises(UserError, match="--strict"):
        extract("mydata", table, **{**kw, "cache_root": tmp_path / "strict"}, modalities=["I"], strict=True)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("files: captions.csv\nsplit_column: split\nmodalities: {I: pixels:file}", "kind must be one of"),
        ("files: captions.csv\nsplit_column: split\nmodalities: {I: image:nope}", "reads column 'nope'"),
        ("files: captions.csv\nmodalities: {I: image:file}", "needs split_column"),
        ("files: absent.csv\nsplit_column: split\nmodalities: {I: image:file}", "matches no file"),
        ("files: captions.csv\nsplit_column: split\nmodalities: {T: text:caption}", "no value in id column 'id'"),
    ],
)
def test_spec_mistakes_are_one_line(table, tmp_path, spec, match):
    (tmp_path / "captions.csv").write_bytes((table / "captions.csv").read_bytes())
    (tmp_path / "spec.yaml").write_text(spec)
    with pytest.raises(UserError, match=match):
        open_dataset("mine", tmp_path / "spec.yaml").records(next(iter(open_dataset_modalities(spec))), "train")


def open_dataset_modalities(spec: str) -> list[str]:
    import yaml

    return list(yaml.safe_load(spec)["modalities"])


def test_unknown_dataset_without_a_spec_says_how(tmp_path):
    with pytest.raises(UserError, match="dataset.yaml"):
        open_dataset("mine", tmp_path)


def test_text_only_table_trains_end_to_end(tmp_path, one_thread):
    """Captions and paraphrases, two text modalities of one table: extract and train through the CLI."""
    words = ("dog", "cat", "boat", "tree", "horse")
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    rows = [
        {
            "id": f"s{i}",
            "caption": f"a {words[i % 5]} number {i}",
            "paraphrase": f"number {i}, a {words[i % 5]}",
            "split": s,
        }
        for i, s in enumerate(splits)
    ]
    write_csv(tmp_path / "pairs.csv", rows)
    (tmp_path / "dataset.yaml").write_text(
        "files: pairs.csv\nsplit_column: split\nmodalities:\n  T: text:caption\n  U: text:paraphrase\n"
    )
    cache = tmp_path / "cache"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "extract",
            "--dataset",
            "pairs",
            "--root",
            str(tmp_path),
            "--text-backbone",
            "clip-tiny-text",
            "--weights-text",
            "random",
            "--cache-root",
            str(cache),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "pairs",
            "--modalities",
            "T,U",
            "--cache-root",
            str(cache),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--name",
            "pairs-run",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((cache / "runs" / "pairs-run" / "test_metrics.json").read_text())
    assert "instance" in metrics
