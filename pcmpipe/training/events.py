"""What the recipes report while they run: small records handed to an `on_event` callback.

The library never prints; the CLI (pcmpipe.cli.training_progress) renders these on the terminal, and any
other caller may log, collect or ignore them (`on_event=None`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Note:
    """A one-line message: already complete, resuming, a cache computed once, an ignored legacy file."""

    text: str


@dataclass(frozen=True)
class TrainingStarted:
    name: str
    epochs: int
    steps: int  # optimizer steps per epoch
    first_epoch: int  # 1, or the epoch a resume continues with


@dataclass(frozen=True)
class StepDone:
    """Sent every ~1/20 of an epoch (a value read from the device syncs it)."""

    epoch: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class EpochDone:
    epoch: int
    epochs: int
    loss: float  # mean training loss of the epoch
    val_mean_r1: float
    best: float
    best_epoch: int
    lr: float | dict[str, float]  # one rate (stage two) or one per optimizer group (fine-tuning)
    time_s: float
    early_stop: bool


@dataclass(frozen=True)
class RunFinished:
    run_dir: Path
    best_epoch: int
    test_mean_r1: float
    untrained_mean_r1: float | None = None


Event = Note | TrainingStarted | StepDone | EpochDone | RunFinished
OnEvent = Callable[[Event], None]


def emitter(on_event: OnEvent | None) -> OnEvent:
    """`on_event`, or a callback that drops everything."""
    return on_event if on_event is not None else (lambda _e: None)
