"""One preprocessing per comparison: the settings every run a table or figure compares must share.

A table that puts a fine-tuned row beside a frozen one, or a bi-modal model beside a tri-modal one, exists to
show what that difference does. If the runs also differ in how their inputs were standardised or augmented
(cached views), in how PCMR's target (Eq. 7) or power (Eq. 6) is read, or in the match level, the table mixes
two effects. `mixed_comparisons`
names every such table of a pipeline; tests/pipelines/test_spec_comparisons.py runs it on every shipped file.

A layout may name the settings it varies on purpose (`varies: [standardize]`); those are not compared. Runs on
different datasets are not compared with each other either: a table that puts Flickr8k beside CUB (the readings
table) compares settings within each dataset, whose match levels differ by design.
"""

from __future__ import annotations

from typing import Any

from pcmpipe.report.layouts import TABLE_KINDS, runs_named

# settings that change what a run's inputs, target or scores are, for every loss
SHARED_BY_ALL = ("standardize", "cached_views", "match")
# settings that only PCMR reads: compared among a table's PCMR runs (a PCMC run ignores them)
SHARED_BY_PCMR = ("target", "threshold", "rho_on")


def compared_runs(layout: dict[str, Any]) -> list[str]:
    """The runs a table layout puts side by side, in the order it names them (each once)."""
    _, run_keys = TABLE_KINDS[layout["kind"]]
    names = [n for key in run_keys for n in runs_named(layout.get(key))]
    return list(dict.fromkeys(names))


def _differences(configs: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    out = []
    for key in keys:
        values: dict[str, list[str]] = {}
        for name, cfg in configs.items():
            values.setdefault(repr(getattr(cfg, key)), []).append(name)
        if len(values) > 1:
            parts = "; ".join(f"{v} in {', '.join(names)}" for v, names in values.items())
            out.append(f"{key} differs: {parts}")
    return out


def mixed_comparisons(pipeline) -> list[str]:
    """One line per table of `pipeline` (a pcmpipe.pipelines.spec.Pipeline) whose runs differ in a setting it
    does not declare in `varies`; [] when every comparison shares its preprocessing."""
    problems = []
    for layout in pipeline.tables:
        varies = set(layout.get("varies") or [])
        by_dataset: dict[str, dict[str, Any]] = {}
        for n in compared_runs(layout):
            if n in pipeline.runs:
                by_dataset.setdefault(pipeline.runs[n].train.dataset, {})[n] = pipeline.runs[n].train
        for runs in by_dataset.values():
            pcmr = {n: c for n, c in runs.items() if c.loss == "pcmr"}
            found = _differences(runs, tuple(k for k in SHARED_BY_ALL if k not in varies))
            found += _differences(pcmr, tuple(k for k in SHARED_BY_PCMR if k not in varies))
            problems += [f"{pipeline.name}: {layout.get('title', layout['kind'])}: {f}" for f in found]
    return problems
