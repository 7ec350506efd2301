"""The "Latent search" section of the HTML report and its lines in the terminal summary."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.fingerprint_report import KIND_COLUMNS, _kind_row
from evaluation.plots import (class_histograms, cmc_curves, grid_table, has_both_classes, img,
                              png_b64, score_histograms, side_by_side, table)

CLASS_COLUMNS = [("count", "latents"), ("n_searches", "searched with a mate"),
                 ("rank_1", "rank-1"), ("rank_20", "rank-20"),
                 ("median_mate_score", "median mate score"),
                 ("median_best_impostor_score", "median best impostor"),
                 ("median_nbis_minutiae", "median NBIS minutiae"),
                 ("median_nbis_minutiae_in_mask", "median NBIS in mask"),
                 ("median_n_visible_minutiae", "median truth minutiae"),
                 ("median_visible_fraction_of_mate", "median visible / mate foreground")]
HISTOGRAMS = {"visible_fraction_of_mate": "visible area / mate foreground",
              "nbis_minutiae_in_mask": "NBIS minutiae inside the visible region"}


def _cell(key: str, value):
    if key.startswith("rank_") or key.endswith("fraction_of_mate"):
        return "—" if value is None or value != value else f"{value:.1%}"
    return value


def _class_table(ls: dict) -> str:
    rows = [[name] + [_cell(key, f.get(key, float("nan"))) for key, _ in CLASS_COLUMNS]
            for name, f in [*ls["by_class"].items(), ("all", ls["overall"])]]
    return grid_table(["value class"] + [h for _, h in CLASS_COLUMNS], rows)


def contact_strip(root: Path, search: pd.DataFrame, manifest: pd.DataFrame, classes: list[str],
                  per_class: int = 3) -> str:
    """Per class up to ``per_class`` latents (best, middle and worst mate rank) beside the
    gallery print of their finger, downscaled."""
    paths = dict(zip(manifest["sample_id"], manifest["path"]))
    parts = []
    for cls in classes:
        rows = search[(search["value_class"] == cls) & search["mate_sample_id"].notna()]
        rows = rows.sort_values(["mate_rank", "sample_id"], na_position="last")
        if rows.empty:
            continue
        pick = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, min(per_class, len(rows))).astype(int))]
        cells = []
        for r in pick.itertuples():
            b64 = side_by_side([root / paths[r.sample_id], root / paths[r.mate_sample_id]], 130)
            rank = "—" if r.mate_rank != r.mate_rank else f"{r.mate_rank:.0f}"
            score = "—" if r.mate_score != r.mate_score else f"{r.mate_score:.0f}"
            cells.append(f"<figure>{img(b64, r.sample_id)}<figcaption>{html.escape(r.sample_id)} "
                         f"beside {html.escape(r.mate_sample_id)}<br>rank {rank}, mate score "
                         f"{score}, NBIS minutiae in mask {r.nbis_minutiae_in_mask:.0f}"
                         "</figcaption></figure>")
        parts.append(f"<h4>{html.escape(cls)}</h4><div class=\"grid\">{''.join(cells)}</div>")
    return "".join(parts)


def latent_section(root: Path, ls: dict | None, search: pd.DataFrame | None,
                   pairs: pd.DataFrame | None, manifest: pd.DataFrame
                   ) -> tuple[list[str], dict]:
    """(HTML, {DET curve label: scored pairs}) of the latent search and the latent pair kinds."""
    if not ls or search is None:
        return [], {}
    body = ["<h2>Latent search (NBIS MINDTCT + Bozorth3, 1:N)</h2>",
            f"<p>{ls['n_latents']} latents searched against a gallery of {ls['gallery_size']} "
            f"prints: {html.escape(ls['gallery_note'])}. Ranks: {html.escape(ls['tie_rule'])}. "
            f"Visible area over the {html.escape(ls['visible_area_reference'])}. "
            f"CMC to rank {ls['cmc_max_rank']}; rank-k figures are shares of the latents whose "
            f"finger has a gallery print ({ls['n_without_mate']} without).</p>"]
    if not ls["searched"]:
        body.append("<p>The 1:N search was switched off (latent_search=false).</p>")
    body.append("<h3>Rank-1 and rank-20 per value class</h3>" + _class_table(ls))
    if ls["searched"]:
        curves = {f"{c} (n={f['n_searches']})": f["cmc"] for c, f in ls["by_class"].items()}
        curves[f"all (n={ls['overall']['n_searches']})"] = ls["overall"]["cmc"]
        body.append(img(png_b64(cmc_curves(curves, "Latent search CMC per value class")), "latent CMC"))
    body.append("<h3>Visible area and NBIS minutiae per value class</h3>"
                + img(png_b64(class_histograms(search, HISTOGRAMS, "value_class", ls["classes"])),
                      "latent histograms"))
    det = {}
    m = ls.get("pairs")
    if m and pairs is not None:
        op = f"bozorth3_{m['threshold']:g}"
        body.append("<h3>Latent pairs (a = latent, b = print)</h3>" + grid_table(
            ["kind"] + [h.format(t=f"{m['threshold']:g}") for _, h in KIND_COLUMNS],
            [_kind_row(kind, k, op) for kind, k in m["by_kind"].items()]))
        for kind in m["by_kind"]:
            p = pairs[pairs["kind"] == kind]
            if not p["score"].notna().any():
                continue
            body.append(img(png_b64(score_histograms(
                p, f"Bozorth3 scores, {kind}", "Bozorth3 score", m["threshold"])),
                f"bozorth3 hist {kind}"))
            if has_both_classes(p):
                det[f"{kind} (Bozorth3)"] = p
    body.append("<h3>Latents beside their mates</h3>"
                + contact_strip(Path(root), search, manifest, ls["classes"]))
    body.append("<h4>Search figures</h4>" + table(ls))
    return body, det


def latent_summary_lines(ls: dict) -> list[str]:
    """The latent lines of ``format_summary``: the search, then one line per value class."""
    o = ls["overall"]
    head = (f"  latent search: {ls['n_latents']} latents vs {ls['gallery_size']} "
            f"{ls['gallery'] or 'gallery'} prints (Bozorth3 "
            f"{'native' if ls['native'] else 'pure Python'})")
    if not ls["searched"]:
        return [head + ", search off"]
    lines = [head + f", rank-1 {o['rank_1']:.1%}, rank-20 {o['rank_20']:.1%}"]
    for cls, f in ls["by_class"].items():
        lines.append(f"    {cls}: {f['count']} latent{'' if f['count'] == 1 else 's'}, rank-1 "
                     f"{f['rank_1']:.1%}, rank-20 {f['rank_20']:.1%}, NBIS minutiae in mask median "
                     f"{f['median_nbis_minutiae_in_mask']:.0f}, visible area median "
                     f"{f['median_visible_fraction_of_mate']:.0%} of the {ls['gallery']} mate")
    return lines
