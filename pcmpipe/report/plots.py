"""Report figures as PNG bytes (matplotlib, Agg backend): Figure 1 bars, training curves, trained vs untrained
vs chance. Figure 2 (retrieval examples) is in examples.py, Figure 3 (t-SNE) in tsne.py. Each function reads
only what runs wrote and returns a `Figure`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from pcmpipe.report.results import RunResult


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str = ""
    filename: str = ""  # set when the report writes it next to report.md


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is written to files
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def m_modalities_bars(title: str, values: dict[str, dict[str, dict[int, float | None]]], metric: str) -> Figure | None:
    """Grouped bars: x = modality pair, one bar per (group, M). values: {group: {pair: {M: value}}}."""
    series = [(g, m) for g, per_pair in values.items() for m in sorted({m for d in per_pair.values() for m in d})]
    pairs = list(next(iter(values.values())).keys()) if values else []
    if not pairs or not any(values[g][p].get(m) is not None for g, m in series for p in pairs):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(pairs) + 2), 3.4))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(pairs))
    for i, (g, m) in enumerate(series):
        ys = [values[g][p].get(m) for p in pairs]
        heights = [np.nan if y is None else y for y in ys]  # a missing run is a gap, never a zero bar
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=f"{g} M={m}")
    ax.set_xticks(x, pairs)
    ax.set_ylabel(f"mean {metric} (%)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    return Figure(title=title, png=png_bytes(fig), caption="missing runs leave a gap")


def _loss_kind(run: RunResult) -> str:
    return str(run.config.get("loss") or "loss")


def training_curves(runs: list[RunResult]) -> Figure | None:
    """Per run: training loss (one panel per loss: PCMC and PCMR losses differ by orders of magnitude, so
    they never share an axis) and validation mean r@1 per epoch, from metrics.jsonl."""
    runs = [r for r in runs if r.history]
    if not runs:
        return None
    kinds = sorted({_loss_kind(r) for r in runs})
    plt = pyplot()
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(4.2 * (len(kinds) + 1), 3.4))
    loss_axes = dict(zip(kinds, axes[:-1]))
    val_ax = axes[-1]
    for r in runs:
        ep = [h.get("epoch", i + 1) for i, h in enumerate(r.history)]
        loss = [_first(h, ("train_loss", "loss")) for h in r.history]
        val = [_first(h, ("val_mean_r1", "val_r1", "val_mean_r@1")) for h in r.history]
        if any(v is not None for v in loss):
            loss_axes[_loss_kind(r)].plot(ep, [np.nan if v is None else v for v in loss], marker=".", label=r.name)
        if any(v is not None for v in val):
            val_ax.plot(ep, [np.nan if v is None else v for v in val], marker=".", label=r.name)
    for kind, ax in loss_axes.items():
        ax.set_xlabel("epoch"), ax.set_ylabel(f"{kind} training loss")
        ax.set_title(f"training loss ({kind.upper()} runs)", fontsize=9)
        ax.legend(fontsize=6)
    val_ax.set_xlabel("epoch"), val_ax.set_ylabel("validation mean r@1 (%)"), val_ax.set_title("validation", fontsize=9)
    val_ax.legend(fontsize=6)
    caption = (
        "from each run's metrics.jsonl; one loss panel per loss ("
        + ", ".join(k.upper() for k in kinds)
        + ") because their scales differ by orders of magnitude"
    )
    return Figure(title="Training curves", png=png_bytes(fig), caption=caption)


def _first(rec: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = rec.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def learning_bars(
    labels: list[str], trained: list[float | None], untrained: list[float | None], chance: list[float | None]
) -> Figure | None:
    """Trained vs untrained vs chance mean r@1 per run."""
    if not any(v is not None for v in trained + untrained + chance):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 2), 3.4))
    x = np.arange(len(labels))
    for i, (name, ys) in enumerate((("trained", trained), ("untrained", untrained), ("chance", chance))):
        ax.bar(x + (i - 1) * 0.27, [np.nan if y is None else y for y in ys], 0.27, label=name)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mean r@1 over directions (%)")
    ax.legend(fontsize=7)
    ax.set_title("Trained vs untrained heads vs chance (test split)", fontsize=9)
    caption = (
        "mean r@1 over all directions on the test split: trained heads, the same heads at their seeded "
        "initialisation, and the expected r@1 of a random ranking"
    )
    return Figure(title="Trained vs untrained vs chance", png=png_bytes(fig), caption=caption)
