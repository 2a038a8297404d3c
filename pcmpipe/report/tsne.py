"""Figure 3: t-SNE of a run's test embeddings, one panel per modality (text, image, class in the paper).

One joint t-SNE of all the plotted rows (one embedding space, so where a class's text, image and class
points fall can be compared), drawn as one panel per modality, each zoomed to its own points with robust limits
(percentiles, so an outlier does not squash the panel). Classes are told apart by colour x marker (10 colours x
8 markers give 80 distinct styles, enough for the 50 unseen CUB classes; tab20 alone repeats after 20) and by
their class id written at each class's median, instead of a legend of 50 entries.
"""

from __future__ import annotations

import numpy as np

from pcmpipe.report.plots import Figure, png_bytes, pyplot
from pcmpipe.report.results import RunResult

CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
NUM_COLOURS = 10  # tab10
MODALITY_NAMES = {"T": "text", "I": "image", "C": "class", "A": "attributes", "S": "speech", "P": "prompt"}


LOW_PCT = 1.0  # axes span the 1st to 99th percentile of a panel's points (plus a margin): outliers do not squash it


def robust_limits(values: np.ndarray, margin: float = 0.08) -> tuple[float, float]:
    """(low, high) for one axis: the LOW_PCT and 100 - LOW_PCT percentiles widened by `margin` of their span, so
    one or two far outliers do not squeeze every other point into a corner."""
    lo, hi = np.percentile(values, [LOW_PCT, 100 - LOW_PCT])
    pad = max(float(hi - lo), 1e-6) * margin
    return float(lo - pad), float(hi + pad)


def class_styles(classes: list[str]) -> dict[str, tuple[int, str]]:
    """class -> (tab10 colour index, marker): distinct for up to 80 classes, in sorted class order."""
    names = sorted(set(classes), key=lambda c: (len(c), c))  # numeric ids in numeric order
    return {c: (i % NUM_COLOURS, CLASS_MARKERS[(i // NUM_COLOURS) % len(CLASS_MARKERS)]) for i, c in enumerate(names)}


def _sample(run: RunResult, modalities: list[str], max_points: int, seed: int):
    """(vectors [N, D] normalised, modality per row, class per row) of a seeded sample of the test rows."""
    from pcmpipe.training.rundir.tensors import load_embeddings

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
    return np.concatenate(xs), mods, classes


def tsne_figure(
    run: RunResult, modalities: list[str], max_points: int = 2000, seed: int = 0, title: str = "t-SNE"
) -> Figure | None:
    """Seeded joint t-SNE of the run's normalised test embeddings of `modalities`, one panel per modality."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    sample = _sample(run, modalities, max_points, seed)
    if sample is None:
        return None
    x, mods, classes = sample
    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))  # sklearn needs perplexity < n_samples
    # one OpenMP thread: on a few thousand points threads gain little, and on a busy machine their spin-waits
    # made one report's t-SNE 30x slower (105 s instead of 3.6 s for 250 points on 2 loaded cores)
    with threadpool_limits(limits=1):
        pts = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    shown = list(dict.fromkeys(mods))
    styles = class_styles(classes)
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.4), squeeze=False)
    mods_a, classes_a = np.array(mods), np.array(classes)
    hidden = 0
    for ax, m in zip(axes[0], shown):
        panel = pts[mods_a == m]
        (x0, x1), (y0, y1) = robust_limits(panel[:, 0]), robust_limits(panel[:, 1])
        hidden += int(((panel[:, 0] < x0) | (panel[:, 0] > x1) | (panel[:, 1] < y0) | (panel[:, 1] > y1)).sum())
        for c, (colour, marker) in styles.items():
            sel = (mods_a == m) & (classes_a == c)
            if not sel.any():
                continue
            ax.scatter(
                pts[sel, 0],
                pts[sel, 1],
                color=cmap(colour),
                marker=marker,
                s=60 if m == "C" else 14,
                linewidths=0.3,
                edgecolors="black" if m == "C" else "none",
            )
            # the class id at its points' median: 50 classes told apart without a 50-entry legend
            cx, cy = np.median(pts[sel, 0]), np.median(pts[sel, 1])
            if x0 <= cx <= x1 and y0 <= cy <= y1:
                ax.annotate(c, (cx, cy), fontsize=5, ha="center", va="center", color=cmap(colour), weight="bold")
        ax.set_xlim(x0, x1), ax.set_ylim(y0, y1)
        ax.set_title(f"{MODALITY_NAMES.get(m, m)} ({m}, {int((mods_a == m).sum())} points)", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    caption = (
        f"{len(x)} test embeddings of {run.name}, one joint t-SNE (seed {seed}) shown per modality; "
        f"{len(styles)} classes, each one colour x marker, labelled with its class id at its points' median; "
        f"each panel's axes span percentiles {LOW_PCT:g} to {100 - LOW_PCT:g} of its points plus a margin "
        f"({hidden} outlying point{'' if hidden == 1 else 's'} not shown)"
    )
    return Figure(title=title, png=png_bytes(fig), caption=caption)
