"""The figures of a run report: curves over training and a 2-D map of embeddings.

Drawn with matplotlib's Agg renderer on :class:`matplotlib.figure.Figure` objects, never through
``pyplot``: no window, no process-wide backend switch, nothing left open in a notebook.
matplotlib and scikit-learn come with ``selfsup-toolkit[report]`` and are imported on first use
(:func:`toolkit.extras.require`); the map uses UMAP when ``umap-learn`` is installed, else
scikit-learn's t-SNE, and says which in its title.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from toolkit.extras import require

SIZE = (5.0, 3.2)
"""Inches of a curve; 100 dpi gives 500x320-pixel PNGs."""
MIN_MAP_POINTS = 5


def curve(path: Path, title: str, steps: Sequence[float], values: Sequence[float],
          reference: float | None = None, reference_label: str = "at start") -> Path:
    """``values`` over ``steps`` as a line (points when there are few), with ``reference`` as a
    dashed horizontal line; saved as a PNG at ``path``."""
    figure = _figure(SIZE)
    axes = figure.add_subplot()
    marker = "o" if len(steps) <= 20 else None
    axes.plot(steps, values, marker=marker, color="tab:blue", linewidth=1.4, label="trained")
    if reference is not None:
        axes.axhline(reference, color="tab:gray", linestyle="--", linewidth=1.2, label=f"{reference_label} "
                                                                                      f"({reference:.4g})")
        axes.legend(loc="best", fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("step")
    axes.xaxis.set_major_locator(require("matplotlib.ticker", "selfsup report").MaxNLocator(integer=True))
    if len(set(steps)) == 1:  # one evaluation: whole steps around it, not 7.6 ... 8.4
        axes.set_xlim(steps[0] - 1, steps[0] + 1)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def embedding_map(path: Path, points: np.ndarray, labels: np.ndarray | None, names: dict[int, str],
                  title: str) -> Path:
    """``points: (N, 2)`` coloured by ``labels: (N,)`` (a legend of ``names`` for up to 20
    classes), saved as a PNG at ``path``; ``title`` may span lines."""
    figure = _figure((6.4, 5.6))
    axes = figure.add_subplot()
    size = float(np.clip(3000 / max(len(points), 1), 4, 30))
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=size, color="tab:blue", alpha=0.7, linewidths=0)
    else:
        classes = np.unique(labels)
        colormap = require("matplotlib", "selfsup report (its figures)").colormaps[
            "tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"]
        for rank, label in enumerate(classes):
            chosen = labels == label
            color = colormap(rank % 20 if len(classes) <= 20 else rank / max(len(classes) - 1, 1))
            axes.scatter(points[chosen, 0], points[chosen, 1], s=size, color=color, alpha=0.8, linewidths=0,
                         label=names.get(int(label), str(label)))
        if len(classes) <= 20:
            axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=12 / size ** 0.5,
                        frameon=False)
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    return _save(figure, path)


def reduce_to_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """``features: (N, D)`` as points ``(N, 2)`` of their cosine geometry (rows are normalised
    first), and the method's name: UMAP (``umap-learn``) when installed, else t-SNE
    (scikit-learn). Needs :data:`MIN_MAP_POINTS` points or more."""
    if len(features) < MIN_MAP_POINTS:
        raise ValueError(f"a 2-D map needs at least {MIN_MAP_POINTS} items, got {len(features)}")
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if importlib.util.find_spec("umap") is not None:
        import umap

        neighbours = min(15, len(x) - 1)
        reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed)
        return reducer.fit_transform(x), "UMAP (umap-learn)"
    manifold = require("sklearn.manifold", "the 2-D map of a run report")
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    # 500 iterations (scikit-learn's default is 1,000) settle a map of a few thousand points, in half the time
    tsne = manifold.TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed)
    return tsne.fit_transform(x), "t-SNE (scikit-learn; umap-learn is not installed)"


def _figure(size: tuple[float, float]) -> Any:
    require("matplotlib", "selfsup report (its figures)")
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=100, layout="constrained")


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
