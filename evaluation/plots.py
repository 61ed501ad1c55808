"""PNG figures of the report (matplotlib's Agg renderer).

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot, so nothing
here changes the process-wide backend or keeps figures alive.
"""
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from training.files import write_atomically

# Above this many classes, naming each along an axis would make the figure too large
# (beyond about 30 inches), and naming each in a legend would hide the points.
MAX_NAMED_CLASSES = 120
MAX_LEGEND_CLASSES = 20
# Class names along an axis: this font size (points), and this much room per class (inches,
# about twice the text height so that neighbouring names never touch).
CLASS_FONT_SIZE = 8
INCHES_PER_CLASS = 0.22
# Markers of the logs' points: validation may run every --val_freq epochs, so its points
# are drawn as well as joined.
MARKERS = {"train": ".", "val": "o"}
# Panel titles of the loss columns whose name alone is ambiguous. train.log's `loss` is the
# total objective; val.log's cross-entropy is the report's `ce` column (evaluation.report).
LOSS_TITLES = {"loss": "training total loss", "ce": "cross-entropy"}


def _save(fig: Figure, path: Path, bottom_inches: float = 0.0) -> None:
    """Lay out (leaving `bottom_inches` free, e.g. for a figure legend) and write a PNG."""
    fig.tight_layout(rect=(0, bottom_inches / fig.get_figheight(), 1, 1))
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_atomically(Path(path), png.getbuffer())


def _x_axis(log: pd.DataFrame) -> pd.Series:
    return log["epoch"] if "epoch" in log else pd.Series(range(1, len(log) + 1))


def _label_inches(names: Sequence[str]) -> float:
    """Room for the longest class name at CLASS_FONT_SIZE (about 0.6 em per character)."""
    return 0.6 * CLASS_FONT_SIZE / 72 * max((len(n) for n in names), default=0) + 0.3


def plot_losses(logs: dict[str, pd.DataFrame], columns: Sequence[str], path: Path) -> Figure:
    """One panel per loss column, a line with markers per log (e.g. "train", "val") that has it.

    Columns of different quantities go to different panels: the caller names the
    validation cross-entropy `ce`, as the training's cross-entropy term, never `loss`.
    """
    n_cols = min(3, len(columns))
    n_rows = -(-len(columns) // n_cols)
    fig = Figure(figsize=(4.5 * n_cols, 3.2 * n_rows))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols)).ravel()
    for ax, column in zip(axes, columns):
        for name, log in logs.items():
            if column in log:
                ax.plot(_x_axis(log), log[column], marker=MARKERS.get(name, "o"), label=name)
        ax.set_title(LOSS_TITLES.get(column, column))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    _save(fig, path)
    return fig


