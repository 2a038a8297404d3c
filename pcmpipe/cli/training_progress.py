"""Terminal rendering of the training events (pcmpipe.training.events) of `train`, `finetune` and `run`.

A rich progress bar while an epoch runs (on a terminal only), and one plain line per epoch and per note,
so a log file reads the same as the terminal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from pcmpipe.training.events import EpochDone, Event, Note, RunFinished, StepDone, TrainingStarted

if TYPE_CHECKING:  # rich.progress is imported only when a bar is shown
    from rich.progress import Progress, TaskID


def _lr(lr: float | dict[str, float]) -> str:
    if isinstance(lr, dict):  # fine-tuning: one rate per optimizer group; heads and backbone say enough
        shown = {k: v for k, v in lr.items() if not k.endswith("_no_decay")} or lr
        return " ".join(f"lr {k} {v:.2e}" for k, v in shown.items())
    return f"lr {lr:.2e}"


class TrainingRenderer:
    """on_event callback: `train(cfg, on_event=TrainingRenderer(console))`. Call close() when done."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.val = ""

    def __call__(self, event: Event) -> None:
        if isinstance(event, Note):
            self._line(event.text)
        elif isinstance(event, TrainingStarted):
            self._start(event)
        elif isinstance(event, StepDone):
            if self.bar is not None and self.task is not None:  # _start sets both
                self.bar.update(
                    self.task, completed=event.step, epoch=event.epoch, info=f"loss {event.loss:.4f}{self.val}"
                )
        elif isinstance(event, EpochDone):
            self.val = f"  val mean r@1 {event.val_mean_r1:.2f} (best {event.best:.2f})"
            self._line(
                f"epoch {event.epoch}/{event.epochs} loss {event.loss:.4f} val mean r@1 {event.val_mean_r1:.2f} "
                f"(best {event.best:.2f} @ {event.best_epoch}) {_lr(event.lr)} {event.time_s:.1f}s"
                + (" - early stop" if event.early_stop else "")
            )
        elif isinstance(event, RunFinished):
            self.close()
            untrained = "" if event.untrained_mean_r1 is None else f" vs untrained {event.untrained_mean_r1:.2f}"
            self._line(
                f"done: {event.run_dir} (best epoch {event.best_epoch}, test mean r@1 "
                f"{event.test_mean_r1:.2f}{untrained})"
            )

    def _start(self, event: TrainingStarted) -> None:
        self.close()
        if not self.console.is_terminal or not event.steps_reported:  # no step events: a bar would stand still
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/" + str(event.epochs)),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=event.steps, epoch=event.first_epoch, info="")

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        """Stop the progress bar (also after an error or Ctrl-C, so the terminal is left clean)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
