"""Fit InterFaceGAN boundaries for a checkpoint: sample latents, label them offline, fit, save.

Labels: head pose (yaw, pitch, roll) from the embedder's five landmarks; brightness,
illumination, contrast from image statistics; anything else (age, glasses, smile) from a
user CSV (`index,<attr>,...`, index = latent number). The embedder is injected (generators/
does not import evaluation/); `biomint-face-boundaries` (pipeline/face_boundaries.py) is the command.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from generators.face.boundaries import BoundarySet, fit_boundary, save_boundaries
from generators.face.checkpoint import checkpoint_sha256, load_generator
from generators.face.generator import Generator, pick_device
from generators.face.identities import class_vector, map_latents, render
from generators.face.identity_gate import FaceEmbedderLike
from generators.face.labellers import (IMAGE_LABELLERS, LANDMARK_ATTRIBUTES, csv_label_scores,
                                       head_pose_scores)

log = logging.getLogger("biomint.face")
DEFAULT_ATTRIBUTES = ("yaw", "pitch", "roll", "brightness", "illumination")


@dataclass(frozen=True)
class FitSettings:
    samples: int = 2000                         # latents to sample and label (paper: 500k)
    fraction: float = 0.1                       # top / bottom fraction per attribute (paper: 2 %)
    method: str = "svm"                         # "svm" or "logistic"
    truncation_psi: float = 0.7
    batch: int = 8
    seed: int = 0
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    csv_path: str | None = None                 # user labels for attributes not labelled here
    csv_attributes: tuple[str, ...] = field(default_factory=tuple)
    class_index: int | None = None              # a conditional generator's class (boundaries are per class)


def sample_and_label(generator: Generator, embedder: FaceEmbedderLike, settings: FitSettings,
                     device: torch.device) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Latents w [N, w_dim] (first layer of the truncated ws) and scores per attribute [N]
    (NaN where the labeller had no face)."""
    unknown = [a for a in settings.attributes
               if a not in IMAGE_LABELLERS and a not in LANDMARK_ATTRIBUTES]
    if unknown:
        raise ValueError(f"no offline labeller for {unknown}; offline: "
                         f"{sorted([*IMAGE_LABELLERS, *LANDMARK_ATTRIBUTES])}; give others in a CSV")
    c = class_vector(generator, settings.class_index)
    rng = np.random.default_rng(settings.seed)
    n = settings.samples
    ws_all = np.zeros((n, generator.w_dim), np.float32)
    scores = {a: np.full(n, np.nan) for a in settings.attributes}
    for start in range(0, n, settings.batch):
        stop = min(start + settings.batch, n)
        z = rng.standard_normal((stop - start, generator.z_dim)).astype(np.float32)
        ws = map_latents(generator, z, settings.truncation_psi, None, device, c)
        images = render(generator, ws, device)
        ws_all[start:stop] = ws[:, 0]
        for a, fn in IMAGE_LABELLERS.items():
            if a in scores:
                scores[a][start:stop] = fn(images)
        if any(a in LANDMARK_ATTRIBUTES for a in settings.attributes):
            result = embedder.embed(list(images))
            pose = head_pose_scores(result.landmarks)
            found = np.asarray(result.found, bool)
            for a in LANDMARK_ATTRIBUTES:
                if a in scores:
                    # No face, no pose: NaN leaves the latent out of that fit.
                    scores[a][start:stop] = np.where(found, pose[a], np.nan)
    if settings.csv_path:
        scores.update(csv_label_scores(settings.csv_path, n, list(settings.csv_attributes)))
    return ws_all, scores


def fit_all(ws: np.ndarray, scores: dict[str, np.ndarray], settings: FitSettings,
            checkpoint_hash: str) -> BoundarySet:
    normals, info = {}, {}
    for name in sorted(scores):
        fitted = fit_boundary(ws, scores[name], fraction=settings.fraction, method=settings.method,
                              seed=settings.seed)
        normals[name] = fitted.normal
        info[name] = {"accuracy": fitted.accuracy, "count": fitted.count,
                      "labelled": int(np.isfinite(scores[name]).sum())}
        log.info("boundary %s: validation accuracy %.3f on %d extremes", name, fitted.accuracy,
                 fitted.count)
    info["_fit"] = {"samples": settings.samples, "fraction": settings.fraction,
                    "method": settings.method, "truncation_psi": settings.truncation_psi,
                    "seed": settings.seed}
    return BoundarySet(normals, checkpoint_hash, "w", info)


def run_fit(checkpoint: str | Path, out: str | Path, embedder: FaceEmbedderLike,
            settings: FitSettings, device: str | None = None) -> BoundarySet:
    """Load, sample, label, fit and save; returns the saved BoundarySet."""
    dev = pick_device(device)
    generator = load_generator(checkpoint, dev)
    ws, scores = sample_and_label(generator, embedder, settings, dev)
    boundaries = fit_all(ws, scores, settings, checkpoint_sha256(checkpoint))
    save_boundaries(out, boundaries)
    return boundaries


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="biomint-face-boundaries", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="stylegan2-ada .pkl, rosinality .pt or biomint .pt")
    p.add_argument("--out", required=True, help="output .npz (normals + checkpoint sha256)")
    p.add_argument("--samples", type=int, default=FitSettings.samples)
    p.add_argument("--fraction", type=float, default=FitSettings.fraction)
    p.add_argument("--method", choices=["svm", "logistic"], default=FitSettings.method)
    p.add_argument("--psi", type=float, default=FitSettings.truncation_psi)
    p.add_argument("--batch", type=int, default=FitSettings.batch)
    p.add_argument("--seed", type=int, default=FitSettings.seed)
    p.add_argument("--attributes", default=",".join(DEFAULT_ATTRIBUTES),
                   help="offline labellers: yaw,pitch,roll,brightness,illumination,contrast")
    p.add_argument("--labels-csv", default=None, help="CSV with column index + one per attribute")
    p.add_argument("--csv-attributes", default="", help="attributes to take from the CSV")
    p.add_argument("--embedder", default="sface", help="sface or arcface")
    p.add_argument("--embedder-onnx", default=None, help="ArcFace ONNX path (embedder=arcface)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    p.add_argument("--class-index", type=int, default=None,
                   help="a conditional checkpoint's class (one-hot label); boundaries hold for that class")
    return p.parse_args(argv)


def main(argv: list[str] | None, make_embedder: Callable[[str, str | None], FaceEmbedderLike]) -> int:
    """Command body; `make_embedder(name, onnx_path)` builds the face embedder."""
    args = parse_args(argv)
    split = lambda s: tuple(a for a in s.split(",") if a)  # noqa: E731
    settings = FitSettings(samples=args.samples, fraction=args.fraction, method=args.method,
                           truncation_psi=args.psi, batch=args.batch, seed=args.seed,
                           attributes=split(args.attributes), csv_path=args.labels_csv,
                           csv_attributes=split(args.csv_attributes), class_index=args.class_index)
    boundaries = run_fit(args.checkpoint, args.out, make_embedder(args.embedder, args.embedder_onnx),
                         settings, args.device)
    print(f"face boundaries: {', '.join(sorted(boundaries.normals))} -> {args.out} "
          f"(checkpoint {boundaries.checkpoint_sha256[:12]})")
    return 0