def plot_accuracy(logs: dict[str, pd.DataFrame], columns: Sequence[str], path: Path) -> Figure:
    """Accuracy columns of every log in one panel (train vs val), lines with markers."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, log in logs.items():
        for column in columns:
            if column in log:
                label = name if len(columns) == 1 else f"{name} {column}"
                ax.plot(_x_axis(log), log[column], marker=MARKERS.get(name, "o"), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("clip accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return fig


def plot_per_class_accuracy(class_names: Sequence[str], accuracy: np.ndarray,
                            path: Path) -> Figure:
    """Horizontal bars of per-class accuracy (C,) in percent, best class on top."""
    order = np.argsort(-accuracy, kind="stable")
    fig = Figure(figsize=(6 + _label_inches(class_names),
                          max(3.0, INCHES_PER_CLASS * len(order) + 1.2)))
    ax = fig.subplots()
    ax.barh(np.arange(len(order)), accuracy[order], color="tab:blue")
    ax.set_yticks(np.arange(len(order)), [class_names[i] for i in order], fontsize=CLASS_FONT_SIZE)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return fig


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str],
                          path: Path) -> Figure:
    """Confusion matrix (C, C), rows = true class, normalised per row.

    Up to MAX_NAMED_CLASSES classes are named on both axes (the x names turned upright);
    the figure grows with the class count so that every name keeps CLASS_FONT_SIZE.
    """
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    named = n <= MAX_NAMED_CLASSES
    margin = _label_inches(class_names) if named else 0.5
    side = max(4.0, INCHES_PER_CLASS * n) if named else 12.0
    fig = Figure(figsize=(side + margin + 1.5, side + margin + 0.5))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if named:
        ax.set_xticks(np.arange(n), class_names, rotation=90, fontsize=CLASS_FONT_SIZE)
        ax.set_yticks(np.arange(n), class_names, fontsize=CLASS_FONT_SIZE)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, path)
    return fig


def plot_comparison(runs: Sequence[str], groups: Sequence[str],
                    values: dict[str, Sequence[float | None]], path: Path) -> Figure:
    """One panel per metric, a horizontal bar per run, in percent.

    runs: (R,) bar labels; groups: (R,) the configuration of each run, which sets its colour;
    values: {metric: (R,) percent or None}. A None is written `missing`, with no bar.
    """
    names = list(dict.fromkeys(groups))
    colours = dict(zip(names, colormaps["tab10"](np.arange(len(names)) % 10)))
    n_runs = len(runs)
    fig = Figure(figsize=(2.4 * len(values) + _label_inches(runs), 0.35 * n_runs + 1.6))
    axes = np.atleast_1d(fig.subplots(1, len(values), sharey=True))
    positions = np.arange(n_runs)
    for ax, (metric, column) in zip(axes, values.items()):
        for y, value, group in zip(positions, column, groups):
            if value is None:
                ax.text(2, y, "missing", va="center", fontsize=7, color="0.4", style="italic")
            else:
                ax.barh(y, value, color=colours[group])
                ax.text(value + 1, y, f"{value:.1f}", va="center", fontsize=7)
        ax.set_title(metric)
        ax.set_xlim(0, 115)
        ax.set_xlabel("%")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, runs, fontsize=CLASS_FONT_SIZE)
    axes[0].set_ylim(n_runs - 0.5, -0.5)
    if len(names) > 1:
        fig.legend(handles=[Patch(color=colours[g], label=g) for g in names],
                   loc="lower center", ncol=4, fontsize=8)
    legend_rows = -(-len(names) // 4) if len(names) > 1 else 0
    _save(fig, path, bottom_inches=0.3 * legend_rows + 0.1 * bool(legend_rows))
    return fig


def embed_2d(features: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D embedding (N, 2) of features (N, D) and the method's name.

    t-SNE when scikit-learn is installed, else exact PCA (top two principal axes of the
    centred features, signs fixed so the result is deterministic).
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        TSNE = None
    if TSNE is not None and len(features) > 5:
        perplexity = min(30.0, (len(features) - 1) / 3)
        points = TSNE(n_components=2, init="pca", perplexity=perplexity,
                      random_state=0).fit_transform(features)
        return np.asarray(points), "t-SNE"
    x = torch.as_tensor(features, dtype=torch.float64)
    x = x - x.mean(dim=0)
    _, vectors = torch.linalg.eigh(x.T @ x)          # eigenvalues ascending
    axes = vectors[:, -2:].flip(1)
    # An eigenvector's sign is arbitrary: make each axis's largest entry positive.
    axes = axes * torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return (x @ axes).numpy(), "PCA"


def plot_embedding(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                   method: str, path: Path) -> None:
    """Scatter of 2-D points (N, 2) coloured by label (N,)."""
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    classes = np.unique(labels)
    if len(classes) <= 20:
        colors = colormaps["tab10" if len(classes) <= 10 else "tab20"](np.arange(len(classes)))
    else:
        colors = colormaps["turbo"](np.linspace(0, 1, len(classes)))
    for c, color in zip(classes, colors):
        name = "unlabeled" if c < 0 else class_names[c] if c < len(class_names) else str(c)
        mask = labels == c
        ax.scatter(points[mask, 0], points[mask, 1], s=8, color=color, label=name)
    if len(classes) <= MAX_LEGEND_CLASSES:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(f"video features ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, path)
