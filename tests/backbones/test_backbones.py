"""Backbones: weights specs, the offline loading path users take with real checkpoints, exact text trimming,
padding-invariant HuBERT batching. Tiny configs of the real architectures; paper sizes in `slow` tests."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may download

import numpy as np
import pytest
import torch

from pcmpipe.backbones import BACKBONES, create_backbone, parse_weights, resolve_device, state_sha256
from pcmpipe.backbones.clip import load_clip
from pcmpipe.errors import UserError

CAPTIONS = ["a dog runs on the grass", "two small birds", "", "a " * 120, "A photo of a Black footed Albatross."]


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


# ---------------------------------------------------------------- weights specs


def test_parse_weights(tmp_path):
    assert parse_weights("default").kind == "default" and parse_weights(None).kind == "default"
    assert parse_weights("openai").kind == "tag"
    assert parse_weights("random").seed == 0 and parse_weights("random:7").seed == 7
    assert parse_weights("random:7").label == "random:7"
    assert parse_weights("hf:facebook/hubert-base-ls960").value == "facebook/hubert-base-ls960"
    f = tmp_path / "ckpt.pt"
    f.write_bytes(b"x")
    spec = parse_weights(str(f))
    assert spec.kind == "path" and spec.label == "checkpoint"  # the path is not in the fingerprint; the checksum is
    for bad in ("random:x", str(tmp_path / "missing.pt"), "hf:nope"):
        with pytest.raises(UserError):
            parse_weights(bad)


def test_unknown_backbone_and_device():
    with pytest.raises(UserError, match="unknown backbone"):
        create_backbone("resnet-50")
    with pytest.raises(UserError):
        resolve_device("tpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_state_sha256_is_order_free_and_sensitive():
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)}
    b = {"b": a["b"].clone(), "w": a["w"].clone()}
    assert state_sha256(a) == state_sha256(b)
    b["w"][0, 0] = 1e-7
    assert state_sha256(a) != state_sha256(b)
    assert state_sha256(a) != state_sha256({"w": a["w"].reshape(3, 2), "b": a["b"]})  # shape counts


def test_random_weights_are_seeded():
    one, again, other = (create_backbone("clip-tiny-image", w) for w in ("random", "random:0", "random:1"))
    assert one.meta["weights_sha256"] == again.meta["weights_sha256"] != other.meta["weights_sha256"]
    assert one.meta["weights"] == "random:0" and other.meta["weights"] == "random:1"


def test_registry_kinds_and_shapes():
    # the registry states each kind without importing the class; the class, once imported, agrees
    assert all(e.backbone_class().modality_kind == e.kind for e in BACKBONES.values())
    assert {n: e.kind for n, e in BACKBONES.items()} == {
        "clip-vit-b32-image": "image",
        "clip-vit-b32-text": "text",
        "hubert-base": "audio",
        "clip-tiny-image": "image",
        "clip-tiny-text": "text",
        "hubert-tiny": "audio",
    }
    assert create_backbone("hubert-tiny", "random").feature_shape == (5, 64)
    assert create_backbone("clip-tiny-text", "random").feature_shape == (32,)


# ---------------------------------------------------------------- CLIP


def test_text_trimming_matches_open_clip_encode_text():
    bb = create_backbone("clip-tiny-text", "random:3")
    tokens = bb.preprocess(CAPTIONS)
    assert tokens.shape == (len(CAPTIONS), 77)
    with torch.inference_mode():
        trimmed = bb.encode(tokens)
        padded = bb.model.encode_text(tokens)  # open_clip on the full 77-token context
        alone = torch.cat([bb.encode(tokens[i : i + 1]) for i in range(len(CAPTIONS))])
    torch.testing.assert_close(trimmed, padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=0)


def test_clip_checkpoint_roundtrip_through_the_user_path(tmp_path):
    """Save random weights as a user's checkpoint would be, load them with --weights PATH, compare outputs."""
    from PIL import Image
    from safetensors.torch import save_file

    source, _, _ = load_clip("tiny", parse_weights("random:11"))
    pt, st = tmp_path / "clip_tiny.pt", tmp_path / "clip_tiny.safetensors"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, pt)  # open_clip training checkpoint layout
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)) for _ in range(3)]
    for path in (pt, st):
        img = create_backbone("clip-tiny-image", str(path))
        txt = create_backbone("clip-tiny-text", str(path))
        assert img.meta["weights"] == "checkpoint"
        assert img.meta["weights_sha256"] == state_sha256(source.visual.state_dict())
        x = torch.stack([img.preprocess(im) for im in images])
        assert x.shape == (3, 3, 64, 64)
        toks = txt.preprocess(CAPTIONS)
        with torch.inference_mode():
            torch.testing.assert_close(img.encode(x), source.encode_image(x), atol=1e-6, rtol=0)
            torch.testing.assert_close(txt.encode(toks), source.encode_text(toks), atol=1e-5, rtol=0)
    fresh = create_backbone("clip-tiny-image", "random:0")
    assert fresh.meta["weights_sha256"] != img.meta["weights_sha256"]


