"""`pcmpipe run`: plan a loaded Pipeline (`plan.make_plan`: every step, cached or missing, with its command) and
do the missing steps in order (`actions.run_step`), reporting through `on_event` (`events`: PlanReady,
StepStarted, StepProgress while features are extracted, StepFinished; Note for one-line messages; and the
training events of the runs it trains, pcmpipe.training.events). The CLI renders them (pcmpipe.cli.render).
"""

from __future__ import annotations

import time
from pathlib import Path

from pcmpipe.pipelines.actions import run_step
from pcmpipe.pipelines.comparisons import mixed_comparisons
from pcmpipe.pipelines.events import Note, OnEvent, PlanReady, StepFinished, StepStarted, ignore
from pcmpipe.pipelines.plan import Step, make_plan
from pcmpipe.pipelines.spec import PIPELINE_RECORDS, Pipeline
from pcmpipe.training.rundir.files import write_json


def write_record(p: Pipeline) -> Path:
    """The resolved pipeline under <runs_root>/_pipelines/<name>.json, for `pcmpipe report`."""
    folder = p.runs_root / PIPELINE_RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{p.name}.json"
    write_json(path, p.record())
    return path


def run_pipeline(p: Pipeline, *, dry_run: bool = False, on_event: OnEvent | None = None) -> list[Step]:
    """Report the plan; unless dry_run, do the missing steps in order and record the pipeline for the report.

    Returns the steps, their status "done" where this call ran them.
    """
    emit = on_event or ignore
    steps = make_plan(p)
    emit(PlanReady(p.name, p.title, list(steps)))
    for problem in mixed_comparisons(p):  # a table that mixes two preprocessings: said, not refused
        emit(Note(f"warning: {problem} (list the setting under the table's `varies:` if that is the point)"))
    if dry_run:
        return steps
    write_record(p)
    for s in steps:
        if s.status == "cached" or s.subject is None:
            continue
        emit(StepStarted(s))
        t0 = time.perf_counter()
        run_step(s, p, emit)
        s.status = "done"
        emit(StepFinished(s, time.perf_counter() - t0))
    return steps
