"""PNG figures of the report (matplotlib's Agg renderer).

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot, so nothing
here changes the process-wide backend or keeps figures alive.
"""
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

# Above this many classes, class names no longer fit along an axis or in a legend.
MAX_NAMED_CLASSES = 60
MAX_LEGEND_CLASSES = 20


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _x_axis(log: pd.DataFrame) -> pd.Series:
    return log["epoch"] if "epoch" in log else pd.Series(range(1, len(log) + 1))


def plot_losses(logs: dict[str, pd.DataFrame], columns: Sequence[str], path: Path) -> None:
    """One panel per loss column, a line per log (e.g. "train", "val") that has it."""
    n_cols = min(3, len(columns))
    n_rows = -(-len(columns) // n_cols)
    fig = Figure(figsize=(4.5 * n_cols, 3.2 * n_rows))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols)).ravel()
    for ax, column in zip(axes, columns):
        for name, log in logs.items():
            if column in log:
                ax.plot(_x_axis(log), log[column], label=name)
        ax.set_title(column)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    _save(fig, path)


def plot_accuracy(logs: dict[str, pd.DataFrame], columns: Sequence[str], path: Path) -> None:
    """Accuracy columns of every log in one panel (train vs val)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, log in logs.items():
        for column in columns:
            if column in log:
                label = name if len(columns) == 1 else f"{name} {column}"
                ax.plot(_x_axis(log), log[column], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("clip accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_per_class_accuracy(class_names: Sequence[str], accuracy: np.ndarray,
                            path: Path) -> None:
    """Horizontal bars of per-class accuracy (C,) in percent, best class on top."""
    order = np.argsort(-accuracy, kind="stable")
    fig = Figure(figsize=(7, max(3.0, 0.2 * len(order) + 1)))
    ax = fig.subplots()
    ax.barh(np.arange(len(order)), accuracy[order], color="tab:blue")
    ax.set_yticks(np.arange(len(order)), [class_names[i] for i in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str],
                          path: Path) -> None:
    """Confusion matrix (C, C), rows = true class, normalised per row."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = min(max(6.0, 0.22 * n + 2), 40.0)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= MAX_NAMED_CLASSES:
        ax.set_xticks(np.arange(n), class_names, rotation=90, fontsize=6)
        ax.set_yticks(np.arange(n), class_names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, path)


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
