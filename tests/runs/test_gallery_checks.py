"""`pcmpipe index` and `pcmpipe search --gallery` through the real CLI: a gallery must be of the run and the
modality it is searched with, damage is refused rather than scored, and every careless argument is one line
saying what the path is and what to pass instead."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import pcmpipe
from pcmpipe.cache import ShardWriter
from pcmpipe.cache.layout import manifest_in
from pcmpipe.cli import app

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text"}  # as the conftest's run

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


def _ok(*args) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.stdout


def _one_line(*args, fragment: str) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert r.exit_code == 2, (args, r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], (args, r.stderr)
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture(scope="module")
def galleries(trained, make_run, tmp_path_factory) -> dict:
    """The run's I and T test rows embedded with `pcmpipe embed --cache` (and indexed), and the I rows
    embedded by another run trained on the same caches."""
    root = tmp_path_factory.mktemp("galleries")
    run, cache = trained["run"], trained["cache"]
    other = make_run(trained["data"], cache, ["I", "T"], TINY, epochs=1, name="other")
    out = {"run": run, "other": other, "root": root}
    for name, by, m in (("I", run, "I"), ("T", run, "T"), ("other-I", other, "I")):
        _ok("embed", by, "--modality", m, "--cache", cache / "flickr8k" / m / "test", "--out", root / name)
        _ok("index", root / name)
        out[name] = root / name
    out["query"] = str(pcmpipe.load_run(run).gallery("T")[0][0])
    return out


def _search(g: dict, *extra) -> list:
    return [*map(str, ("search", g["run"], "--query-id", g["query"], "--from", "T", "-k", "3")), *map(str, extra)]


@pytest.mark.parametrize(
    "gallery, to, fragment",
    [
        ("T", "I", "holds T embeddings, not I; pass a gallery of I (or --to T)"),
        ("T.index", "I", "holds T embeddings, not I"),
        ("I", "T", "holds I embeddings, not T"),
        ("other-I", "I", "was embedded by run 'other'"),
        ("other-I.index", "I", "its vectors are in another head space; embed the gallery with walk"),
    ],
)
def test_a_gallery_of_another_run_or_modality_is_refused(galleries, gallery, to, fragment):
    _one_line(*_search(galleries, "--to", to, "--gallery", galleries["root"] / gallery), fragment=fragment)
    # the run's own I rows, as an embeddings cache or an index, answer what its stored test embeddings answer
    g = galleries
    stored = json.loads(_ok(*_search(g, "--to", "I", "--json")))
    assert all(Path(h["path"]).is_file() for h in stored)  # the run's own rows carry their image file
    for own in (g["I"], Path(f"{g['I']}.index")):
        got = json.loads(_ok(*_search(g, "--to", "I", "--json", "--gallery", own)))
        assert [h["id"] for h in got] == [h["id"] for h in stored]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in stored])


def test_a_gallery_that_names_no_run_is_refused(galleries, tmp_path):
    run = pcmpipe.load_run(galleries["run"])
    with ShardWriter(
        tmp_path / "plain", features={"embedding": ((run.dim,), "float32")}, key="id", links=[], meta={"mine": 1}
    ) as w:
        w.add(["a", "b"], {}, {"embedding": np.ones((2, run.dim), np.float32)})
    fragment = "does not name the run and modality its rows were embedded with"
    _one_line(*_search(galleries, "--to", "I", "--gallery", tmp_path / "plain"), fragment=fragment)
    _one_line("index", tmp_path / "plain", fragment=fragment)


def test_a_gallery_of_another_dimension_is_refused(galleries, tmp_path):
    run = pcmpipe.load_run(galleries["run"])
    meta = {"run": "walk", "run_fingerprint": run.fingerprint, "modality": "I"}
    with ShardWriter(tmp_path / "d16", features={"embedding": ((16,), "float32")}, key="id", links=[], meta=meta) as w:
        w.add(["a", "b"], {}, {"embedding": np.ones((2, 16), np.float32)})
    _one_line(*_search(galleries, "--to", "I", "--gallery", tmp_path / "d16"), fragment="16 dimensions, the run's 32")
    _ok("index", tmp_path / "d16")
    _one_line(*_search(galleries, "--to", "I", "--gallery", tmp_path / "d16.index"), fragment="16 dimensions")


def _flip_a_vector_byte(shard: Path, vector: np.ndarray) -> None:
    """Change one mantissa byte of a stored vector (float features are stored uncompressed)."""
    data = bytearray(shard.read_bytes())
    at = bytes(data).find(vector.astype(np.float32).tobytes())
    assert at > 0
    data[at + 1] ^= 0x40
    shard.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_gallery_is_refused_not_scored(galleries, tmp_path):
    from pcmpipe.cache import open_cache

    emb = tmp_path / "I"
    shutil.copytree(galleries["I"], emb)
    _, feats = open_cache(emb).read(["embedding"])
    shard = next(p for p in emb.iterdir() if p.name.startswith("part-"))
    _flip_a_vector_byte(shard, feats["embedding"][1])
    _one_line(*_search(galleries, "--to", "I", "--gallery", emb), fragment="corrupt (sha256 mismatch)")
    index = tmp_path / "I.index"
    shutil.copytree(f"{galleries['I']}.index", index)
    faiss_file = index / "index.faiss"
    data = bytearray(faiss_file.read_bytes())
    data[-3] ^= 0x40  # inside the last vector
    faiss_file.write_bytes(bytes(data))
    _one_line(*_search(galleries, "--to", "I", "--gallery", index), fragment="index.faiss is damaged (sha256")


def test_paths_that_are_not_galleries_say_what_they_are(galleries, trained, tmp_path):
    g, run = galleries, galleries["run"]
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    for path, fragment in (
        (tmp_path / "nope.index", "does not exist; pass an embeddings cache or an index folder"),
        (run, "is a run directory, not a gallery (a run searches its own stored test embeddings without --gallery)"),
        (tmp_path / "folder", "is not an embeddings cache or an index folder (it has no manifest or index.json)"),
        (tmp_path / "afile", "is a file; pass an embeddings cache or an index folder"),
    ):
        _one_line(*_search(g, "--to", "I", "--gallery", path), fragment=fragment)
    for path, fragment in (
        (tmp_path / "emb" / "T", "does not exist; pass an embeddings cache (the --out of `pcmpipe embed`)"),
        (run, "is a run directory, not embeddings; embed rows with it first"),
        (tmp_path / "folder", "is not an embeddings cache (the --out of `pcmpipe embed`) (it has no manifest"),
        (Path(f"{g['I']}.index"), "is an index folder already; search it with `pcmpipe search RUN --gallery"),
        (trained["cache"] / "flickr8k" / "I" / "test", "holds features, not embeddings"),
    ):
        _one_line("index", path, fragment=fragment)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--kind", "ivfpq", "--pq-m", "0"], "--pq-m must be between 1 and"),
        (["--kind", "ivfpq", "--pq-m", "-4"], "--pq-m must be between 1 and"),
        (["--kind", "ivf", "--nlist", "-5"], "--nlist must be between 1 and"),
        (["--kind", "ivf", "--nlist", "0"], "--nlist must be between 1 and"),
        (["--kind", "ivf", "--nprobe", "-1"], "--nprobe must be between 1 and"),
        (["--kind", "ivf", "--nprobe", "0"], "--nprobe must be between 1 and"),
        (["--kind", "ivfpq"], "--kind ivfpq needs at least 256 embeddings"),
    ],
)
def test_bad_index_settings_are_one_line_before_work(galleries, tmp_path, flags, fragment):
    _one_line("index", galleries["I"], "--out", tmp_path / "x", *flags, fragment=fragment)
    assert not (tmp_path / "x").exists()


def test_an_index_onto_a_file_or_a_foreign_folder_is_one_line(galleries, tmp_path):
    (tmp_path / "afile").write_text("x")
    _one_line("index", galleries["I"], "--out", tmp_path / "afile", fragment="afile is a file, not a folder")
    _one_line("index", galleries["I"], "--out", tmp_path / "afile" / "i", fragment="which is a file, not a folder")
    _one_line("index", galleries["I"], "--out", galleries["T"], fragment="which is not part of an index")
    assert manifest_in(galleries["T"]).is_file()  # the folder it refused to replace is untouched


def test_search_names_the_split_it_searched(galleries):
    out = _ok(*_search(galleries, "--to", "I"))
    assert "searched the I embeddings of the test split stored in walk" in out
    missing = ["search", galleries["run"], "--query-id", "nope", "--from", "T", "--to", "I"]
    _one_line(*missing, fragment="no T row with id 'nope' among the 10 of the test split stored in walk, nor in its")


def test_query_id_finds_a_row_of_any_split(galleries, trained):
    """A training caption's id searches from the embedding the head gives its cached features, and says so."""
    import pcmpipe
    from pcmpipe.cache import open_cache

    run = pcmpipe.load_run(galleries["run"])
    reader = open_cache(trained["cache"] / "flickr8k" / "T" / "train")
    cols, feats = reader.read(["features"])
    row = str(cols["id"][3])
    want = run.search(feats["features"][3], from_="T", to="I", k=2)
    got = json.loads(
        _ok("search", galleries["run"], "--query-id", row, "--from", "T", "--to", "I", "-k", "2", "--json")
    )
    assert [h["id"] for h in got] == [h.id for h in want]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    assert f"{row} (a row of the train split)" in _ok("search", galleries["run"], "--query-id", row, "--from", "T",
                                                        "--to", "I")  # fmt: skip


def test_evaluate_shows_the_gallery_size_and_chance(galleries, tmp_path):
    out = _ok("evaluate", galleries["run"], "--recall-k", "1,5,10", "--device", "cpu", "--out", tmp_path / "m.json")
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["gallery"] == {"I": 2, "T": 10}  # the test split of 12 synthetic images: 2 images, 10 captions
    assert result["chance"]["instance"]["T->I"]["r@1"] == pytest.approx(50.0)
    header = next(line for line in out.splitlines() if "direction" in line)
    assert "gallery" in header
    cells = [re.findall(r"[\w>.@-]+", line) for line in out.splitlines()]
    assert ["T->I", "2"] in [c[:2] for c in cells] and ["I->T", "10"] in [c[:2] for c in cells], out
    assert sum("chance" in line for line in out.splitlines()) == 2
