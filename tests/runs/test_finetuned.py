"""A fine-tuned run (image tower unfrozen, one epoch) through load_run, embed and export: its embeddings come
from the run's own fine-tuned tower, never from the frozen weights its caches were extracted with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import pcmpipe
from pcmpipe.backbones import create_backbone
from pcmpipe.cache import open_cache
from pcmpipe.cli import app
from pcmpipe.datasets import open_dataset
from pcmpipe.errors import UserError
from pcmpipe.extract.sources import encode
from pcmpipe.runs.embed import embed_cache_to_cache
from pcmpipe.runs.export import export_run
from pcmpipe.training.finetune import FinetuneConfig, finetune
from pcmpipe.training.rundir import load_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tuned(trained, tmp_path_factory) -> Path:
    """One epoch of fine-tuning the tiny CLIP image tower on the package's synthetic Flickr8k."""
    root = tmp_path_factory.mktemp("ft")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = FinetuneConfig.from_dict(
        dict(
            dataset="flickr8k", modalities="I,T", data_root=str(trained["data"]), cache_root=str(trained["cache"]),
            runs_root=str(root / "runs"), unfreeze="image", batch_size=8, epochs=1, dim=32, progress=False,
            image_backbone="clip-tiny-image", text_backbone="clip-tiny-text", weights_image="random:0",
            weights_text="random:0", backbone_lr=1e-3,
        )
    )  # fmt: skip
    run = finetune(cfg)
    torch.set_num_threads(before)
    return Path(run)


def _test_images(trained, run_dir: Path) -> tuple[list[str], list[Path], np.ndarray]:
    stored = load_embeddings(run_dir)["I"]
    ids = list(stored.columns["id"])
    recs = {r.id: r for r in open_dataset("flickr8k", trained["data"]).records("I", "test")}
    emb = stored.embedding.numpy()
    return ids, [recs[i].path for i in ids], emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_a_finetuned_run_embeds_with_its_own_tower(trained, tuned, tmp_path):
    run = pcmpipe.load_run(tuned)
    assert run.backbones["I"]["weights"] == str(tuned / "image_backbone.safetensors")
    ids, paths, want = _test_images(trained, tuned)
    got = run.embed("I", paths)
    np.testing.assert_allclose(got, want, atol=2e-4)  # what the run stored for its test split
    # the frozen tower through the same head gives other embeddings: the tuned weights are what made `got`
    frozen = create_backbone("clip-tiny-image", "random:0")
    with torch.inference_mode():
        pre = torch.stack([frozen.preprocess(Image.open(p).convert("RGB")) for p in paths])
    stale = run.project("I", encode(frozen, pre))
    assert np.abs(stale - want).max() > 1e-2
    # the CLI writes the same embeddings as a cache
    out = tmp_path / "emb"
    r = CliRunner().invoke(app, ["embed", str(tuned), *map(str, paths), "--modality", "I", "--out", str(out)])
    assert r.exit_code == 0, r.output
    cols, feats = open_cache(out).read(["embedding"])
    assert list(cols["id"]) == [p.stem for p in paths]
    np.testing.assert_allclose(feats["embedding"], got, atol=1e-6)


def test_a_finetuned_export_carries_its_tower(trained, tuned, tmp_path):
    out = export_run(tuned, tmp_path / "export").out
    config = json.loads((out / "config.json").read_text())
    assert config["backbones"]["I"]["weights"] == "image_backbone.safetensors"
    assert (out / "image_backbone.safetensors").is_file()
    back = pcmpipe.load_run(out)
    assert back.backbones["I"]["weights"] == str(out / "image_backbone.safetensors")
    _, paths, want = _test_images(trained, tuned)
    np.testing.assert_allclose(back.embed("I", paths), want, atol=2e-4)
    ref = pcmpipe.load_run(tuned)
    assert back.search(paths[0], from_="I", to="T", k=3) == ref.search(paths[0], from_="I", to="T", k=3)


def test_a_finetuned_head_refuses_the_frozen_towers_cache(trained, tuned, tmp_path):
    """The tuned I head takes the tuned tower's features: a cache extracted with the frozen weights is refused
    (its weights checksum is not the tower's), while the frozen T tower's own cache still goes through."""
    run = pcmpipe.load_run(tuned)
    caches = trained["cache"] / "flickr8k"
    with pytest.raises(UserError, match="weights sha256"):
        embed_cache_to_cache(run, "I", caches / "I" / "test", tmp_path / "stale")
    assert embed_cache_to_cache(run, "T", caches / "T" / "test", tmp_path / "t")["rows"] == 10
