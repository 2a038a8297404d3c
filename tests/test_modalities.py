"""The modality table agrees with what the datasets write and the backbones encode."""

from __future__ import annotations

from pcmpipe.backbones import DEFAULT_BACKBONES, backbone_kind
from pcmpipe.datasets import open_dataset
from pcmpipe.datasets.synthetic import synth
from pcmpipe.modalities import KEYS, KINDS, MODALITIES, NAMES, TOWER_KINDS, UNFREEZABLE


def test_table_covers_the_papers_modalities():
    assert NAMES == ("I", "T", "S", "A", "C", "P")
    assert UNFREEZABLE == {"image": "I", "text": "T"}
    assert TOWER_KINDS == {"I": "image", "T": "text", "P": "text"}
    assert set(KINDS) == {"I", "T", "S", "P"}
    for name, kind in KINDS.items():  # the paper's backbone for that kind does encode it
        assert backbone_kind(DEFAULT_BACKBONES[kind]) == kind, name


def test_records_carry_the_key_and_payload_the_table_names(tmp_path):
    for dataset, images in (("flickr8k", 6), ("cub", 1)):
        synth(dataset, tmp_path / dataset, images=images, seed=0)
        ds = open_dataset(dataset, tmp_path / dataset)
        for m in ds.modalities:
            spec = MODALITIES[m]
            record = ds.records(m, "test")[0]
            assert ds.key(m) == KEYS[m] == spec.key
            assert record.id == record.links[spec.key], (dataset, m)
            payloads = {f for f in ("path", "text", "vector") if getattr(record, f) is not None}
            assert payloads == {spec.payload}, (dataset, m, payloads)
