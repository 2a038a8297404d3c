"""Figure 3: t-SNE of a run's test embeddings, one panel per modality (text, image, class in the paper).

One joint t-SNE of all the plotted rows (one embedding space, so where a class's text, image and class
points fall can be compared), drawn as one panel per modality, each zoomed to its own points. Classes are told apart by
colour x marker: 10 colours x 8 markers give 80 distinct styles, enough for the 50 unseen CUB classes
(tab20 alone repeats its colours after 20 classes).
"""

from __future__ import annotations

import numpy as np

from pcmpipe.report.plots import Figure, png_bytes, pyplot
from pcmpipe.report.results import RunResult

CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
NUM_COLOURS = 10  # tab10
MODALITY_NAMES = {"T": "text", "I": "image", "C": "class", "A": "attributes", "S": "speech", "P": "prompt"}


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
    for ax, m in zip(axes[0], shown):
        for c, (colour, marker) in styles.items():
            sel = (mods_a == m) & (classes_a == c)
            if sel.any():
                size = 60 if m == "C" else 14
                ax.scatter(
                    pts[sel, 0],
                    pts[sel, 1],
                    color=cmap(colour),
                    marker=marker,
                    s=size,
                    linewidths=0.3,
                    edgecolors="black" if m == "C" else "none",
                    label=c,
                )
        ax.set_title(f"{MODALITY_NAMES.get(m, m)} ({m}, {int((mods_a == m).sum())} points)", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    handles = [
        plt.Line2D([], [], color=cmap(colour), marker=marker, linestyle="", markersize=4, label=c)
        for c, (colour, marker) in styles.items()
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 17),
        fontsize=5,
        title="class id",
        title_fontsize=6,
        bbox_to_anchor=(0.5, -0.02 - 0.025 * (len(handles) // 17)),
    )
    fig.suptitle(title, fontsize=9)
    caption = (
        f"{len(x)} test embeddings of {run.name}, one joint t-SNE (seed {seed}) shown per modality; "
        f"{len(styles)} classes, each one colour x marker"
    )
    return Figure(title=title, png=png_bytes(fig), caption=caption)
