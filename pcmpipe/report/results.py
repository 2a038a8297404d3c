"""What the report reads: finished run directories, pipeline records, cache manifests.

Every number the report prints comes through this module from a file a run wrote (test_metrics.json,
untrained_metrics.json, metrics.jsonl, zeroshot.json, enrichment.json) or from the paper data file
(pcmpipe.report.paper). A value that is not there is None, which the tables print as "—", never as 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcmpipe.errors import UserError
from pcmpipe.training.rundir import COMPLETE_MARKER, read_metrics

PIPELINE_RECORDS = "_pipelines"


def _read(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class RunResult:
    """One run directory as the report sees it (files absent -> None)."""

    name: str
    directory: Path
    config: dict[str, Any]  # resolved TrainConfig settings
    meta: dict[str, Any]  # the rest of config.json (fingerprint, versions, cache fingerprints, ...)
    test: dict | None = None  # test_metrics.json
    untrained: dict | None = None  # untrained_metrics.json
    history: list[dict] = field(default_factory=list)  # metrics.jsonl
    zeroshot: dict | None = None  # zeroshot.json (written by `pcmpipe run`)
    enrichment: dict | None = None  # enrichment.json (written by `pcmpipe run`)

    @property
    def complete(self) -> bool:
        return self.test is not None

    @property
    def match(self) -> str:
        return str(self.config.get("match", "instance"))

    @property
    def modalities(self) -> list[str]:
        return list(self.config.get("modalities") or [])

    def metric(self, direction: str, metric: str, level: str | None = None, source: str = "test") -> float | None:
        """A direction's metric in percent ('I->T', 'r@1') at `level` (default: the run's match level).

        source: 'test' (trained heads), 'untrained' (heads at initialisation) or 'chance' (random ranking).
        """
        level = level or self.match
        if source == "chance":
            node = ((self.test or {}).get("chance") or {}).get(level)
            if node is None:
                node = ((self.untrained or {}).get("chance") or {}).get(level)
        else:
            node = (self.test if source == "test" else self.untrained) or {}
            node = node.get(level)
        value = ((node or {}).get(direction) or {}).get(metric)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_run(directory: Path) -> RunResult | None:
    """A run directory -> RunResult, or None when it is not a run (no config.json)."""
    cfg = _read(directory / "config.json")
    if not isinstance(cfg, dict):
        return None
    inner = cfg.get("config")
    config = inner if isinstance(inner, dict) else cfg
    meta = {k: v for k, v in cfg.items() if k != "config"}
    return RunResult(
        name=directory.name,
        directory=directory,
        config=config,
        meta=meta,
        test=_read(directory / COMPLETE_MARKER),
        untrained=_read(directory / "untrained_metrics.json"),
        history=read_metrics(directory),
        zeroshot=_read(directory / "zeroshot.json"),
        enrichment=_read(directory / "enrichment.json"),
    )


def load_runs(runs_root: Path) -> dict[str, RunResult]:
    """Every finished-or-not run under runs_root (in-progress `.tmp-*` directories are left out)."""
    out: dict[str, RunResult] = {}
    if not runs_root.is_dir():
        return out
    for d in sorted(runs_root.iterdir()):
        if d.is_dir() and not d.name.startswith((".", "_")):
            r = load_run(d)
            if r is not None:
                out[r.name] = r
    return out


def load_pipeline_records(runs_root: Path) -> list[dict]:
    """The records `pcmpipe run` left under runs_root/_pipelines/, ordered by pipeline name."""
    folder = runs_root / PIPELINE_RECORDS
    records = []
    if folder.is_dir():
        for p in sorted(folder.glob("*.json")):
            rec = _read(p)
            if isinstance(rec, dict) and "tables" in rec:
                records.append(rec)
    return records


def cache_manifest(cache_root: Path, dataset: str, modality: str, split: str = "test") -> dict | None:
    """The manifest.json of one cached (dataset, modality, split), or None (also when unreadable: the report
    then says "no cache manifest found" instead of stopping)."""
    from pcmpipe.cache.reader import read_manifest

    try:
        return read_manifest(cache_root, dataset, modality, split)
    except UserError:
        return None
