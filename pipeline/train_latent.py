"""`biomint-train-latent`: train (or resume) the latent diffusion model on simulator pairs.

    biomint-train-latent --out checkpoints/latent --steps 2000            # resumes if --out has last.pt
    biomint-train-latent --out /tmp/tiny --steps 50 --channels 8,16,32 --patch 64 --small
    biomint-train-latent --out lab-latent --init generators/latent/weights --real /data/sd302/latent --steps 2000

Bad input is one sentence and exit 2 (as for `biomint`).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="biomint-train-latent", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory (resumed when it holds last.pt)")
    parser.add_argument("--steps", type=int, default=2000, help="total optimiser steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128, help="training patch size in px (multiple of 8)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0, help="data seed: batches are a function of (seed, step)")
    parser.add_argument("--channels", default="32,64,96", help="UNet channels per level")
    parser.add_argument("--unshuffle", type=int, default=4, help="pixels folded into channels at the UNet's input")
    parser.add_argument("--condition", default="residue", choices=("residue", "ridges"),
                        help="the condition map: the residue the touch left, or the clean ridge map")
    parser.add_argument("--workers", type=int, default=0, help="data processes making batches ahead (0: none)")
    parser.add_argument("--real", type=Path, default=None,
                        help="fine-tune on the real latent images of this folder (conditions from their enhancement)")
    parser.add_argument("--init", type=Path, default=None, help="start from this checkpoint directory")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between resume points")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:n]")
    parser.add_argument("--small", action="store_true", help="small canvases (the smoke preset's), for quick runs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    ns = parser.parse_args(argv)
    from generators.fingerprint import FingerprintSettings
    from generators.latent import LatentSettings
    from generators.latent.training import TrainSettings, train

    try:
        channels = tuple(int(c) for c in ns.channels.split(","))
        settings = TrainSettings(steps=ns.steps, batch=ns.batch, patch=ns.patch, lr=ns.lr, data_seed=ns.seed,
                                 channels=channels, unshuffle=ns.unshuffle, workers=ns.workers, condition=ns.condition,
                                 checkpoint_every=ns.checkpoint_every,
                                 real_dir=str(ns.real) if ns.real else None, init=str(ns.init) if ns.init else None)
        if ns.real is not None:
            from generators.latent.training_data import real_latent_files

            real_latent_files(ns.real)
        if ns.init is not None and not (ns.init / "model.json").is_file():
            raise ValueError(f"--init {ns.init} holds no latent diffusion checkpoint (model.json and model.pt)")
        if ns.small:
            settings = replace(settings, fingerprint=FingerprintSettings(width=160, height=192, master_width=240,
                                                                         master_height=224),
                               latent=LatentSettings(width=192, height=192))
    except (ValueError, FileNotFoundError) as e:
        print(f"biomint-train-latent: {e}", file=sys.stderr)
        return 2
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if ns.device == "auto" else ns.device
    try:
        train(ns.out, settings, device=device, progress=not ns.quiet)
    except (OSError, RuntimeError) as e:
        print(f"biomint-train-latent: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2 if isinstance(e, OSError) else 1
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
