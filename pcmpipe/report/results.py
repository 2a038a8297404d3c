"""What the report reads: finished run directories, pipeline records, cache manifests.

Every number the report prints comes through this module from a file a run wrote (test_metrics.json,
untrained_metrics.json, metrics.jsonl, zeroshot.json, enrichment.json) or from the paper data file
(pcmpipe.report.paper). A value that is not there is None, which the tables print as "—", never as 0. Run
files are read through the run directory's tolerant readers (pcmpipe.training.rundir.files): a damaged one is a
problem named in the report and a missing value, and a file the run wrote must match its files.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcmpipe.errors import UserError
from pcmpipe.training.rundir.files import COMPLETE_MARKER, CONFIG, UNTRAINED, read_metrics, read_object, read_tolerant

PIPELINE_RECORDS = "_pipelines"


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
    problems: list[str] = field(default_factory=list)  # one line per damaged file of the run

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
            node = _at(self.test, "chance", level)
            if node is None:
                node = _at(self.untrained, "chance", level)
        else:
            node = _at(self.test if source == "test" else self.untrained, level)
        value = _at(node, direction, metric)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _at(node: Any, *keys: Any) -> Any:
    """node[k1][k2]..., or None where a level is missing or is no mapping (a damaged results file)."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def read_results(directory: Path) -> RunResult | None:
    """What the report shows of a run directory -> RunResult, or None when it is not a run (no config.json, or
    a damaged one). Not `pcmpipe.load_run`, which loads a finished run's heads to embed and search."""
    problems: list[str] = []
    cfg = read_tolerant(directory / CONFIG, problems, directory)
    if not isinstance(cfg, dict):
        return None
    inner = cfg.get("config")
    config = inner if isinstance(inner, dict) else cfg
    meta = {k: v for k, v in cfg.items() if k != "config"}
    objects = {
        n: read_object(directory / f, problems, directory if own else None)
        for n, f, own in (
            ("test", COMPLETE_MARKER, True),
            ("untrained", UNTRAINED, True),
            ("zeroshot", "zeroshot.json", False),  # written by `pcmpipe run` after the run finished
            ("enrichment", "enrichment.json", False),
        )
    }
    try:
        history = read_metrics(directory)
    except UserError as e:
        problems.append(f"{e}; no curve shown")
        history = []
    return RunResult(
        name=directory.name,
        directory=directory,
        config=config,
        meta=meta,
        history=history,
        problems=problems,
        **objects,
    )


def load_runs(runs_root: Path, problems: list[str] | None = None) -> dict[str, RunResult]:
    """Every finished-or-not run under runs_root (in-progress `.tmp-*` directories are left out). Damaged files
    are noted in `problems`: a run's own (RunResult.problems) and a config.json too damaged to place the run."""
    out: dict[str, RunResult] = {}
    if not runs_root.is_dir():
        return out
    for d in sorted(runs_root.iterdir()):
        if d.is_dir() and not d.name.startswith((".", "_")):
            r = read_results(d)
            if r is not None:
                out[r.name] = r
                if problems is not None:
                    problems.extend(r.problems)
            elif problems is not None and (d / CONFIG).is_file():
                problems.append(f"{d / CONFIG} is damaged; run {d.name} is left out of the report")
    return out


def load_pipeline_records(runs_root: Path, problems: list[str] | None = None) -> list[dict]:
    """The records `pcmpipe run` left under runs_root/_pipelines/, ordered by pipeline name. A damaged one is
    left out with a line in `problems` naming it (rerunning its pipeline rewrites it)."""
    folder = runs_root / PIPELINE_RECORDS
    records = []
    if folder.is_dir():
        for p in sorted(folder.glob("*.json")):
            rec = read_tolerant(p)
            if isinstance(rec, dict) and isinstance(rec.get("tables"), list) and isinstance(rec.get("runs"), dict):
                records.append(rec)
            elif problems is not None:
                problems.append(
                    f"pipeline record {p} is damaged; its section is left out (rerun `pcmpipe run {p.stem}` to "
                    "rewrite it)"
                )
    return records


def matching_runs(record: dict, runs: dict[str, RunResult]) -> tuple[dict[str, RunResult], list[str]]:
    """The runs a pipeline record may use: a run under one of its names counts only when its recorded config
    fingerprint is the one the pipeline planned (another run under the same name is someone else's result).
    -> (runs without the mismatched ones, one line per run skipped)."""
    kept = dict(runs)
    skipped = []
    for name, planned in (record.get("runs") or {}).items():
        run = runs.get(name)
        want = (planned or {}).get("fingerprint") if isinstance(planned, dict) else None
        if run is None or want is None:
            continue
        got = run.meta.get("fingerprint")
        if got != want:
            del kept[name]
            skipped.append(
                f"run {name} skipped: its config fingerprint {str(got)[:12]} is not this pipeline's {str(want)[:12]} "
                "(another run under the same name)"
            )
    return kept, skipped


def cache_manifest(cache_root: Path, dataset: str, modality: str, split: str = "test") -> dict | None:
    """The manifest of one cached (dataset, modality, split), or None (also when unreadable: the report
    then says "no cache manifest found" instead of stopping)."""
    from pcmpipe.cache.reader import read_manifest

    try:
        return read_manifest(cache_root, dataset, modality, split)
    except UserError:
        return None
