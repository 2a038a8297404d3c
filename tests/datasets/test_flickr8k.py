"""Flickr8k + Flickr Audio reader on synthetic data written in the official layout."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from pcmpipe.datasets import DATASETS, SPLITS, Flickr8k, Record, load_audio, open_dataset
from pcmpipe.datasets.synthetic import synth
from pcmpipe.datasets.synthetic.flickr8k import BOGUS_KEY
from pcmpipe.errors import UserError

IMAGE_ID = re.compile(r"^\d{10}_[0-9a-f]{10}$")


@pytest.fixture(scope="module")
def flickr_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("flickr8k")
    synth("flickr8k", root, seed=3)
    return root


@pytest.fixture(scope="module")
def ds(flickr_root) -> Flickr8k:
    return open_dataset("flickr8k", flickr_root)


def test_registry_and_modalities(ds):
    assert DATASETS["flickr8k"] is Flickr8k
    assert ds.name == "flickr8k" and ds.modalities == ("I", "T", "S")
    assert [ds.key(m) for m in "ITS"] == ["image_id", "caption_id", "caption_id"]


@pytest.mark.parametrize("split,n", [("train", 40), ("val", 10), ("test", 10)])
def test_counts_per_split(ds, split, n):
    assert len(ds.records("I", split)) == n
    assert len(ds.records("T", split)) == 5 * n
    assert len(ds.records("S", split)) == 5 * n


def test_id_formats_links_and_order(ds):
    for split in SPLITS:
        images = ds.records("I", split)
        assert all(IMAGE_ID.match(r.id) and r.links == {"image_id": r.id} for r in images)
        assert all(r.path.name == f"{r.id}.jpg" and r.path.parent.name == "Flicker8k_Dataset" for r in images)
        caps = ds.records("T", split)
        assert [r.id for r in caps] == sorted(r.id for r in caps)
        image_ids = {r.id for r in images}
        for r in caps:
            img, n = r.id.split("#")
            assert img in image_ids and n in "01234" and r.text and r.path is None
            assert r.links == {"caption_id": r.id, "image_id": img}
        speech = ds.records("S", split)
        assert [r.id for r in speech] == [r.id for r in caps]  # one spoken caption per written one
        for r in speech:
            img, n = r.id.split("#")
            assert r.path.name == f"{img}_{n}.wav" and r.path.is_file()
            assert r.links == {"caption_id": r.id, "image_id": img}


def test_splits_are_disjoint(ds):
    sets = [{r.id for r in ds.records("I", s)} for s in SPLITS]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_bogus_token_line_is_skipped_and_recorded(flickr_root, ds):
    token = (flickr_root / "Flickr8k.token.txt").read_text()
    assert f"{BOGUS_KEY}#0\t" in token and len(token.splitlines()) == 5 * 61
    all_caps = [r for s in SPLITS for r in ds.records("T", s)]
    assert len(all_caps) == 5 * 60
    assert not any(BOGUS_KEY in r.id or "jpg" in r.id for r in all_caps)
    assert sorted(ds.skipped) == [f"{BOGUS_KEY}#{n}" for n in range(5)]
    assert all("no split list" in why for why in ds.skipped.values())


def test_text_files_under_flickr8k_text(tmp_path, ds):
    root = tmp_path / "variant"
    synth("flickr8k", root, seed=3, text_subdir=True)
    assert (root / "Flickr8k_text" / "Flickr8k.token.txt").is_file()
    assert not (root / "Flickr8k.token.txt").exists()
    other = open_dataset("flickr8k", root)
    for split in SPLITS:
        assert [(r.id, r.text) for r in other.records("T", split)] == [(r.id, r.text) for r in ds.records("T", split)]


def test_image_folder_spelt_correctly_is_accepted(tmp_path, flickr_root):
    root = tmp_path / "mirror"
    shutil.copytree(flickr_root, root, ignore=shutil.ignore_patterns("flickr_audio"))
    (root / "Flicker8k_Dataset").rename(root / "Flickr8k_Dataset")
    recs = open_dataset("flickr8k", root).records("I", "val")
    assert len(recs) == 10 and all(r.path.parent.name == "Flickr8k_Dataset" and r.path.is_file() for r in recs)


def test_caption_text_from_token_file(flickr_root, ds):
    line = next(t for t in (flickr_root / "Flickr8k.token.txt").read_text().splitlines() if BOGUS_KEY not in t)
    key, caption = line.split("\t")
    cid = key.replace(".jpg#", "#")
    rec = {r.id: r for s in SPLITS for r in ds.records("T", s)}[cid]
    assert rec.text == caption


def test_load_audio_resamples_to_16k_mono_float32(ds):
    recs = ds.records("S", "train")
    infos = {r.path: sf.info(str(r.path)) for r in recs}
    odd = next(p for p, i in infos.items() if i.samplerate == 22050)
    stereo = next(p for p, i in infos.items() if i.channels == 2)
    for path in (odd, stereo, recs[0].path):
        wav = load_audio(path)
        info = infos[path]
        assert wav.dtype == np.float32 and wav.ndim == 1
        assert abs(len(wav) - info.frames * 16000 / info.samplerate) <= 1


def test_load_audio_keeps_the_frequency(tmp_path):
    """A 440 Hz stereo tone at 22.05 kHz comes back as 440 Hz at 16 kHz, channels averaged."""
    t = np.arange(22050) / 22050
    left = np.sin(2 * np.pi * 440 * t)
    sf.write(str(tmp_path / "a.wav"), np.stack([left, 0.5 * left], 1).astype(np.float32), 22050, subtype="FLOAT")
    wav = load_audio(tmp_path / "a.wav")
    assert wav.shape == (16000,) and wav.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(wav))
    assert np.argmax(spectrum) == 440  # 1 s of signal: bin k is k Hz
    assert np.max(np.abs(wav[1000:-1000])) == pytest.approx(0.75, abs=0.01)


def test_load_audio_unreadable_file_is_user_error(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"not a wav")
    with pytest.raises(UserError, match="x.wav"):
        load_audio(tmp_path / "x.wav")


def test_missing_root_names_path_and_download(tmp_path):
    with pytest.raises(UserError, match=r"nowhere.*pcmpipe download flickr8k"):
        open_dataset("flickr8k", tmp_path / "nowhere")
    with pytest.raises(UserError, match="unknown dataset"):
        open_dataset("coco", tmp_path)


def test_missing_files_are_user_errors(tmp_path, flickr_root):
    root = tmp_path / "copy"
    shutil.copytree(flickr_root, root)
    shutil.rmtree(root / "flickr_audio")
    ds = open_dataset("flickr8k", root)
    assert len(ds.records("T", "val")) == 50  # I and T still work without the audio corpus
    with pytest.raises(UserError, match=r"flickr_audio.*flickr_audio.tar.gz"):
        ds.records("S", "val")
    # one missing image is left to extraction (skipped and listed there); none at all is an error
    victim = ds.records("I", "test")[0].path
    victim.unlink()
    assert victim in [r.path for r in open_dataset("flickr8k", root).records("I", "test")]
    shutil.rmtree(root / "Flicker8k_Dataset")
    with pytest.raises(UserError, match=r"Flicker8k_Dataset.*Flickr8k_Dataset.zip"):
        open_dataset("flickr8k", root).records("I", "test")
    (root / "Flicker8k_Dataset").mkdir()
    with pytest.raises(UserError, match=r"none of the 10 test images exist"):
        open_dataset("flickr8k", root).records("I", "test")
    (root / "Flickr_8k.devImages.txt").unlink()
    with pytest.raises(UserError, match="Flickr_8k.devImages.txt"):
        open_dataset("flickr8k", root).records("I", "train")


def test_malformed_token_line_names_file_and_line(tmp_path, flickr_root):
    root = tmp_path / "copy"
    shutil.copytree(flickr_root, root)
    with open(root / "Flickr8k.token.txt", "a") as f:
        f.write("garbage without a tab\n")
    with pytest.raises(UserError, match=r"Flickr8k.token.txt:306"):
        open_dataset("flickr8k", root).records("T", "train")


def test_unknown_split_or_modality(ds):
    with pytest.raises(UserError, match="split"):
        ds.records("I", "dev")
    with pytest.raises(UserError, match="modality 'A'"):
        ds.records("A", "train")


def test_record_is_a_small_dataclass():
    r = Record(id="x#0", links={"caption_id": "x#0", "image_id": "x"}, text="hi")
    assert r.path is None and r.vector is None


def _text_only_copy(src, dest):
    """The token and split files of `src` in a new root (captions need nothing else)."""
    dest.mkdir()
    for f in src.glob("*.txt"):
        shutil.copy(f, dest / f.name)
    return dest


@pytest.mark.parametrize("name", ["Flickr_8k.trainImages.txt", "Flickr8k.token.txt"])
def test_a_byte_order_mark_loses_no_caption(tmp_path, flickr_root, ds, name):
    root = _text_only_copy(flickr_root, tmp_path / "bom")
    path = root / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    other = open_dataset("flickr8k", root)
    assert [(r.id, r.text) for r in other.records("T", "train")] == [(r.id, r.text) for r in ds.records("T", "train")]
    assert sorted(other.skipped) == sorted(ds.skipped)


def test_a_repeated_caption_key_keeps_both_captions(tmp_path, flickr_root, ds):
    root = _text_only_copy(flickr_root, tmp_path / "dup")
    first = ds.records("T", "train")[0]
    key = f"{first.id.replace('#', '.jpg#')}"
    with open(root / "Flickr8k.token.txt", "a") as f:
        f.write(f"{key}\ta second caption under the same key\n{key}\tand a third\n")
    caps = {r.id: r.text for r in open_dataset("flickr8k", root).records("T", "train")}
    assert caps[first.id] == first.text  # the original is not overwritten
    assert caps[f"{first.id}.1"] == "a second caption under the same key"
    assert caps[f"{first.id}.2"] == "and a third"
    assert len(caps) == len(ds.records("T", "train")) + 2
    other = open_dataset("flickr8k", root)
    other.records("T", "train")
    assert sorted(other.renamed) == ["Flickr8k.token.txt:306", "Flickr8k.token.txt:307"]
