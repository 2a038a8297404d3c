"""Stage one as the tests call it: keyword settings, validated by ExtractConfig as a CLI call's flags are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcmpipe.config import ExtractConfig
from pcmpipe.extract import extract as run_extract
from pcmpipe.extract.summary import ExtractProgress, ExtractSummary


def extract(
    dataset: str, root: str | Path, *, progress: ExtractProgress | None = None, **settings: Any
) -> ExtractSummary:
    return run_extract(ExtractConfig.from_dict({"dataset": dataset, "root": root, **settings}), progress=progress)
