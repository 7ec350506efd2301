"""Plots and HTML pieces of the report: figures become inline base64 PNGs (no assets)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import norm  # noqa: E402

from evaluation.dataset import imread  # noqa: E402
from evaluation.metrics import eer, error_curves  # noqa: E402
from evaluation.settings import QUALITY_LABEL, bin_labels  # noqa: E402


def png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img(b64: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{b64}">'


def table(d: dict) -> str:
    """Two-column table of a dict's scalar values (nested dicts and lists are skipped)."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{fmt(v)}</td></tr>"
                   for k, v in d.items() if not isinstance(v, (dict, list)))
    return f"<table>{rows}</table>"


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def grid_table(header: list[str], rows: list[list]) -> str:
    """Table with a header row: ``rows`` of cells, formatted like ``table``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def quality_histogram(quality: pd.DataFrame, edges: tuple[int, ...], what: str = "images"):
    """Bar chart of images per quality bin (left) and the score histogram (right)."""
    labels = bin_labels(edges)
    counts = quality["quality_bin"].value_counts().reindex(labels, fill_value=0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.bar(labels, counts.to_numpy(), color="#4477aa")
    for x, c in enumerate(counts.to_numpy()):
        a.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=9)
    a.set(xlabel=f"{QUALITY_LABEL} bin", ylabel=what, title=f"{what.capitalize()} per quality bin")
    b.hist(quality["quality_score"].dropna(), bins=np.arange(0, 102, 2), color="#4477aa")
    for e in edges[1:-1]:
        b.axvline(e + 0.5, color="grey", lw=0.8, ls=":")
    b.set(xlabel=f"{QUALITY_LABEL} score", ylabel=what, title="Score distribution",
          xlim=(0, 100))
    return fig


def score_histograms(pairs: pd.DataFrame, title: str, xlabel: str, threshold: float):
    g = pairs.loc[pairs["mated"], "score"].dropna()
    i = pairs.loc[~pairs["mated"], "score"].dropna()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    both = pd.concat([g, i])
    lo, hi = float(both.min()), float(both.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
    for scores, name, colour in ((i, "impostor", "#cc6677"), (g, "genuine", "#117733")):
        if len(scores):
            ax.hist(scores, bins=bins, alpha=0.6, density=True, label=f"{name} (n={len(scores)})",
                    color=colour)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=8)
    return fig


def has_both_classes(pairs: pd.DataFrame) -> bool:
    """A DET curve needs a scored mated and a scored non-mated pair (face scores are NaN where
    no face was found)."""
    scored = pairs["score"].notna()
    return bool((scored & pairs["mated"]).any() and (scored & ~pairs["mated"]).any())


def det_curve(curves: dict[str, pd.DataFrame]):
    """DET plot (normal-deviate axes, ISO/IEC 19795-1) of every score set given."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    lowest = 0.0005
    for name, pairs in curves.items():
        g = pairs.loc[pairs["mated"], "score"].dropna()
        i = pairs.loc[~pairs["mated"], "score"].dropna()
        _, f_m, f_n = error_curves(g, i)
        floor_m, floor_n = 0.5 / max(len(i), 1), 0.5 / max(len(g), 1)   # show zeros at the edge
        lowest = min(lowest, 0.7 * floor_m, 0.7 * floor_n)
        ax.plot(norm.ppf(np.clip(f_m, floor_m, 1 - 1e-9)),
                norm.ppf(np.clip(f_n, floor_n, 1 - 1e-9)), drawstyle="steps-post",
                label=f"{name}, EER {eer(g, i):.2%}")
    ticks = np.array([t for t in (0.0001, 0.001, 0.01, 0.05, 0.2, 0.5) if t >= lowest])
    ax.set_xticks(norm.ppf(ticks), [f"{t:.2%}".replace("0%", "%") if t < 0.001 else f"{t:.1%}"
                                    for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{t:.2%}".replace("0%", "%") if t < 0.001 else f"{t:.1%}"
                                    for t in ticks])
    lim = norm.ppf([lowest, 0.6])
    ax.set(xlim=lim, ylim=lim, xlabel="FMR", ylabel="FNMR", title="DET curve")
    ax.plot(lim, lim, color="grey", lw=0.6, ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def thumb(path: Path, height: int = 130) -> str:
    image = imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return ""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", small)
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


# latent value classes (and "all") keep one colour across the report's plots
CLASS_COLOURS = {"good": "#117733", "bad": "#ddaa33", "ugly": "#cc3311", "all": "k"}


def cmc_curves(curves: dict[str, list[float]], title: str = "CMC"):
    """Cumulative match characteristic: share of searches with the mate at rank <= k, one
    line per named curve (``curves[name][k - 1]`` = CMC(k))."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for name, values in curves.items():
        v = np.asarray(values, np.float64)
        if v.size and np.isfinite(v).any():
            colour = CLASS_COLOURS.get(name.split(" ")[0])
            ax.plot(np.arange(1, v.size + 1), v, drawstyle="steps-post", label=name, color=colour,
                    ls="--" if colour == "k" else "-", lw=1.0 if colour == "k" else 1.6)
    ax.set(xlabel="rank", ylabel="identification rate", title=title, ylim=(0, 1.02), xlim=(1, None))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def class_histograms(table: pd.DataFrame, columns: dict[str, str], by: str,
                     classes: list[str]):
    """One panel per ``columns`` entry (column → axis label): a histogram per class of ``by``."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.4 * len(columns), 3.2), squeeze=False)
    for ax, (col, label) in zip(axes[0], columns.items()):
        values = pd.to_numeric(table[col], errors="coerce") if col in table else pd.Series(dtype=float)
        finite = values.dropna()
        if finite.empty:
            ax.set(title=f"{label}: no values")
            continue
        lo, hi = float(finite.min()), float(finite.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 25)
        for cls in classes:
            v = values[table[by] == cls].dropna()
            if len(v):
                ax.hist(v, bins=bins, alpha=0.55, label=f"{cls} (n={len(v)})",
                        color=CLASS_COLOURS.get(cls))
        ax.set(xlabel=label, ylabel="latents")
        ax.legend(fontsize=8)
    return fig


def side_by_side(paths: list[Path], height: int = 130) -> str:
    """Base64 PNG of the images side by side, each scaled to ``height`` (grey, 4 px gap)."""
    parts = []
    for path in paths:
        image = imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            continue
        h, w = image.shape
        parts.append(cv2.resize(image, (max(1, round(w * height / h)), height),
                                interpolation=cv2.INTER_AREA))
        parts.append(np.full((height, 4), 255, np.uint8))
    if not parts:
        return ""
    ok, buf = cv2.imencode(".png", np.hstack(parts[:-1]))
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""
