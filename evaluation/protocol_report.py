"""The 1:N protocol's part of the report: CMC per probe type, FNIR at FPIR, the search's size."""
from __future__ import annotations

import html

import pandas as pd

from evaluation.plots import cmc_curves, grid_table, img, png_b64


def protocol_section(pr: dict | None, search: pd.DataFrame | None) -> list[str]:
    if not pr or search is None:
        return []
    scope = (f"a deterministic subset: {pr['searches']:,} of the {pr['probes']:,} probes against "
             f"{pr['gallery_searched']:,} of the {pr['gallery_size']:,} gallery entries (every drawn mated "
             "probe's mate and a uniform draw of the others); the figures are those of that gallery size"
             if pr["sampled"] else f"every probe against the whole gallery")
    body = ["<h2>1:N protocol (NBIS MINDTCT + Bozorth3)</h2>",
            f"<p>Gallery of {pr['gallery_size']:,} fingers ({pr['distractors']:,} distractors), "
            f"{pr['probes']:,} probes ({pr['probes_mated']:,} mated). Searched: {scope}: "
            f"<b>{pr['comparisons']:,} comparisons</b> ({pr['comparisons_full']:,} for the full protocol), "
            f"{pr['comparisons_per_second']:.0f} per second. Ranks: {html.escape(pr['tie_rule'])}; "
            f"chance rank-1 {pr['chance_rank_1']:.2%}.</p>"]
    o = pr["overall"]
    curves = {f"{t} (n={f['n_mated']})": f["cmc"] for t, f in pr["by_type"].items()}
    curves[f"all (n={o['n_mated']})"] = o["cmc"]
    body.append(img(png_b64(cmc_curves(curves, "1:N protocol CMC per probe type")), "protocol CMC"))
    ranks = [k for k in o if k.startswith("rank_")]
    body.append("<h3>Identification rate at rank k (mated searches)</h3>" + grid_table(
        ["probes", "mated searches", *[k.replace("_", "-") for k in ranks]],
        [[t, f["n_mated"], *[f[k] for k in ranks]] for t, f in {**pr["by_type"], "all": o}.items()]))
    body.append(f"<h3>FNIR at FPIR</h3><p>Non-mated searches: {html.escape(pr['fpir_source'])}; "
                f"{html.escape(pr['miss_rule'])}; {pr['fnir_at_fpir'][0]['n_non_mated']:,} non-mated searches "
                f"resolve FPIR steps of {pr['fpir_resolution']:.2g}.</p>" + grid_table(
                    ["FPIR target", "threshold T (Bozorth3)", "FPIR measured", "FNIR", "mated", "non-mated"],
                    [[r["fpir_target"], r["threshold"], r["fpir"], r["fnir"], r["n_mated"], r["n_non_mated"]]
                     for r in pr["fnir_at_fpir"]]))
    return body


def protocol_summary_lines(pr: dict) -> list[str]:
    o = pr["overall"]
    at = ", ".join(f"FNIR {r['fnir']:.1%} @ FPIR {r['fpir_target']:g}" for r in pr["fnir_at_fpir"])
    return [f"  1:N protocol: {pr['searches']:,} searches x {pr['gallery_searched']:,} gallery entries = "
            f"{pr['comparisons']:,} comparisons{' (sampled)' if pr['sampled'] else ''}; "
            f"rank-1 {o['rank_1']:.1%}, rank-10 {o['rank_10']:.1%} (chance {pr['chance_rank_1']:.1%})",
            f"    {at}"]
