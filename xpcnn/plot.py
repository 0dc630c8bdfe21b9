"""PNG figures of a training run (matplotlib, the optional ``xpcnn[plot]`` extra).

Figures are drawn on matplotlib's Agg canvas directly, so nothing here touches pyplot's global
state or needs a display.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .errors import XpcnnError
from .fileformat import write_atomic


class PlotUnavailableError(XpcnnError, RuntimeError):
    """matplotlib is not installed."""


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotUnavailableError(f"plots need matplotlib ({e}); fix: pip install 'xpcnn[plot]'") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    """The figure as a PNG written atomically (an old file at ``path`` stays whole if writing fails)."""
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return write_atomic(path, png.getvalue())


def training_curves(history, path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, training and validation, side by side, to ``path`` (PNG).
    ``history``: a :class:`xpcnn.callbacks.History` or its ``history`` dict."""
    logs = getattr(history, "history", history)
    fig = _figure(10, 4)
    for i, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = logs.get(key) or []
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def first_layer_kernels(model, path: str | os.PathLike) -> Path:
    """A grid of the first Conv2D layer's kernels (input channel 0), one panel each, to ``path``."""
    conv = next((layer for layer in model.layers if type(layer).__name__ == "Conv2D"), None)
    if conv is None or "weight" not in conv.params:
        raise XpcnnError("model: no built Conv2D layer whose kernels could be drawn")
    kernels = to_numpy(conv.params["weight"])[:, 0]  # (out, kh, kw)
    count = kernels.shape[0]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    fig = _figure(1.4 * cols, 1.4 * rows + 0.4)
    limit = float(np.abs(kernels).max()) or 1.0
    for k in range(count):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(kernels[k], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(k), fontsize=8)
    fig.suptitle(f"first-layer kernels ({count} x {kernels.shape[1]}x{kernels.shape[2]}); red > 0 > blue")
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(counts, class_names, path: str | os.PathLike) -> Path:
    """The confusion matrix ``counts`` (K, K) (rows: true class, columns: predicted; K =
    len(class_names)) as a heat map with each cell's count, to ``path`` (PNG)."""
    counts = np.asarray(counts)
    size = 2.5 + 0.5 * len(class_names)
    fig = _figure(size, size)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(counts, cmap="Blues", interpolation="nearest")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    high = counts.max() / 2
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > high else "black", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def save_all(history, model, directory: str | os.PathLike) -> list[Path]:
    """``curves.png`` and ``kernels.png`` in ``directory`` (created); returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [training_curves(history, directory / "curves.png")]
    if any(type(layer).__name__ == "Conv2D" for layer in model.layers):
        paths.append(first_layer_kernels(model, directory / "kernels.png"))
    return paths
