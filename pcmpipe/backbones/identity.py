"""Whether two records name one encoder: `same_encoder(meta_a, meta_b)`, the one answer to "same backbone and
weights" (two splits of a run, a run and another dataset's cache, a run and the tower it rebuilds, a pipeline
plan and a finished cache).

The records it compares are a cache's meta (`Backbone.meta` plus what extraction adds), a run's backbone record
{backbone, weights, weights_sha256}, or what a plan names before any weights are loaded {backbone, weights}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def same_encoder(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when `a` and `b` name the same backbone with the same weights, preprocessed alike.

    - backbone: equal (both absent for features no backbone made: imported or hand-made vectors);
    - weights: by checksum (weights_sha256) when both record one, whatever tag or path they were loaded
      from; otherwise by their label (`weights`), the most a plan can know before loading anything;
    - architecture and preprocess: equal wherever both record them (a run's record and a plan do not).
    """
    if a.get("backbone") != b.get("backbone"):
        return False
    if a.get("weights_sha256") and b.get("weights_sha256"):
        if a["weights_sha256"] != b["weights_sha256"]:
            return False
    elif a.get("weights") != b.get("weights"):
        return False
    return all(a[k] == b[k] for k in ("architecture", "preprocess") if k in a and k in b)
