"""Self-contained HTML report (base64 PNG plots, no external assets) and terminal summary."""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from evaluation.fingerprint_report import (matching_section, quality_section, slap_section,
                                           summary_lines)
from evaluation.latent_report import latent_section, latent_summary_lines
from evaluation.protocol_report import protocol_section, protocol_summary_lines
from evaluation.plots import (det_curve, has_both_classes, img, png_b64, score_histograms,
                              table, thumb)


def face_grid(root: Path, samples: pd.DataFrame, manifest: pd.DataFrame, n: int = 12) -> str:
    paths = dict(zip(manifest["sample_id"], manifest["path"]))
    firsts = samples.groupby("subject_id").head(1).head(n)
    cells = "".join(
        f'<figure>{img(thumb(root / paths[r.sample_id], 110), r.sample_id)}'
        f'<figcaption>subject {r.subject_id}{"" if r.face_found else "<br>no face found"}'
        f'</figcaption></figure>' for r in firsts.itertuples())
    return f'<div class="grid">{cells}</div>'


CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1100px}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;
text-align:left;font-size:13px}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;text-align:center;font-size:11px}h2{border-bottom:1px solid #999}"""


def write_report(path: Path, root: Path, summary: dict, manifest: pd.DataFrame,
                 quality: pd.DataFrame | None, fp_pairs: pd.DataFrame | None,
                 face_samples: pd.DataFrame | None, face_pairs: pd.DataFrame | None,
                 edges: tuple[int, ...], per_bin: int, slap_segments: pd.DataFrame | None = None,
                 slaps: pd.DataFrame | None = None,
                 latent_search: pd.DataFrame | None = None,
                 protocol_search: pd.DataFrame | None = None) -> Path:
    """Write report/index.html: every image inline, so the file opens offline anywhere."""
    body = [f"<h1>biomint evaluation — {html.escape(Path(root).name)}</h1>",
            f"<p>Dataset: <code>{html.escape(str(root))}</code></p>"]
    if summary.get("sample"):
        sm = summary["sample"]
        body.append(f"<p>Evaluated on a sample: {sm['samples']:,} of {sm['of_samples']:,} samples, "
                    f"whole subjects ({sm['subjects']:,} of {sm['of_subjects']:,}) in a seeded random order "
                    f"(seed {sm['seed']}).</p>")
    curves = {}
    fp = summary.get("fingerprint")
    if fp:
        body += quality_section(Path(root), fp, quality, slap_segments, manifest, edges, per_bin)
        body += slap_section(Path(root), fp, slaps, manifest)
        section, curves = matching_section(fp, fp_pairs)
        body += section
    section, latent_curves = latent_section(Path(root), summary.get("latent_search"),
                                            latent_search, fp_pairs, manifest)
    body += section
    curves.update(latent_curves)
    body += protocol_section(summary.get("protocol"), protocol_search)
    fc = summary.get("face")
    if fc and face_pairs is not None and face_pairs["score"].notna().any():
        body.append(f"<h2>Face distinctness ({html.escape(fc['embedder'])})</h2>")
        body.append(img(png_b64(score_histograms(
            face_pairs, "Cosine similarity", "cosine", fc["threshold"])), "face hist"))
        body.append(table({k: v for k, v in fc.items()}))
        body.append("<h3>Verification</h3>" + table(fc["verification"]))
        if face_samples is not None:
            body.append("<h3>Identities (first image each)</h3>")
            body.append(face_grid(Path(root), face_samples, manifest))
        if has_both_classes(face_pairs):
            curves[f"face ({fc['embedder']})"] = face_pairs
    if curves:
        body.append("<h2>DET curves</h2>" + img(png_b64(det_curve(curves)), "DET curve")
                    + "<p>One curve per pair kind. Normal-deviate axes; an error rate of zero "
                    "is drawn at 0.5/n (n = impostor or genuine comparisons), the edge of what "
                    "n can resolve.</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>biomint evaluation"
            f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    from pipeline.manifest import write_bytes_atomic

    write_bytes_atomic(path, page.encode("utf-8"))
    return path


def format_summary(summary: dict) -> str:
    """One terminal screen: counts, quality bins, EER / FMR at thresholds, output paths."""
    lines = [f"biomint evaluation: {summary['dataset']}"]
    if summary.get("sample"):
        sm = summary["sample"]
        lines.append(f"  sample: {sm['samples']:,} of {sm['of_samples']:,} samples, whole subjects "
                     f"({sm['subjects']:,} of {sm['of_subjects']:,}, seed {sm['seed']})")
    fp = summary.get("fingerprint")
    if fp:
        lines += summary_lines(fp)
    if summary.get("latent_search"):
        lines += latent_summary_lines(summary["latent_search"])
    if summary.get("protocol"):
        lines += protocol_summary_lines(summary["protocol"])
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
