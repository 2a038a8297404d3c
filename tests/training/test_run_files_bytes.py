"""The safetensors files a run writes: byte-identical from one process to the next (the metadata's key order no
longer comes from a hash map), still plain safetensors, and a full disk while writing one is one line naming it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from synthetic_cache import write_synthetic_cache

from pcmpipe.checksums import state_sha256
from pcmpipe.training import rundir as runs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}

# Writes heads, embeddings and a fine-tuned tower (metadata of 3, 1 and 7 keys) from fixed tensors.
WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from types import SimpleNamespace
    import torch
    from pcmpipe.heads import build_heads
    from pcmpipe.training import rundir as runs
    from pcmpipe.training.finetune.model import save_backbone
    out = Path(sys.argv[1])
    out.mkdir()
    torch.manual_seed(0)
    shapes = {"I": (3,), "T": (3,), "S": (2, 3)}
    state = build_heads(shapes, dim=4).state_dict()
    runs.save_heads(out / "heads.safetensors", state, shapes, 4, 14.3)
    g = torch.Generator().manual_seed(0)
    runs.save_embeddings(out, "I", torch.randn(5, 4, generator=g), "image_id", {"id": ["a", "b", "c", "d", "e"]})
    # the backbone's name and meta are all save_backbone reads of it
    backbone = SimpleNamespace(name="clip-tiny-image", meta={"weights": "random:0", "architecture": {"width": 4}})
    tower = {f"visual.{k}": v for k, v in state.items()}
    save_backbone(out / "tower.safetensors", tower, backbone, "image", "run \\u00e9")
    """
)


def _digests(folder: Path) -> dict[str, str]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow  # two processes importing torch and the backbones
def test_safetensors_files_are_byte_identical_under_any_hash_seed(tmp_path):
    """Two processes (different PYTHONHASHSEED too) write the same tensors and metadata: same bytes. Before, the
    metadata came out in the order of safetensors' Rust HashMap, randomly seeded in every process: with the
    tower's 7 keys, two processes agreed once in 5,040."""
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        proc = subprocess.run(
            [sys.executable, "-c", WRITER, str(out)], env={**ENV, "PYTHONHASHSEED": seed}, capture_output=True
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(_digests(out))
    assert outs[0] == outs[1] and len(outs[0]) == 4  # heads, I.safetensors, I.json, tower
    tower = tmp_path / "seed1" / "tower.safetensors"
    with safe_open(str(tower), framework="pt") as f:  # still a safetensors file, metadata intact
        meta = f.metadata()
    assert meta["finetune_run"] == "run \u00e9" and meta["kind"] == "image" and "sha256" in meta
    size = int.from_bytes(tower.read_bytes()[:8], "little")
    header = json.loads(tower.read_bytes()[8 : 8 + size])
    assert list(header["__metadata__"]) == sorted(meta)  # in the file: sorted keys
    heads, scale = runs.load_heads(tmp_path / "seed2")
    assert set(heads) == {"I", "T", "S"} and abs(scale - 14.3) < 1e-5
    assert runs.load_embeddings(tmp_path / "seed2")["I"].embedding.shape == (5, 4)

    # files written before, with safetensors' own header (metadata in hash-map order), still load
    old = tmp_path / "old"
    (old / "embeddings").mkdir(parents=True)
    with safe_open(str(tmp_path / "seed1" / "heads.safetensors"), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(state, str(old / "heads.safetensors"), metadata=meta)
    emb = load_file(str(tmp_path / "seed1" / "embeddings" / "I.safetensors"))
    save_file(emb, str(old / "embeddings" / "I.safetensors"), metadata={"sha256": state_sha256(emb)})
    (old / "embeddings" / "I.json").write_bytes((tmp_path / "seed1" / "embeddings" / "I.json").read_bytes())
    assert set(runs.load_heads(old)[0]) == {"I", "T", "S"} and runs.load_embeddings(old)["I"].embedding.shape[0] == 5


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bytes") / "cache"
    write_synthetic_cache(root, images={"train": 32, "val": 8, "test": 8})
    return root


def _train(cache: Path, runs_root: Path, *extra: str, env: dict | None = None, preexec=None):
    args = ["train", "--dataset", "synth", "--modalities", "I,T,S", "--cache-root", str(cache), "--name", "b"]
    args += ["--runs-root", str(runs_root), "--epochs", "2", "--batch-size", "8", "--threads", "1"]
    args += ["--device", "cpu", "--set", "progress=false", *extra]
    return subprocess.run(
        [sys.executable, "-m", "pcmpipe", *args],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=600,
        preexec_fn=preexec,
    )


@pytest.mark.slow
def test_two_trainings_of_one_config_write_the_same_bytes(cache, tmp_path):
    """docs/reliability.md promises identical files for one config: two `pcmpipe train` processes under different
    PYTHONHASHSEED give byte-identical heads.safetensors and embeddings/*.safetensors."""
    found = []
    for seed in ("11", "12"):
        res = _train(cache, tmp_path / f"runs{seed}", env={**ENV, "PYTHONHASHSEED": seed})
        assert res.returncode == 0, res.stderr
        run = tmp_path / f"runs{seed}" / "b"
        files = ["heads.safetensors", *(f"embeddings/{m}.safetensors" for m in "ITS")]
        found.append({f: (run / f).read_bytes() for f in files})
    assert found[0] == found[1]
    assert load_file(str(tmp_path / "runs11" / "b" / "heads.safetensors")).keys()  # loads with safetensors


@pytest.mark.slow  # a `pcmpipe train` process
def test_a_full_disk_while_writing_the_checkpoint_is_one_line_naming_it(cache, tmp_path):
    """A real write failure: RLIMIT_FSIZE caps file size (Python ignores SIGXFSZ, so the write fails with EFBIG,
    which safetensors raises as a SafetensorError, not an OSError). The run's config.json fits under the cap,
    its first checkpoint does not."""
    import resource

    limit = 48 << 10

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = _train(cache, tmp_path / "runs", "--set", "dim=256", preexec=cap)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "checkpoint.safetensors" in lines[0] and "(EFBIG)" in lines[0] and "MB free" in lines[0], lines[0]
    tmp = tmp_path / "runs" / ".tmp-b"
    assert (tmp / "config.json").is_file() and not list(tmp.glob(".*.tmp"))  # no partial file left behind
