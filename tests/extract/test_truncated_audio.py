"""A WAV cut off after its header is skipped with the reason (errors.jsonl), not encoded from what is left."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pcmpipe.datasets import Record, load_audio
from pcmpipe.errors import UserError
from pcmpipe.extract.sources import AudioFiles


@pytest.fixture
def wavs(tmp_path):
    tone = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    whole, cut, flt = tmp_path / "whole.wav", tmp_path / "cut.wav", tmp_path / "float.wav"
    sf.write(str(whole), tone, 16000, subtype="PCM_16")
    cut.write_bytes(whole.read_bytes()[:20_044])  # header + 10,000 of the 16,000 frames
    sf.write(str(flt), np.stack([tone, tone], 1), 22050, subtype="FLOAT")  # stereo float: a 'fact' chunk too
    return whole, cut, flt


def test_load_audio_refuses_a_truncated_wav_and_reads_whole_ones(wavs):
    whole, cut, flt = wavs
    assert load_audio(whole).shape == (16000,)
    assert abs(load_audio(flt).shape[0] - 16000 * 16000 / 22050) <= 1
    with pytest.raises(UserError, match=r"truncated audio file .*cut.wav: its header declares 16000 frames, .* 10000"):
        load_audio(cut)


def test_a_truncated_wav_is_skipped_with_its_reason(wavs):
    records = [Record(id=p.stem, links={"caption_id": p.stem}, path=p) for p in wavs]
    items = [AudioFiles(records, min_samples=400)[i] for i in range(3)]
    assert [err is None for _, _, err in items] == [True, False, True]
    assert "truncated audio file" in items[1][2] and items[1][1] is None
