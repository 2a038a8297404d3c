"""What the CLI's training bar shows, event by event: the renderers of `train`, `finetune`, `run` and `demo`
(pcmpipe.cli.training_progress.TrainingRenderer, pcmpipe.cli.render.PipelineRenderer) drawing on a console that
says it is a terminal, so the bar is really drawn, with a record of the bar's state after every event."""

from __future__ import annotations

import io

from rich.console import Console

from pcmpipe.training.events import EpochDone, StepDone, TrainingStarted


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=120)


class BarTrace:
    """on_event: passes each event to `renderer`, then records what `training` (its TrainingRenderer) shows."""

    def __init__(self, renderer, training) -> None:
        self.renderer, self.training = renderer, training
        self.started: list[TrainingStarted] = []
        self.shown: list[tuple[int, int, int, int]] = []  # (run, epoch, completed, total) after each step event
        self.epochs: list[tuple[int, int]] = []  # (run, epoch) of each EpochDone

    def __call__(self, event) -> None:
        self.renderer(event)
        run = len(self.started)
        if isinstance(event, TrainingStarted):
            self.started.append(event)
        elif isinstance(event, EpochDone):
            self.epochs.append((run, event.epoch))
        elif isinstance(event, StepDone) and self.training.bar is not None:
            task = self.training.bar.tasks[0]
            self.shown.append((run, int(task.fields["epoch"]), int(task.completed), int(task.total)))

    def reached_the_end_of_every_epoch(self) -> bool:
        """The bar was drawn and, in every epoch of every run that ended, moved up to the epoch's last step."""
        if not self.epochs:
            return False
        for run, epoch in self.epochs:
            done = [d for r, e, d, _ in self.shown if (r, e) == (run, epoch)]
            totals = {t for r, e, _, t in self.shown if (r, e) == (run, epoch)}
            if len(totals) != 1 or max(done) != totals.pop() or min(done) == max(done):
                return False
        return True
