"""The detection report's pictures: ROC curves per attack class and score distributions, as deterministic PNGs.

Same scores in, same bytes out: a fixed size and resolution, matplotlib's default style (no user
``matplotlibrc``), the Agg renderer and no ``Software`` or date in the PNG's metadata. matplotlib is imported
here only, inside the functions that draw: the rest of the eval (and the job library) runs without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: figure size in inches and resolution: 960 x 600 pixels
SIZE = (9.6, 6.0)
DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def roc_curve(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) at every distinct score taken as a threshold (a row is
    detected when its score is above it, as in :func:`ndr_jobs.devtools.eval.recall_at_fpr`), from (0, 0) to
    (1, 1)."""
    thresholds = np.unique(np.concatenate([positives, negatives]))[::-1]
    fpr = [0.0, *(np.mean(negatives > t) for t in thresholds), 1.0]
    tpr = [0.0, *(np.mean(positives > t) for t in thresholds), 1.0]
    return np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)


@contextmanager
def _figure(path: Path, rows: int = 1, cols: int = 1) -> Iterator[tuple[Any, Any]]:
    """A figure of ``rows`` x ``cols`` axes in matplotlib's default style on the Agg canvas, saved to ``path``
    when the block ends."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(rows, cols, squeeze=False)
        yield figure, axes
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def draw_roc(scores: Mapping[str, Sequence[float]], path: Path,
             comparisons: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
             title: str = "ROC per attack class") -> Path:
    """ROC curves of every class in ``scores`` (``{"negatives": [...], "overall": [...], class: [...]}``), the
    false-positive rate on a log axis (alerting lives at 0.1-1 %); ``comparisons`` (name -> the same mapping)
    add their ``overall`` curve, dashed."""
    negatives = np.asarray(scores["negatives"], dtype=float)
    floor = 0.5 / max(len(negatives), 1)  # where a false-positive rate of 0 is drawn on the log axis
    curves = [(f"{name} ({len(values)})", values, negatives, {"linewidth": 2.5, "color": "black"} if name ==
               "overall" else {"linewidth": 1.5}) for name, values in scores.items() if name != "negatives" and
              len(values)]  # fmt: skip
    curves += [(f"overall, {label} ({len(other['overall'])})", other["overall"],
                np.asarray(other["negatives"], dtype=float), {"linewidth": 1.2, "linestyle": "--"})
               for label, other in (comparisons or {}).items() if len(other["overall"])]  # fmt: skip
    with _figure(path) as (_, axes):
        ax = axes[0][0]
        for label, values, against, style in curves:
            fpr, tpr = roc_curve(np.asarray(values, dtype=float), against)
            ax.step(np.maximum(fpr, floor), tpr, where="post", label=label, **style)
        for rate in (0.001, 0.01):
            ax.axvline(rate, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlim(floor, 1.0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"false-positive rate (log scale; {len(negatives)} negatives; dotted: 0.1 % and 1 %)")
        ax.set_ylabel("recall (true-positive rate)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", title="class (positive windows)")
    return path


def threshold_at(negatives: np.ndarray, fpr: float) -> float | None:
    """The score that at most ``fpr`` of the negatives exceed (as :func:`ndr_jobs.devtools.eval.recall_at_fpr`)."""
    if len(negatives) == 0:
        return None
    ordered = np.sort(negatives)[::-1]
    return float(ordered[min(int(np.floor(fpr * len(ordered))), len(ordered) - 1)])


def draw_distributions(scores: Mapping[str, Sequence[float]], path: Path, fpr: float = 0.01,
                       title: str = "Scores: negatives against each class") -> Path:
    """A panel per class of ``scores`` (in its order): the histogram of the negatives' scores against the
    class's positives on one scale (densities: a class of 2 rows shows as well as 1000 negatives), and the
    threshold that ``fpr`` of the negatives exceed."""
    negatives = np.asarray(scores["negatives"], dtype=float)
    classes = [n for n in scores if n != "negatives"]
    everything = np.concatenate([negatives, *(np.asarray(scores[n], dtype=float) for n in classes)])
    low, high = (float(everything.min()), float(everything.max())) if len(everything) else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 41)
    threshold = threshold_at(negatives, fpr)
    cols = 3
    with _figure(path, max(1, -(-len(classes) // cols)), cols) as (figure, axes):
        for i, ax in enumerate(axes.flat):
            if i >= len(classes):
                ax.set_axis_off()
                continue
            name, positives = classes[i], np.asarray(scores[classes[i]], dtype=float)
            ax.hist(negatives, bins=bins, density=True, color="tab:gray", alpha=0.6,
                    label=f"negatives ({len(negatives)})")
            if len(positives):
                ax.hist(positives, bins=bins, density=True, color="tab:red", alpha=0.6,
                        label=f"{name} ({len(positives)})")
            if threshold is not None:
                ax.axvline(threshold, color="black", linewidth=0.8, linestyle="--", label=f"{fpr:.0%} FPR threshold")
            ax.set_title(name)
            ax.set_xlabel("score")
            ax.set_ylabel("density")
            ax.legend(fontsize="small", loc="best")
        figure.suptitle(title)
    return path
