"""The backbone contract (pcmpipe/backbones/README.md): the registry names every backbone once and is free of
torch, `pcmpipe backbones` lists it, and extraction batches through the backbone's hook."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from typer.testing import CliRunner

from pcmpipe.backbones import BACKBONES, DEFAULT_BACKBONES, FAMILIES, create_backbone
from pcmpipe.backbones.registry import backbone_kind, list_backbones, resolve
from pcmpipe.backbones.speech import MAX_AUDIO_SAMPLES, SpeechBackbone
from pcmpipe.datasets import Record
from pcmpipe.errors import UserError
from pcmpipe.extract.sources import Encoded, text_batches
from tests.fresh_imports import loaded_after


def test_the_registry_and_the_cli_defaults_import_no_torch():
    modules = "pcmpipe.backbones.registry, pcmpipe.config.finetune, pcmpipe.cli"
    assert loaded_after(modules, ("torch", "open_clip", "transformers")) == []


def test_defaults_come_from_the_registry():
    from pcmpipe.cli.extract import extract_cmd
    from pcmpipe.config.finetune import FinetuneConfig

    params = inspect.signature(extract_cmd).parameters
    for kind in ("image", "text", "audio"):
        assert params[f"{kind}_backbone"].default.default == DEFAULT_BACKBONES[kind]
        assert backbone_kind(DEFAULT_BACKBONES[kind]) == kind
    fields = FinetuneConfig.model_fields
    assert fields["image_backbone"].default == DEFAULT_BACKBONES["image"]
    assert fields["text_backbone"].default == DEFAULT_BACKBONES["text"]


def test_every_factory_is_a_backbone_of_its_kind():
    for entry in BACKBONES.values():
        assert entry.backbone_class().modality_kind == entry.kind
    for family in FAMILIES.values():
        for kind in family.factories:
            assert family.backbone_class(kind).modality_kind == kind
    # the speech encoders share a base; neither is the other
    hubert, _ = resolve("hubert-base")
    other, arch = resolve("hf-audio:ORG/NAME")
    assert issubclass(hubert, SpeechBackbone) and issubclass(other, SpeechBackbone)
    assert not issubclass(other, hubert) and arch == "ORG/NAME"


def test_unknown_names_and_kinds_are_one_line():
    with pytest.raises(UserError, match="unknown backbone 'nope'; choose one of clip-vit-b32-image"):
        resolve("nope")
    with pytest.raises(UserError, match="hubert-tiny encodes audio, not text"):
        resolve("hubert-tiny", "text")
    with pytest.raises(UserError, match="hf-text:x encodes text, not image"):
        resolve("hf-text:x", "image")
    with pytest.raises(UserError, match="name the model after 'open_clip:'"):
        resolve("open_clip:", "image")


def test_listing_names_every_backbone_and_open_clips_tags():
    rows = {r.name: r for r in list_backbones()}
    assert set(BACKBONES) <= set(rows)
    assert rows["hubert-base"].default_for == ("audio",) and rows["hubert-tiny"].default_for == ()
    clip = rows["open_clip:MODEL[@TAG]"]
    assert clip.family and clip.kinds == ("image", "text") and ("ViT-B-32", "openai") in clip.pretrained
    assert all(not r.pretrained for r in list_backbones(with_tags=False))


def test_backbones_command_lists_names_and_tags():
    from pcmpipe.cli import app

    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    res = CliRunner().invoke(app, ["backbones"], env=env)
    assert res.exit_code == 0, res.output
    assert "clip-vit-b32-image" in res.output and "open_clip:MODEL[@TAG]" in res.output
    assert "open_clip pretrained tags" in res.output and "laion2b_s34b_b79k" in res.output
    res = CliRunner().invoke(app, ["backbones", "--no-tags"], env=env)
    assert res.exit_code == 0 and "hubert-tiny" in res.output and "laion2b_s34b_b79k" not in res.output


def test_default_batching_sorts_by_length_and_keeps_ties_in_order():
    bb = create_backbone("clip-tiny-text", "random:0")
    assert bb.batches([1] * 5, 2) == [[0, 1], [2, 3], [4]]  # images: all one size, record order
    assert bb.batches([5, 3, 9, 3], 2) == [[1, 3], [0, 2]]
    speech = create_backbone("hubert-tiny", "random:0")
    # speech also caps a batch's padded samples: two 60 s clips cannot share one
    assert speech.batches([60 * 16_000, 60 * 16_000], 8) == [[0], [1]]
    assert speech.batches([10, 10], 8, None) == [[0, 1]] and 2 * 60 * 16_000 > MAX_AUDIO_SAMPLES
    assert speech.min_length() == 400 and bb.min_length() == 1


def test_extraction_batches_through_the_backbones_hook():
    bb = create_backbone("clip-tiny-text", "random:0")
    records = [Record(id=str(i), links={}, text=t) for i, t in enumerate(["a b", "a", "a b c d", "a b c"])]
    asked = []

    def one_at_a_time(lengths, batch_size, max_padding=None):
        asked.append(list(lengths))
        return [[i] for i in reversed(range(len(lengths)))]

    bb.batches = one_at_a_time  # type: ignore[method-assign]
    got = [item for item in text_batches(bb, records, batch_size=64)]
    assert all(isinstance(g, Encoded) and len(g.records) == 1 for g in got)
    assert [g.records[0].id for g in got] == ["3", "2", "1", "0"]
    assert asked == [[4, 3, 6, 5]]  # token lengths with start and end of text
    assert np.isfinite(np.concatenate([g.features for g in got])).all()
