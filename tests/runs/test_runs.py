"""load_run / embed / search / export on a real (tiny) run: raw inputs through the recorded backbone and the head
give the embeddings the run stored for its test split, an export reads back with no cache, and the README's
snippet runs as written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import pcmpipe
from pcmpipe.cache import open_cache
from pcmpipe.cli import app
from pcmpipe.datasets import open_dataset
from pcmpipe.errors import UserError
from pcmpipe.runs.embed import embed_cache_to_cache, embed_inputs_to_cache
from pcmpipe.runs.export import export_run
from pcmpipe.training.rundir import load_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[2] / "README.md"


def _stored(run_dir: Path, m: str) -> tuple[list[str], np.ndarray]:
    e = load_embeddings(run_dir)[m]
    emb = e.embedding.numpy()
    return list(e.columns["id"]), emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_raw_inputs_embed_to_the_runs_own_test_embeddings(trained):
    run = pcmpipe.load_run(trained["run"])
    assert run.kind("I") == "image" and run.kind("T") == "text" and run.dim == 32
    ds = open_dataset("flickr8k", trained["data"])
    for m, payload in (("I", lambda r: r.path), ("T", lambda r: r.text)):
        ids, want = _stored(trained["run"], m)
        recs = {r.id: r for r in ds.records(m, "test")}
        got = run.embed(m, [payload(recs[i]) for i in ids])
        assert got.shape == want.shape
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_search_ranks_the_gallery_by_cosine(trained):
    run = pcmpipe.load_run(trained["run"])
    ids, gallery = _stored(trained["run"], "I")
    q = run.embed("T", ["a dog runs on the beach"])
    hits = run.search("a dog runs on the beach", from_="T", to="I", k=5)
    order = np.argsort(-(gallery @ q[0]), kind="stable")
    assert [h.id for h in hits] == [ids[j] for j in order[: len(hits)]]
    assert len(hits) == min(5, len(ids)) and all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    with pytest.raises(UserError, match="no modality 'S'"):
        run.search("x", from_="T", to="S")
    with pytest.raises(UserError, match="cannot embed T input"):
        run.embed("T", ["   "])


def test_search_results_carry_their_caption_or_media_file(trained):
    """Each hit of the run's own rows names what it is: the image file extraction read, or the caption's text."""
    run = pcmpipe.load_run(trained["run"])
    ds = open_dataset("flickr8k", trained["data"])
    images = {r.id: str(r.path.resolve()) for r in ds.records("I", "test")}
    texts = {r.id: r.text for r in ds.records("T", "test")}
    for hit in run.search("a dog runs on the beach", from_="T", to="I", k=5):
        assert Path(hit.path).resolve() == Path(images[hit.id]) and hit.text is None
    found = run.search(str(next(iter(images.values()))), from_="I", to="T", k=3)
    assert [h.text for h in found] == [texts[h.id] for h in found] and all(h.path is None for h in found)
    out = CliRunner().invoke(app, ["search", str(trained["run"]), "--query", "a dog", "--from", "T", "--to", "T",
                                   "-k", "2", "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert [h["text"] for h in json.loads(out.stdout)] == [texts[h["id"]] for h in json.loads(out.stdout)]


def test_embeddings_cache_fp16_and_through_the_head(trained, tmp_path):
    run = pcmpipe.load_run(trained["run"])
    ds = open_dataset("flickr8k", trained["data"])
    paths = [r.path for r in ds.records("I", "test")]
    missing = tmp_path / "gone.jpg"
    res = embed_inputs_to_cache(run, "I", [*paths, missing], tmp_path / "raw16", dtype="float16")
    assert res["rows"] == len(paths) and list(res["skipped"]) == ["gone"]
    raw = open_cache(tmp_path / "raw16")
    assert raw.dtypes["embedding"] == "float16" and raw.meta["run_fingerprint"] == run.fingerprint
    assert pq.read_table(tmp_path / "raw16" / raw.manifest["shards"][0]["file"]).num_rows == len(paths)
    via = embed_cache_to_cache(run, "I", trained["cache"] / "flickr8k" / "I" / "test", tmp_path / "head32")
    cols, feats = open_cache(tmp_path / "head32").read()
    assert via["rows"] == len(paths) and "image_id" in cols
    _, f16 = raw.read()
    np.testing.assert_allclose(f16["embedding"].astype(np.float32), feats["embedding"], atol=2e-3)
    again = embed_cache_to_cache(run, "I", trained["cache"] / "flickr8k" / "I" / "test", tmp_path / "head32")
    assert again["reused"] and again["rows"] == len(paths)


def test_export_reads_back_without_cache_or_network(trained, tmp_path):
    out = export_run(trained["run"], tmp_path / "export").out
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "pcmpipe" and front["datasets"] == ["flickr8k"]
    values = {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    test = json.loads((trained["run"] / "test_metrics.json").read_text())
    assert values["T->I r@1"] == pytest.approx(test["instance"]["T->I"]["r@1"], abs=1e-3)
    config = json.loads((out / "config.json").read_text())
    assert config["backbones"]["I"]["backbone"] == "clip-tiny-image" and config["fingerprint"] in card
    # move the export away from every cache: it carries what it needs
    alone = tmp_path / "elsewhere" / "heads"
    shutil.copytree(out, alone)
    ref = pcmpipe.load_run(trained["run"])
    back = pcmpipe.load_run(alone)
    np.testing.assert_allclose(back.embed("T", ["a red ball"]), ref.embed("T", ["a red ball"]), atol=1e-6)
    assert back.search("a red ball", from_="T", to="I", k=3) == ref.search("a red ball", from_="T", to="I", k=3)
    config["backbones"]["T"]["weights_sha256"] = "0" * 64
    (alone / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="differ from the ones modality T was trained on"):
        pcmpipe.load_run(alone).embed("T", ["a red ball"])
    # the old folder an exchange moved aside, left when a kill beat its removal: a reuse clears it too
    shutil.copytree(out, out.parent / f".{out.name}.export-tmp")
    assert export_run(trained["run"], out).reused  # a whole export of this run: nothing to do
    assert not (out.parent / f".{out.name}.export-tmp").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        export_run(trained["run"], tmp_path / "busy")


def test_cli_embed_index_search_agree_with_the_api(trained, tmp_path):
    runner, run_dir = CliRunner(), str(trained["run"])
    images = trained["data"] / "Flicker8k_Dataset"
    r = runner.invoke(app, ["embed", run_dir, str(images), "--modality", "I", "--out", str(tmp_path / "emb")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["index", str(tmp_path / "emb")])
    assert r.exit_code == 0 and (tmp_path / "emb.index" / "index.faiss").is_file(), r.output
    q = ["search", run_dir, "--query", "a dog", "--from", "T", "--to", "I", "-k", "4", "--json"]
    flat = json.loads(runner.invoke(app, [*q, "--gallery", str(tmp_path / "emb.index")]).output)
    exact = json.loads(runner.invoke(app, [*q, "--gallery", str(tmp_path / "emb")]).output)
    assert [h["id"] for h in flat] == [h["id"] for h in exact] and len(flat) == 4
    assert all(h["id"] in {p.stem for p in images.glob("*.jpg")} for h in flat)
    run = pcmpipe.load_run(trained["run"])
    api = run.search("a dog", from_="T", to="I", k=4, gallery=tmp_path / "emb")
    assert [i for i, _ in api] == [h["id"] for h in exact]
    table = runner.invoke(app, q[:-1])
    assert table.exit_code == 0 and "T -> I" in table.output
    bad = runner.invoke(app, ["embed", run_dir, "--modality", "I", "--text", "x", "--out", str(tmp_path / "e2")])
    assert bad.exit_code == 2 and "takes image inputs" in bad.output


def test_the_readme_snippet_runs_as_written(trained, monkeypatch):
    text = README.read_text()
    block = re.search(r"<!-- load_run snippet -->\n```python\n(.*?)```", text, re.S)
    assert block, "README.md lost the load_run snippet"
    code = block.group(1)
    assert len(code.strip().splitlines()) == 5
    monkeypatch.chdir(trained["cache"].parent)  # the snippet names cache/runs/<run>
    scope: dict = {}
    exec(compile(code.replace("<run>", trained["run"].name), "README.md", "exec"), scope)
    assert scope["emb"].shape == (1, 32)
    assert len(scope["hits"]) == 2 and isinstance(scope["hits"][0][0], str)


def test_inputs_go_through_the_head_batch_by_batch(trained):
    """Only head outputs accumulate while encoding (not backbone features), with the same embeddings."""
    from pcmpipe.runs.inputs import encode_inputs

    run = pcmpipe.load_run(trained["run"])
    recs = list(open_dataset("flickr8k", trained["data"]).records("I", "train"))
    paths = [r.path for r in recs]
    seen: list[tuple[int, ...]] = []

    def head(features: np.ndarray) -> np.ndarray:
        seen.append(features.shape)
        return run.project("I", features)

    bb = run.backbone("I")
    got = encode_inputs(bb, paths, batch_size=3, head=head)
    assert seen == [(3, *bb.feature_shape), (3, *bb.feature_shape), (2, *bb.feature_shape)]
    assert got.features.shape == (len(paths), run.dim) and got.ids == [p.stem for p in paths]
    whole = encode_inputs(bb, paths, batch_size=3)
    np.testing.assert_allclose(got.features, run.project("I", whole.features), atol=1e-6)
    np.testing.assert_allclose(run.embed("I", paths, batch_size=3), got.features, atol=1e-6)
