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
    """Sent once before a recipe's first step, by a fresh run and by a resume (`first_epoch` says which): what a
    progress display needs to size itself. `StepDone` and `EpochDone` follow, then `RunFinished`."""

    name: str
    epochs: int
    steps: int  # optimizer steps per epoch
    first_epoch: int  # 1, or the epoch a resume continues with
    # whether StepDone events follow (the `progress` setting): a progress bar without them would never move
    steps_reported: bool = True


@dataclass(frozen=True)
class StepDone:
    """Sent every ~1/20 of an epoch and at its last step (a value read from the device syncs it), by both
    recipes, in memory and streamed, when the `progress` setting is on."""

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


@dataclass(frozen=True)
class TargetShare:
    """PCMR only, once per epoch: per modality, the share of off-diagonal batch pairs the target marks as sharing
    that view, and the share that use the same cached row (what the ids imply). Also in metrics.jsonl."""

    epoch: int
    target: dict[str, float]
    ids: dict[str, float]


def report_step(step: int, steps: int) -> bool:
    """Whether step `step` (1-based) of `steps` sends a StepDone: about 20 a epoch, and the last one."""
    return step % max(1, steps // 20) == 0 or step == steps


Event = Note | TrainingStarted | StepDone | EpochDone | RunFinished | TargetShare

OnEvent = Callable[[Event], None]


class ShareMonitor:
    """Turns an epoch's target shares into a `TargetShare` event and, the first time the target marks far more
    pairs than the ids imply, one warning `Note` naming the modality and the threshold."""

    def __init__(self, mode: str, threshold: float, emit: OnEvent) -> None:
        self.mode, self.threshold, self.emit = mode, threshold, emit
        self.warned = False

    @staticmethod
    def far_above(target: float, ids: float) -> bool:
        # "Far": more than twice the implied share plus one point of the pairs. Isotropic features at t = 0.99
        # stay well below it (0.1 % vs 0.07 % on planted Flickr8k-shaped caches); the demo's 64 % is far above.
        return target > 2 * ids + 0.01

    def epoch(self, epoch: int, shares: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Report one epoch's shares; returns them for the metrics.jsonl record."""
        self.emit(TargetShare(epoch, dict(shares["target"]), dict(shares["ids"])))
        if not self.warned and self.mode != "shared":
            for m, share in shares["target"].items():
                ids = shares["ids"].get(m, 0.0)
                if self.far_above(share, ids):
                    self.warned = True
                    self.emit(
                        Note(
                            f"warning: the PCMR target ({self.mode}, threshold {self.threshold:g}) marks "
                            f"{100 * share:.1f} % of off-diagonal batch pairs as sharing {m}, while the ids imply "
                            f"{100 * ids:.1f} %: distinct samples count as one; use --target shared"
                        )
                    )
                    break
        return shares


def emitter(on_event: OnEvent | None) -> OnEvent:
    """`on_event`, or a callback that drops everything."""
    return on_event if on_event is not None else (lambda _e: None)
