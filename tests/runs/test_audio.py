"""Audio inputs to `pcmpipe embed`: wav files (any rate, stereo) through the run's HuBERT and head, as the
speech cache the run trained on was made, with a file too short for the encoder skipped and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import pcmpipe
from pcmpipe.cache import open_cache
from pcmpipe.cli import app
from pcmpipe.datasets import load_audio, open_dataset
from pcmpipe.extract.sources import encode
from pcmpipe.training.rundir import load_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def speech_run(trained, make_run, tmp_path_factory) -> Path:
    """A one-epoch S,T run on the package's synthetic Flickr8k, speech through hubert-tiny (random:0)."""
    cache = tmp_path_factory.mktemp("speech") / "cache"
    speech = {"audio": "hubert-tiny", "text": "clip-tiny-text"}
    return make_run(trained["data"], cache, ["S", "T"], speech, epochs=1, name="speech")


def _tone(path: Path, seconds: float, rate: int, channels: int, freq: float) -> None:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, np.repeat(wave[:, None], channels, 1).astype(np.float32), rate)


@pytest.mark.slow  # extracts speech with HuBERT and trains a run first
def test_wav_files_embed_through_the_runs_speech_encoder(trained, speech_run, tmp_path):
    run = pcmpipe.load_run(speech_run)
    assert run.kind("S") == "audio" and run.backbones["S"]["backbone"] == "hubert-tiny"
    # the run's own test utterances give the embeddings it stored for them
    stored = load_embeddings(speech_run)["S"]
    ids = list(stored.columns["id"])[:4]
    recs = {r.id: r for r in open_dataset("flickr8k", trained["data"]).records("S", "test")}
    want = stored.embedding.numpy()[:4]
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(run.embed("S", [recs[i].path for i in ids]), want, atol=2e-3)

    # new wav files written here: 22.05 kHz stereo, 8 kHz mono, and one of 10 ms (too short for HuBERT)
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    _tone(wavs / "stereo.wav", 1.2, 22_050, 2, 440.0)
    _tone(wavs / "low.wav", 0.8, 8_000, 1, 220.0)
    _tone(wavs / "blip.wav", 0.01, 16_000, 1, 880.0)
    out = tmp_path / "emb"
    r = CliRunner().invoke(app, ["embed", str(speech_run), str(wavs), "--modality", "S", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "skipped blip: audio too short" in r.output and "wrote 2 S embeddings" in r.output
    cols, feats = open_cache(out).read(["embedding"])
    assert sorted(cols["id"]) == ["low", "stereo"]
    bb = run.backbone("S")
    for rid, emb in zip(cols["id"], feats["embedding"]):
        direct = run.project("S", encode(bb, bb.preprocess([load_audio(wavs / f"{rid}.wav")])))
        np.testing.assert_allclose(emb[None], direct, atol=1e-4)
    # and search from speech to text works from the command line
    q = ["search", str(speech_run), "--query", str(wavs / "low.wav"), "--from", "S", "--to", "T", "-k", "3", "--json"]
    r = CliRunner().invoke(app, q)
    assert r.exit_code == 0 and r.output.count('"id"') == 3, r.output
