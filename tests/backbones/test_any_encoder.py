"""Any encoder, offline: tiny random models built from configs and saved with save_pretrained (or open_clip's
local-dir layout) load back through the path a hub id takes, and encode as their own libraries do."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from pcmpipe.backbones import backbone_kinds, create_backbone
from pcmpipe.errors import UserError
from pcmpipe.extract.sources import Encoded, text_batches

TEXTS = ["a dog runs on the beach", "two cats", "a red car parked next to a very tall tree today", "boat"]
WORDS = sorted({w for t in TEXTS for w in t.split()} | {"sea", "sun"})


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory) -> Path:
    """A 2-layer BERT in sentence-transformers' layout: mean pooling, then Normalize."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-st")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    cfg = BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False})
    )
    (folder / "2_Normalize").mkdir()
    return folder


def _encode_all(backbone, texts: list[str]) -> np.ndarray:
    from pcmpipe.datasets import Record

    records = [Record(id=str(i), links={"id": str(i)}, text=t) for i, t in enumerate(texts)]
    out = np.zeros((len(texts), *backbone.feature_shape), np.float32)
    for item in text_batches(backbone, records, batch_size=3):
        assert isinstance(item, Encoded)
        for r, f in zip(item.records, item.features):
            out[int(r.id)] = f
    return out


def test_hf_text_matches_sentence_transformers(st_folder, one_thread):
    from sentence_transformers import SentenceTransformer

    bb = create_backbone(f"hf-text:{st_folder}")
    assert backbone_kinds(f"hf-text:{st_folder}") == ("text",) and bb.feature_shape == (32,)
    assert bb.meta["architecture"]["pooling"] == "mean" and bb.meta["architecture"]["normalize"]
    ours = _encode_all(bb, TEXTS)  # length-sorted batches of 3, padded, truncated at max_seq_length 8
    ref = SentenceTransformer(str(st_folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_hf_text_weights_strings(st_folder, one_thread, tmp_path):
    name = f"hf-text:{st_folder}"
    default = create_backbone(name)
    a, b = create_backbone(name, "random:1"), create_backbone(name, "random:1")
    assert a.meta["weights_sha256"] == b.meta["weights_sha256"] != default.meta["weights_sha256"]
    assert a.meta["weights"] == "random:1" and a.meta["preprocess"] == default.meta["preprocess"]
    # weights from another save_pretrained folder of the same architecture
    a.model.save_pretrained(tmp_path / "other")
    other = create_backbone(name, str(tmp_path / "other"))
    assert other.meta["weights_sha256"] == a.meta["weights_sha256"] and other.meta["weights"] == "checkpoint"
    with pytest.raises(UserError, match="neither a folder nor a hub id"):
        create_backbone("hf-text:no-such-model")
    with pytest.raises(UserError, match="cannot fetch"):
        create_backbone("hf-text:nobody/absent-model")  # offline and not cached: one line, no traceback


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_hf_audio_keeps_every_layer_and_batches_exactly(family, tmp_path, one_thread):
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    cfg = AutoConfig.for_model(
        family,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="group",
    )
    torch.manual_seed(0)
    AutoModel.from_config(cfg).save_pretrained(tmp_path / family)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(tmp_path / family)
    bb = create_backbone(f"hf-audio:{tmp_path / family}")
    assert bb.feature_shape == (3, 32) and bb.meta["architecture"]["name"] == family
    assert bb.meta["preprocess"]["do_normalize"] is True  # the folder's feature extractor, not HuBERT's default
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (800, 1500, 1200)]
    with torch.inference_mode():
        batched = bb.encode(bb.preprocess(waves)).numpy()
        single = np.concatenate([bb.encode(bb.preprocess([w])).numpy() for w in waves])
    np.testing.assert_allclose(batched, single, atol=1e-4)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """A tiny CLIP in open_clip's hf-hub / local-dir layout: open_clip_config.json + open_clip_model.safetensors."""
    import open_clip
    from safetensors.torch import save_file

    from pcmpipe.backbones.clip import TINY_CONFIG

    folder = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    pre = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": pre}))
    return folder


def test_open_clip_local_dir_both_towers(clip_folder, one_thread):
    import open_clip
    from PIL import Image

    name = f"open_clip:local-dir:{clip_folder}"
    assert backbone_kinds(name) == ("image", "text")
    image = create_backbone(name, kind="image")
    text = create_backbone(name, kind="text")
    ref, _, ref_pre = open_clip.create_model_and_transforms(f"local-dir:{clip_folder}")
    ref.eval()
    img = Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype("uint8"))
    with torch.inference_mode():
        x = image.preprocess(img)[None]
        np.testing.assert_allclose(x.numpy(), ref_pre(img)[None].numpy())
        np.testing.assert_allclose(image.encode(x).numpy(), ref.encode_image(x).numpy(), atol=1e-5)
        tokens = text.preprocess(TEXTS)
        np.testing.assert_allclose(_encode_all(text, TEXTS), ref.encode_text(tokens).numpy(), atol=1e-5)
    assert image.meta["preprocess"]["mean"] == [0.5, 0.5, 0.5] and image.feature_shape == (32,)
    assert image.meta["weights_sha256"] != text.meta["weights_sha256"]
    seeded = create_backbone(name, "random:3", kind="image")
    assert seeded.meta["weights_sha256"] != image.meta["weights_sha256"]
    with pytest.raises(UserError, match="has image and text towers"):
        create_backbone(name)


def test_open_clip_names_are_checked(one_thread):
    with pytest.raises(UserError, match="no architecture"):
        create_backbone("open_clip:ViT-Nope", kind="image")
    with pytest.raises(UserError, match="unknown open_clip weights"):
        create_backbone("open_clip:ViT-B-32@no_such_tag", kind="image")
    with pytest.raises(UserError, match="name the weights"):
        create_backbone("open_clip:ViT-B-32", kind="text")
    assert create_backbone("open_clip:RN50", "random:0", kind="image").feature_shape == (1024,)
