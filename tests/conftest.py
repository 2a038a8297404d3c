"""Fixtures shared across the test folders (tests/ mirrors the package; see docs/design.md)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test: the models here are tiny, so thread hand-off dominates on a busy
    2-core machine; subprocesses get OMP_NUM_THREADS=1 from their tests instead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
