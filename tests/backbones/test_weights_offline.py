"""Published weights without a network: one line within seconds, not a minute of hub retries.

The test machine has no network; where it has one, the tests skip (they would download the weights).
Each case runs in a fresh process with an empty Hugging Face cache, so nothing cached can answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pcmpipe.backbones.weights import hub_unreachable

pytestmark = pytest.mark.skipif(hub_unreachable() is None, reason="the Hugging Face hub is reachable here")


def _pcmpipe(tmp_path, *args: str, offline: bool) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "COLUMNS": "400"})
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pcmpipe", *args], capture_output=True, text=True, env=env, timeout=120)
    return res, time.monotonic() - start


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline") / "flickr8k"
    subprocess.run(
        [sys.executable, "-m", "pcmpipe", "synth", "flickr8k", "--out", str(root), "--images", "6"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root


@pytest.mark.slow  # a `pcmpipe extract` process each, importing torch and transformers
@pytest.mark.parametrize("offline", [False, True], ids=["no-network", "HF_HUB_OFFLINE"])
@pytest.mark.parametrize("modality, flag", [("I", "--weights-image"), ("S", "--weights-audio")])
def test_default_weights_offline_fail_fast_with_one_line(flickr, tmp_path, modality, flag, offline):
    res, seconds = _pcmpipe(
        tmp_path,
        "extract",
        "--dataset",
        "flickr8k",
        "--root",
        str(flickr),
        "--modalities",
        modality,
        "--split",
        "val",
        "--cache-root",
        str(tmp_path / "c"),
        flag,
        "default",
        "--workers",
        "0",
        offline=offline,
    )
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "not in the local Hugging Face cache" in lines[0] and "PATH or random:SEED" in lines[0]
    assert ("HF_HUB_OFFLINE is set" in lines[0]) == offline
    # torch + transformers imports take a few seconds of this; the hub client's retries took about 57
    assert seconds < 30, seconds