def test_clip_torchscript_archive_loads(tmp_path):
    """OpenAI distributes ViT-B-32.pt as a TorchScript archive; that file works as --weights PATH too."""
    import warnings

    source, _, _ = load_clip("tiny", parse_weights("random:4"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(
            source, (torch.zeros(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)), check_trace=False
        )
        traced.save(str(tmp_path / "jit.pt"))
        bb = create_backbone("clip-tiny-text", str(tmp_path / "jit.pt"))
    toks = bb.preprocess(CAPTIONS)
    with torch.inference_mode():
        torch.testing.assert_close(bb.encode(toks), source.encode_text(toks), atol=1e-5, rtol=0)


def test_clip_bad_weights_are_user_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load CLIP weights"):
        create_backbone("clip-tiny-image", str(junk))
    with pytest.raises(UserError, match="no published weights"):
        create_backbone("clip-tiny-text", "openai")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    with pytest.raises(UserError):
        create_backbone("clip-tiny-text", str(hub_dir))


# ---------------------------------------------------------------- HuBERT


def _hf_layer_means(model, wave: np.ndarray, prep) -> torch.Tensor:
    """Reference: plain transformers forward of ONE unpadded utterance, mean over time of every hidden state."""
    x = prep([wave], sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        hs = model(x, output_hidden_states=True).hidden_states
    return torch.stack([h[0].mean(0) for h in hs])


def test_hubert_save_pretrained_roundtrip(tmp_path):
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from pcmpipe.backbones.hubert import ARCHS

    torch.manual_seed(5)
    ref = HubertModel(HubertConfig(**ARCHS["tiny"])).eval()
    prep = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    ref.save_pretrained(tmp_path / "hub")
    prep.save_pretrained(tmp_path / "hub")
    bb = create_backbone("hubert-tiny", str(tmp_path / "hub"))
    assert bb.meta["preprocess"]["do_normalize"] is True  # follows the checkpoint's preprocessor config
    assert bb.meta["weights_sha256"] == state_sha256(ref.state_dict())
    waves = _waves([16000, 7000, 12345])
    with torch.inference_mode():
        got = bb.encode(bb.preprocess(waves))
    want = torch.stack([_hf_layer_means(ref, w, prep) for w in waves])
    assert got.shape == (3, 5, 64)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_hubert_padding_does_not_change_features():
    bb = create_backbone("hubert-tiny", "random:2")
    waves = _waves([16000, 4000, 9999, 401])
    with torch.inference_mode():
        batched = bb.encode(bb.preprocess(waves))
        alone = torch.cat([bb.encode(bb.preprocess([w])) for w in waves])
        # what transformers gives with its own attention mask: the first GroupNorm sees the padding
        batch = bb.preprocess(waves)
        bb._masked_norm.valid = None
        plain = bb.model(batch["input_values"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)
    frames = int(bb.num_frames(torch.tensor(4000)))
    plain_mean = plain.hidden_states[-1][1, :frames].mean(0)
    assert (plain_mean - alone[1, -1]).abs().max() > 1e-3  # the masked GroupNorm is what makes batching exact


def test_hubert_weights_errors(tmp_path):
    from transformers import HubertConfig, HubertModel

    from pcmpipe.backbones.hubert import ARCHS

    HubertModel(HubertConfig(**ARCHS["tiny"])).save_pretrained(tmp_path / "tiny")
    with pytest.raises(UserError, match="not hubert-base"):
        create_backbone("hubert-base", str(tmp_path / "tiny"))
    with pytest.raises(UserError, match="save_pretrained directory"):
        create_backbone("hubert-tiny", str(tmp_path))
    with pytest.raises(UserError, match="no published weights"):
        create_backbone("hubert-tiny")
    downloaded = os.path.expanduser("~/.cache/huggingface/hub/models--facebook--hubert-base-ls960")
    if not (os.environ.get("HF_HOME") or os.path.isdir(downloaded)):
        with pytest.raises(UserError, match="cannot fetch the HuBERT facebook/hubert-base-ls960 weights"):
            create_backbone("hubert-base")  # offline and not downloaded: one clear line, no traceback


# ---------------------------------------------------------------- paper sizes


@pytest.mark.slow
def test_paper_size_backbones_random():
    img = create_backbone("clip-vit-b32-image", "random")
    txt = create_backbone("clip-vit-b32-text", "random")
    hub = create_backbone("hubert-base", "random")
    assert (img.feature_shape, txt.feature_shape, hub.feature_shape) == ((512,), (512,), (13, 768))
    assert img.meta["architecture"]["quick_gelu"] is True and img.meta["preprocess"]["size"] == 224
    tokens = txt.preprocess(CAPTIONS)
    with torch.inference_mode():
        torch.testing.assert_close(txt.encode(tokens), txt.model.encode_text(tokens), atol=1e-5, rtol=0)
        assert img.encode(torch.zeros(2, 3, 224, 224)).shape == (2, 512)
        waves = _waves([16000, 6000])
        batched = hub.encode(hub.preprocess(waves))
        alone = torch.cat([hub.encode(hub.preprocess([w])) for w in waves])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)
    assert batched.shape == (2, 13, 768)
