"""What `pcmpipe run` reports while it works: the plan, each step's start, progress and end (and one-line notes
and the training events of the runs it trains). The runner prints nothing; the CLI renders these
(pcmpipe.cli.render)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pcmpipe.pipelines.plan import Step
from pcmpipe.training.events import Event as TrainingEvent
from pcmpipe.training.events import Note  # one-line messages: the same kind the trainers send

__all__ = ["Event", "Note", "OnEvent", "PlanReady", "StepFinished", "StepProgress", "StepStarted", "ignore"]


@dataclass(frozen=True)
class PlanReady:
    """Sent first, before any step runs (and alone under --dry-run): the pipeline's name and title, and every step
    with its status (cached, missing or blocked) and the command that would make it."""

    name: str
    title: str
    steps: list[Step]


@dataclass(frozen=True)
class StepStarted:
    """A missing step begins; cached steps send nothing. Its progress and notes follow, then `StepFinished`."""

    step: Step


@dataclass(frozen=True)
class StepProgress:
    """Items of one part of a running step done so far (extraction: one dataset, modality and split)."""

    task: str
    done: int
    total: int


@dataclass(frozen=True)
class StepFinished:
    """The step `StepStarted` announced ended without an error (its status is now "done"), after `seconds` of
    wall time; a failed step raises instead."""

    step: Step
    seconds: float


# The training events of the runs the pipeline trains reach the same callback, unchanged (`_train`).
Event = PlanReady | StepStarted | StepProgress | StepFinished | Note | TrainingEvent
OnEvent = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The `on_event` of a caller that wants no reports."""
