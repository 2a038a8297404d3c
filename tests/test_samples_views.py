"""The one view rule (pcmpipe.samples.views): each sample's view per epoch is the draw in-memory training always
made, generated in chunks into one byte a sample (streamed splits hold it for the whole table)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from pcmpipe.samples.views import _CHUNK, VIEW_SALT, draw_views


@pytest.mark.parametrize(("views", "samples"), [(2, 10), (2, _CHUNK + 17), (300, 2 * _CHUNK + 1), (1, 0)])
def test_views_are_the_recorded_draw_in_chunks(views, samples):
    rng = np.random.default_rng([VIEW_SALT, 7, 3, zlib.crc32(b"T")])
    recorded = rng.integers(0, views + 1, size=samples)  # the rule as in-memory training drew it, in one call
    got = draw_views(7, 3, "T", views, samples)
    assert np.array_equal(got, recorded) and got.itemsize == (1 if views < 255 else 2)


def test_views_depend_on_seed_epoch_and_modality_only():
    base = draw_views(0, 1, "I", 2, 1000)
    assert np.array_equal(base, draw_views(0, 1, "I", 2, 1000))
    assert np.array_equal(base[:400], draw_views(0, 1, "I", 2, 400))  # a sample's view is its place's draw
    for other in (draw_views(1, 1, "I", 2, 1000), draw_views(0, 2, "I", 2, 1000), draw_views(0, 1, "T", 2, 1000)):
        assert not np.array_equal(base, other)
