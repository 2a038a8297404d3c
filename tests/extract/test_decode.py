"""Decoding on the device (`pcmpipe.extract.decode`), run here on the CPU: decode_jpeg + the tensor transforms agree
with the PIL path within the stated tolerance, and every image the device path cannot take (CMYK, progressive,
not a JPEG, broken) falls back to the CPU path alone, is counted, and ends as the PIL path ends it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from pcmpipe.backbones import create_backbone
from pcmpipe.datasets import Record
from pcmpipe.extract import decode, sources

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from image_extract import photo_like  # noqa: E402

SIZES = [(500, 375), (500, 333), (375, 500), (500, 500)]  # Flickr8k's


@pytest.mark.parametrize("size", [224, 64])  # ViT-B/32's input, the tiny tower's
def test_tensor_path_matches_the_pil_path(size, tmp_path, one_thread):
    cfg = PreprocessCfg(size=size)
    pil = image_transform_v2(cfg, is_train=False)
    tensors = decode.TensorPreprocess(size, "shortest", decode._INTERPOLATION["bicubic"], cfg.mean, cfg.std)
    rng = np.random.default_rng(0)
    paths = []
    for i, wh in enumerate(SIZES + [(640, 427)]):
        paths.append(tmp_path / f"{i}.jpg")
        photo_like(paths[-1], rng, wh)
    ref = torch.stack([pil(Image.open(p).convert("RGB")) for p in paths])
    raw = [decode_jpeg(torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB)
           for p in paths]  # fmt: skip
    ours = tensors(raw)
    diff = (ours - ref).abs()
    assert ours.shape == ref.shape == (len(paths), 3, size, size)
    assert float(diff.max()) <= decode.TOLERANCE["max"] and float(diff.mean()) <= decode.TOLERANCE["mean"]
    assert float(diff.max()) > 0  # two implementations: the tolerance is what keeps them together


def _inputs(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    out = {}
    for i, wh in enumerate(SIZES):
        out[f"jpeg{i}"] = folder / f"jpeg{i}.jpg"
        photo_like(out[f"jpeg{i}"], rng, wh)
    im = Image.open(out["jpeg0"])
    out["cmyk"], out["progressive"], out["png"] = folder / "cmyk.jpg", folder / "prog.jpg", folder / "plain.png"
    im.convert("CMYK").save(out["cmyk"], "JPEG", quality=90)
    im.save(out["progressive"], "JPEG", quality=90, progressive=True)
    im.save(out["png"])
    data = out["jpeg1"].read_bytes()
    out["broken"] = folder / "broken.jpg"
    out["broken"].write_bytes(data[: len(data) // 2])  # header intact, scan cut short
    assert Image.open(io.BytesIO(out["broken"].read_bytes())).format == "JPEG"
    return out


def _run(batches) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    feats, skipped, fallback = {}, {}, 0
    for item in batches:
        if isinstance(item, sources.Skipped):
            skipped[item.record.id] = item.reason
            continue
        fallback += item.fallback
        feats.update({r.id: f for r, f in zip(item.records, item.features)})
    return feats, skipped, fallback


def test_device_path_falls_back_per_image_and_agrees(tmp_path, one_thread):
    files = _inputs(tmp_path)
    records = [Record(id=k, links={"image_id": k}, path=p) for k, p in files.items()]
    bb = create_backbone("clip-tiny-image", weights="random:0")
    assert not decode.on_device(bb)  # on CPU extraction keeps the PIL path
    ours, ours_skipped, fallback = _run(decode.device_image_batches(bb, records, batch_size=3, workers=0))
    ref, ref_skipped, ref_fallback = _run(sources.image_batches(bb, records, 3, 0))
    assert ref_fallback == 0
    assert fallback == 4  # CMYK, progressive and PNG in the worker, the broken JPEG after the decoder refused it
    assert ours_skipped == ref_skipped and set(ours_skipped) == {"broken"}
    assert ours_skipped["broken"].startswith("unreadable image")
    assert sorted(ours) == sorted(ref) == sorted(set(files) - {"broken"})
    for k in ("cmyk", "progressive", "png"):  # the CPU path itself: the same numbers
        np.testing.assert_array_equal(ours[k], ref[k])
    for k in ("jpeg0", "jpeg1", "jpeg2", "jpeg3"):
        cos = float(ours[k] @ ref[k] / (np.linalg.norm(ours[k]) * np.linalg.norm(ref[k])))
        assert cos > 0.9999, (k, cos)


def test_tensor_path_is_refused_for_a_transform_it_does_not_restate():
    bb = create_backbone("clip-tiny-image", weights="random:0")
    bb.meta = {**bb.meta, "preprocess": {**bb.meta["preprocess"], "resize_mode": "longest"}}
    assert decode.TensorPreprocess.of(bb) is None
    with pytest.raises(ValueError, match="cannot run as tensors"):
        next(iter(decode.device_image_batches(bb, [], 4, 0)))


def test_extraction_counts_the_fallback_in_its_summary(tmp_path, monkeypatch, one_thread):
    """The runner's wiring, with the device path switched on for a CPU backbone (the only device here)."""
    from extraction import extract
    from rich.console import Console

    from pcmpipe.cli.render import extract_table

    data = tmp_path / "data"
    data.mkdir()
    files = _inputs(data)
    rows = "".join(f"{k},{p.name},train\n" for k, p in files.items())
    (data / "images.csv").write_text("image_id,file,split\n" + rows)
    (data / "dataset.yaml").write_text(
        "files: images.csv\nsplit_column: split\nmodalities:\n  I: {kind: image, column: file, id: image_id}\n"
    )
    monkeypatch.setattr(decode, "on_device", lambda backbone: True)
    summary = extract("mine", data, splits=["train"], backbones={"image": "clip-tiny-image"},
                      weights={"image": "random:0"}, device="cpu", workers=0, cache_root=tmp_path / "c")  # fmt: skip
    part = summary.parts[0]
    assert (part.rows, part.skipped, part.decode_fallback) == (7, 1, 4)
    assert summary.to_dict()["parts"][0]["decode_fallback"] == 4
    console = Console(record=True, width=200)
    console.print(extract_table(summary))
    assert "cpu-decoded" in console.export_text()
