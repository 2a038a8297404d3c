"""Report figures as PNG bytes (matplotlib, Agg backend): Figure 1 bars, training curves, trained vs untrained
vs chance, and the t-SNE of Figure 3. Each function reads only what runs wrote and returns a `Figure`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from pcmpipe.report.results import RunResult

MARKERS = {"I": "o", "T": ".", "C": "*", "A": "s", "S": "^", "P": "P"}


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str = ""
    filename: str = ""  # set when the report writes it next to report.md


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is written to files
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def m_modalities_bars(title: str, values: dict[str, dict[str, dict[int, float | None]]], metric: str) -> Figure | None:
    """Grouped bars: x = modality pair, one bar per (group, M). values: {group: {pair: {M: value}}}."""
    series = [(g, m) for g, per_pair in values.items() for m in sorted({m for d in per_pair.values() for m in d})]
    pairs = list(next(iter(values.values())).keys()) if values else []
    if not pairs or not any(values[g][p].get(m) is not None for g, m in series for p in pairs):
        return None
    plt = _plt()
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
    return Figure(title=title, png=_png(fig), caption="missing runs leave a gap")


def training_curves(runs: list[RunResult]) -> Figure | None:
    """Per run: training loss and validation mean r@1 per epoch, from metrics.jsonl."""
    runs = [r for r in runs if r.history]
    if not runs:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for r in runs:
        ep = [h.get("epoch", i + 1) for i, h in enumerate(r.history)]
        loss = [_first(h, ("train_loss", "loss")) for h in r.history]
        val = [_first(h, ("val_mean_r1", "val_r1", "val_mean_r@1")) for h in r.history]
        if any(v is not None for v in loss):
            a1.plot(ep, [np.nan if v is None else v for v in loss], marker=".", label=r.name)
        if any(v is not None for v in val):
            a2.plot(ep, [np.nan if v is None else v for v in val], marker=".", label=r.name)
    a1.set_xlabel("epoch"), a1.set_ylabel("training loss"), a1.set_title("training loss", fontsize=9)
    losses = [v for r in runs for h in r.history for v in [_first(h, ("train_loss", "loss"))] if v is not None]
    if losses and min(losses) > 0:
        a1.set_yscale("log")  # PCMC and PCMR losses differ by orders of magnitude
    a2.set_xlabel("epoch"), a2.set_ylabel("validation mean r@1 (%)"), a2.set_title("validation", fontsize=9)
    a2.legend(fontsize=6)
    return Figure(title="Training curves", png=_png(fig), caption="from each run's metrics.jsonl")


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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 2), 3.4))
    x = np.arange(len(labels))
    for i, (name, ys) in enumerate((("trained", trained), ("untrained", untrained), ("chance", chance))):
        ax.bar(x + (i - 1) * 0.27, [np.nan if y is None else y for y in ys], 0.27, label=name)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mean r@1 over directions (%)")
    ax.legend(fontsize=7)
    ax.set_title("Trained vs untrained heads vs chance (test split)", fontsize=9)
    return Figure(title="Trained vs untrained vs chance", png=_png(fig))


def tsne_figure(
    run: RunResult, modalities: list[str], max_points: int = 2000, seed: int = 0, title: str = "t-SNE"
) -> Figure | None:
    """t-SNE (seeded) of the run's normalised test embeddings of `modalities`, colour = class, marker = modality."""
    from sklearn.manifold import TSNE

    from pcmpipe.training.rundir import load_embeddings

    try:
        embs = load_embeddings(run.directory)
    except Exception:  # a run without embeddings has nothing to plot; the table says so
        return None
    rng = np.random.default_rng(seed)
    xs, mods, classes = [], [], []
    per = max(1, max_points // max(len(modalities), 1))
    for m in modalities:
        if m not in embs:
            continue
        e = embs[m]
        v = e.embedding.float().numpy()
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        idx = np.sort(rng.permutation(len(v))[:per])
        xs.append(v[idx])
        mods += [m] * len(idx)
        cls = e.columns.get("class_id", e.columns["id"])
        classes += [str(c) for c in np.asarray(cls)[idx]]
    if not xs or sum(len(x) for x in xs) < 5:
        return None
    x = np.concatenate(xs)
    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))  # sklearn needs perplexity < n_samples
    pts = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5))
    names = sorted(set(classes))
    cmap = plt.get_cmap("tab20", max(len(names), 1))
    colour = {c: cmap(i % 20) for i, c in enumerate(names)}
    for m in dict.fromkeys(mods):
        sel = np.array([mm == m for mm in mods])
        ax.scatter(
            pts[sel, 0],
            pts[sel, 1],
            c=[colour[c] for c, s in zip(classes, sel) if s],
            marker=MARKERS.get(m, "x"),
            s=40 if m == "C" else 8,
            label=m,
            edgecolors="black" if m == "C" else "none",
            linewidths=0.4,
        )
    ax.legend(fontsize=7)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return Figure(title=title, png=_png(fig), caption=f"{len(x)} test embeddings of {run.name}; colour = class")
