"""Extraction on synthetic Flickr8k and CUB (real file layouts) with tiny backbones of the real architectures:
every modality reaches the cache with the right ids, links and features; bad inputs are skipped and listed;
caches built with other settings are refused; the CLI turns user errors into one line and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may download

import numpy as np
import pytest
import torch
from extraction import extract

from pcmpipe.backbones import create_backbone
from pcmpipe.backbones.batching import length_batches
from pcmpipe.backbones.speech import MAX_AUDIO_SAMPLES, SPEECH_MAX_PADDING, speech_batches
from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import errors_in, manifest_in
from pcmpipe.datasets import load_audio, open_dataset
from pcmpipe.errors import UserError
from pcmpipe.extract.batching import PaddingMeter
from pcmpipe.extract.sources import Encoded, Skipped, text_batches

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}
TINY_FLAGS = [
    "--image-backbone",
    "clip-tiny-image",
    "--text-backbone",
    "clip-tiny-text",
    "--audio-backbone",
    "hubert-tiny",
    "--weights-image",
    "random",
    "--weights-text",
    "random",
    "--weights-audio",
    "random",
]


@pytest.fixture(scope="module")
def flickr(synth_dataset) -> Path:
    return synth_dataset("flickr8k", images=6, seed=1)  # 4 / 1 / 1 images, 5 captions each


@pytest.fixture(scope="module")
def cub(synth_dataset) -> Path:
    return synth_dataset("cub", images=1, seed=2)


def _read(cache_root: Path, dataset: str, m: str, split: str):
    reader = open_cache(cache_dir(cache_root, dataset, m, split))
    cols, feats = reader.read()
    return reader, cols, feats["features"]


def _by_id(cols, feats) -> dict[str, np.ndarray]:
    return {i: f for i, f in zip(cols["id"].tolist(), feats)}


@pytest.mark.slow
def test_flickr8k_every_modality_matches_direct_encoding(flickr, tmp_path):
    summary = extract("flickr8k", flickr, backbones=TINY, weights=RANDOM, cache_root=tmp_path, workers=2, batch_size=4)
    assert [(p.modality, p.split) for p in summary.parts] == [(m, s) for m in "ITS" for s in ("train", "val", "test")]
    assert all(p.status == "new" and p.skipped == 0 for p in summary.parts)
    ds = open_dataset("flickr8k", flickr)
    img, txt, aud = (create_backbone(TINY[k], "random:0") for k in ("image", "text", "audio"))
    for split in ("train", "test"):
        # images: open_clip's own transform + encode_image, one at a time
        reader, cols, feats = _read(tmp_path, "flickr8k", "I", split)
        recs = ds.records("I", split)
        assert cols["id"].tolist() == [r.id for r in recs]  # images keep record order
        assert reader.links == [] and feats.shape == (len(recs), 32) and feats.dtype == np.float32
        from PIL import Image

        with torch.inference_mode():
            want = torch.cat([img.model.encode_image(img.preprocess(Image.open(r.path))[None]) for r in recs])
        np.testing.assert_allclose(feats, want.numpy(), atol=1e-5, rtol=0)
        # captions: open_clip encode_text on the full padded context
        reader, cols, feats = _read(tmp_path, "flickr8k", "T", split)
        recs = {r.id: r for r in ds.records("T", split)}
        assert sorted(cols["id"].tolist()) == sorted(recs) and reader.links == ["image_id"]
        assert all(recs[i].links["image_id"] == j for i, j in zip(cols["id"], cols["image_id"]))
        with torch.inference_mode():
            want = txt.model.encode_text(txt.preprocess([recs[i].text for i in cols["id"]]))
        np.testing.assert_allclose(feats, want.numpy(), atol=1e-5, rtol=0)
        # speech: one utterance at a time, no padding at all
        reader, cols, feats = _read(tmp_path, "flickr8k", "S", split)
        recs = {r.id: r for r in ds.records("S", split)}
        assert sorted(cols["id"].tolist()) == sorted(recs) and feats.shape[1:] == (5, 64)
        with torch.inference_mode():
            want = torch.cat([aud.encode(aud.preprocess([load_audio(recs[i].path)])) for i in cols["id"]])
        np.testing.assert_allclose(feats, want.numpy(), atol=1e-4, rtol=0)
        assert (
            json.loads(manifest_in(cache_dir(tmp_path, "flickr8k", "I", split)).read_text())["meta"]["weights"]
            == "random:0"
        )
        assert errors_in(cache_dir(tmp_path, "flickr8k", "S", split)).read_text() == ""
    speech = [p for p in summary.parts if p.modality == "S"]
    assert all(p.padding is not None and 0 <= p.padding < 0.5 for p in speech)


def test_cub_vectors_prompts_and_links(cub, tmp_path):
    summary = extract(
        "cub",
        cub,
        splits=["train", "test"],
        backbones=TINY,
        weights=RANDOM,
        cache_root=tmp_path,
        workers=0,
        limit=12,
        fmt="hdf5",
    )
    assert {p.modality for p in summary.parts} == {"I", "T", "A", "C", "P"}
    ds = open_dataset("cub", cub)
    for m, links in [("I", ["class_id"]), ("T", ["class_id", "image_id"]), ("A", ["class_id"]), ("C", []), ("P", [])]:
        reader, cols, feats = _read(tmp_path, "cub", m, "test")
        assert reader.fmt == "hdf5" and sorted(reader.links) == links and reader.num_rows == 12
        assert reader.key == {"T": "caption_id", "C": "class_id", "P": "class_id"}.get(m, "image_id")
    for m in ("A", "C"):  # the dataset's own vectors, written as they are
        _, cols, feats = _read(tmp_path, "cub", m, "train")
        recs = {r.id: r for r in ds.records(m, "train")[:12]}
        assert feats.shape == (12, 312)
        for i, f in _by_id(cols, feats).items():
            np.testing.assert_array_equal(f, recs[i].vector.astype(np.float32))
    _, cols, feats = _read(tmp_path, "cub", "P", "test")
    txt = create_backbone("clip-tiny-text", "random:0")
    prompts = {r.id: r.text for r in ds.records("P", "test")}
    assert all(prompts[i].startswith("A photo of a") for i in cols["id"])
    with torch.inference_mode():
        want = txt.model.encode_text(txt.preprocess([prompts[i] for i in cols["id"]]))
    np.testing.assert_allclose(feats, want.numpy(), atol=1e-5, rtol=0)
    again = extract("cub", cub, splits=["test"], modalities=["A", "C"], cache_root=tmp_path, limit=12, fmt="hdf5")
    assert [p.status for p in again.parts] == ["cached", "cached"]


def _break_inputs(src: Path, dst: Path) -> dict[str, str]:
    """Copy a synthetic CUB and damage some images: id -> expected reason prefix."""
    shutil.copytree(src, dst)
    ds = open_dataset("cub", dst)
    recs = ds.records("I", "test")
    truncated, garbage, missing = recs[0], recs[1], recs[2]
    data = truncated.path.read_bytes()
    truncated.path.write_bytes(data[: len(data) // 2])
    garbage.path.write_bytes(b"this is not a jpeg")
    missing.path.unlink()
    return {truncated.id: "unreadable image", garbage.id: "unreadable image", missing.id: "missing file"}


def test_bad_images_are_skipped_listed_or_fatal_with_strict(cub, tmp_path):
    broken = _break_inputs(cub, tmp_path / "cub")
    kw = dict(modalities=["I"], splits=["test"], backbones=TINY, weights=RANDOM, workers=2)
    summary = extract("cub", tmp_path / "cub", cache_root=tmp_path / "c", **kw)
    part = summary.parts[0]
    total = len(open_dataset("cub", tmp_path / "cub").records("I", "test"))
    assert part.skipped == 3 and part.rows == total - 3
    assert {e["id"]: e["reason"].split(" (")[0].split(" /")[0] for e in summary.errors} == broken
    directory = cache_dir(tmp_path / "c", "cub", "I", "test")
    listed = [json.loads(line) for line in errors_in(directory).read_text().splitlines()]
    assert {e["id"] for e in listed} == set(broken) and all(e["path"] and e["split"] == "test" for e in listed)
    _, cols, _ = _read(tmp_path / "c", "cub", "I", "test")
    assert not set(broken) & set(cols["id"].tolist())
    assert extract("cub", tmp_path / "cub", cache_root=tmp_path / "c", **kw).parts[0].skipped == 3  # cached: still told
    with pytest.raises(UserError, match="--strict") as err:
        extract("cub", tmp_path / "cub", cache_root=tmp_path / "strict", strict=True, **kw)
    assert "\n" not in str(err.value) and any(i in str(err.value) for i in broken)


def test_bad_audio_and_empty_captions_are_skipped(flickr, tmp_path):
    root = tmp_path / "f"
    shutil.copytree(flickr, root)
    recs = open_dataset("flickr8k", root).records("S", "val")
    recs[0].path.write_bytes(recs[0].path.read_bytes()[:30])  # a header cut short
    import soundfile as sf

    sf.write(str(recs[1].path), np.zeros(200, dtype=np.float32), 16000)  # 12.5 ms: no HuBERT frame
    summary = extract(
        "flickr8k",
        root,
        modalities=["S"],
        splits=["val"],
        backbones=TINY,
        weights=RANDOM,
        cache_root=tmp_path / "c",
        workers=0,
    )
    reasons = {e["id"]: e["reason"] for e in summary.errors}
    assert reasons[recs[0].id].startswith("unreadable audio") and "too short" in reasons[recs[1].id]
    assert summary.parts[0].rows == len(recs) - 2
    # empty captions cannot come through the readers (they drop blank lines); the source skips them itself
    from pcmpipe.datasets import Record

    txt = create_backbone("clip-tiny-text", "random")
    out = list(
        text_batches(
            txt,
            [Record("a#0", {"caption_id": "a#0"}, text="  "), Record("b#0", {"caption_id": "b#0"}, text="a bird")],
            8,
        )
    )
    assert isinstance(out[0], Skipped) and out[0].reason == "empty caption"
    assert isinstance(out[1], Encoded) and [r.id for r in out[1].records] == ["b#0"]


def test_other_weights_are_never_mixed_in(flickr, tmp_path):
    kw = dict(modalities=["I"], splits=["val"], backbones=TINY, cache_root=tmp_path, workers=0)
    extract("flickr8k", flickr, weights={"image": "random:0"}, **kw)
    _, cols, first = _read(tmp_path, "flickr8k", "I", "val")
    with pytest.raises(UserError, match=r"weights_sha256.*another --cache-root or --overwrite"):
        extract("flickr8k", flickr, weights={"image": "random:1"}, **kw)
    _, _, still = _read(tmp_path, "flickr8k", "I", "val")
    np.testing.assert_array_equal(still, first)  # the refused run touched nothing
    with pytest.raises(UserError, match="another --cache-root"):
        extract("flickr8k", flickr, weights={"image": "random:0"}, limit=1, **kw)  # a subset is another cache too
    summary = extract("flickr8k", flickr, weights={"image": "random:1"}, overwrite=True, **kw)
    assert summary.parts[0].status == "new"
    reader, _, rebuilt = _read(tmp_path, "flickr8k", "I", "val")
    assert reader.meta["weights"] == "random:1" and np.abs(rebuilt - first).max() > 1e-3


def test_complete_cache_is_skipped_untouched(flickr, tmp_path):
    kw = dict(modalities=["T"], backbones=TINY, weights=RANDOM, cache_root=tmp_path, rows_per_shard=8)
    calls: list[tuple[str, int, int]] = []
    summary = extract("flickr8k", flickr, progress=lambda *c: calls.append(c), **kw)
    for part in summary.parts:  # the callback counts up to every row of each part; the summary is plain data
        task = f"flickr8k T {part.split}"
        done = [d for t, d, _ in calls if t == task]
        assert done == sorted(done) and done[-1] == part.rows == {n for t, _, n in calls if t == task}.pop()
    assert summary.to_dict()["parts"][0]["new_rows"] == summary.parts[0].new_rows
    shards = sorted(cache_dir(tmp_path, "flickr8k", "T", "train").glob("part-*"))
    assert len(shards) == 3  # 20 captions at 8 rows per shard
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards}
    calls.clear()
    again = extract("flickr8k", flickr, progress=lambda *c: calls.append(c), **kw)
    assert calls == [(f"flickr8k T {p.split}", p.rows, p.rows) for p in again.parts]  # cached: done at once
    assert {p.status for p in again.parts} == {"cached"} and sum(p.new_rows for p in again.parts) == 0
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards} == before


def test_argument_errors(flickr, tmp_path):
    base = dict(cache_root=tmp_path)
    for kwargs, match in [
        (dict(modalities=["A"]), "no modality 'A'"),
        (dict(splits=["dev"]), "unknown split"),
        (dict(fmt="csv"), "unknown format"),
        (dict(limit=0), "--limit"),
        (dict(backbones={"T": "clip-tiny-image"}, modalities=["T"]), "needs a text backbone"),
        (dict(backbones={"image": "vgg"}), "unknown backbone"),
        (dict(max_padding=1.0), "--max-padding"),
        (dict(max_padding=-0.01), "--max-padding"),
    ]:
        with pytest.raises(UserError, match=match):
            extract("flickr8k", flickr, **{**base, **kwargs})
    with pytest.raises(UserError):
        extract("flickr8k", tmp_path / "nowhere", **base)


def test_length_batches_and_padding_meter():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 200).tolist()
    batches = length_batches(lengths, batch_size=16, max_padded=600)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 600)
    meter, unsorted = PaddingMeter(), PaddingMeter()
    for b in batches:
        meter.add([lengths[i] for i in b])
    for i in range(0, 200, 16):
        unsorted.add(lengths[i : i + 16])
    assert meter.fraction < unsorted.fraction / 3  # sorting removes most of the padding


def _padding(batch: list[int], lengths: list[int]) -> float:
    longest = max(lengths[i] for i in batch)
    return (len(batch) * longest - sum(lengths[i] for i in batch)) / (len(batch) * longest) if longest else 0.0


def _check_batches(batches, lengths, batch_size, max_padded, bound) -> None:
    """Every index exactly once, in ascending length order; every limit held; every cut forced by a limit."""
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= batch_size
        assert len(b) == 1 or max_padded is None or len(b) * longest <= max_padded
        assert bound is None or _padding(b, lengths) <= bound + 1e-12
    for b, nxt in zip(batches, batches[1:]):  # greedy: the next batch's first item did not fit
        grown = b + nxt[:1]
        assert (
            len(b) >= batch_size
            or (max_padded is not None and len(grown) * lengths[nxt[0]] > max_padded)
            or (bound is not None and _padding(grown, lengths) > bound)
        )


@pytest.mark.parametrize("bound", [None, 0.0, 0.02, 0.05, 0.3])
@pytest.mark.parametrize("max_padded", [None, 600])
def test_length_batches_padding_bound_properties(bound, max_padded):
    rng = np.random.default_rng(1)
    for n, high in [(200, 100), (37, 10_000), (64, 5)]:
        lengths = rng.integers(0 if high == 5 else 1, high, n).tolist()
        _check_batches(length_batches(lengths, 16, max_padded, bound), lengths, 16, max_padded, bound)


def test_length_batches_padding_bound_cases():
    # a newcomer that would pad the batch past the bound starts its own batch
    assert length_batches([100, 10, 99, 11], 8, None, 0.05) == [[1, 3], [2, 0]]
    assert length_batches([100, 10, 99, 11], 8, None, None) == [[1, 3, 2, 0]]
    assert length_batches([10, 50, 100], 8, None, 0.0) == [[0], [1], [2]]  # alone when it must be
    assert length_batches([7, 7, 7, 7, 7], 2, None, 0.0) == [[0, 1], [2, 3], [4]]  # equal lengths: no padding
    assert length_batches([5, 1000, 6], 8, 500, 0.5) == [[0, 2], [1]]  # longer than max_padded: alone
    assert length_batches([0, 0, 3], 8, None, 0.05) == [[0, 1], [2]]  # empty items (unreadable headers) first
    assert length_batches([], 4, None, 0.05) == []
    with pytest.raises(ValueError, match="max_padding_fraction"):
        length_batches([1, 2], 4, None, 1.0)


def test_speech_batches_default_bounds_padding_on_a_short_mix():
    """64 utterances of 1-10 s: the old rule left 15 % padding, the bound keeps it (and every batch) <= 5 %."""
    lengths = (np.random.default_rng(0).uniform(1, 10, 64) * 16_000).astype(int).tolist()
    ours, old = speech_batches(lengths, 64), speech_batches(lengths, 64, None)
    assert old == length_batches(lengths, 64, MAX_AUDIO_SAMPLES)
    _check_batches(ours, lengths, 64, MAX_AUDIO_SAMPLES, SPEECH_MAX_PADDING)
    meters = {k: PaddingMeter() for k in ("ours", "old")}
    for k, plan in (("ours", ours), ("old", old)):
        for b in plan:
            meters[k].add([lengths[i] for i in b])
    assert meters["ours"].fraction <= SPEECH_MAX_PADDING < 0.1 < meters["old"].fraction


def test_cli_max_padding_default_and_error(tmp_path):
    from typer.testing import CliRunner

    from pcmpipe.backbones import DEFAULT_BACKBONES
    from pcmpipe.cli import app
    from pcmpipe.config import ExtractConfig
    from pcmpipe.config.extract import DEFAULT_BACKBONES as SCHEMA_BACKBONES

    # the schema restates the speech padding bound (backbones.speech imports torch, which `--help` must not);
    # its backbone defaults are the registry's own (torch-free) names
    assert ExtractConfig.model_fields["max_padding"].default == SPEECH_MAX_PADDING
    assert SCHEMA_BACKBONES == DEFAULT_BACKBONES
    res = CliRunner().invoke(
        app,
        ["extract", "--dataset", "flickr8k", "--root", str(tmp_path), "--max-padding", "1.5"],
        env={"COLUMNS": "400"},
    )
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--max-padding must be a fraction in [0, 1)" in lines[0], res.stderr


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "pcmpipe", "extract", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli(flickr, tmp_path):
    ok = _cli(
        "--dataset",
        "flickr8k",
        "--root",
        str(flickr),
        "--modalities",
        "I,T",
        "--splits",
        "val",
        "--cache-root",
        str(tmp_path / "c"),
        "--workers",
        "0",
        *TINY_FLAGS,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "clip-tiny-image" in ok.stdout and "items/s" in ok.stdout
    assert open_cache(cache_dir(tmp_path / "c", "flickr8k", "T", "val")).num_rows == 5
    bad = _cli(
        "--dataset",
        "flickr8k",
        "--root",
        str(flickr),
        "--modalities",
        "I",
        "--splits",
        "val",
        "--cache-root",
        str(tmp_path / "c"),
        *TINY_FLAGS[:6],
        "--weights-image",
        "random:5",
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "--overwrite" in bad.stderr
    missing = _cli("--dataset", "flickr8k", "--root", str(tmp_path / "none"), cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
