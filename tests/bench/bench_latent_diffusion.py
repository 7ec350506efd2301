"""The shipped latent diffusion checkpoint: is it real, and how fast is the default sampler.

Run:  .venv/bin/python -m pytest -m bench tests/bench/bench_latent_diffusion.py -s
Writes tests/bench/results/latent_diffusion.json:
- held-out v-loss of the shipped weights and of the untrained network (same architecture, same
  seed) on fresh simulator batches never trained on (steps HELD_OUT_STEP + i, fixed noise);
- mean absolute difference (grey levels) between two seeds' latents of one finger, and
  between a diffusion latent and its procedural start;
- latents per second per core (torch and OpenCV on one thread): the sampler alone
  (refine_latent, the stage's default steps and t0), the procedural simulator, the gate's
  NBIS extraction, and the whole latent (simulator + sampler + gate) as the stage makes it;
- on CUDA (when present): the sampler's latents per second and its agreement with the CPU.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results"
N = int(os.environ.get("BIOMINT_LATENT_BENCH_N", "12"))


def _per_second(fn, items) -> float:
    start = time.process_time()
    for item in items:
        fn(item)
    return len(items) / max(time.process_time() - start, 1e-9)


def test_shipped_checkpoint_is_trained_and_fast():
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    import generators.fingerprint as fp
    from evaluation.fingerprint_matching import extract_minutiae
    from generators.latent import SHIPPED_WEIGHTS, LatentSettings, make_latent
    from generators.latent.diffusion import UNet, parameter_count
    from generators.latent.refine import refine_latent
    from generators.latent.training import TrainSettings, held_out_loss, load_model
    from generators.latent.training_data import HELD_OUT_STEP, make_source
    from pipeline.stages.latent import Config

    defaults = Config()
    steps, t0 = defaults.steps, defaults.t0
    model = load_model(SHIPPED_WEIGHTS)
    meta = json.loads((SHIPPED_WEIGHTS / "model.json").read_text())
    torch.manual_seed(meta["data_seed"])
    untrained = UNet(model.config).eval()
    # fresh held-out batches: another data seed than training's, steps never trained on
    source = make_source(TrainSettings(data_seed=meta["data_seed"] + 1))
    batches = [source.batch(HELD_OUT_STEP + i) for i in range(4)]
    loss_shipped = held_out_loss(model, batches, "cpu")
    loss_untrained = held_out_loss(untrained, batches, "cpu")

    settings = fp.FingerprintSettings()
    rng = lambda *k: np.random.default_rng(np.random.SeedSequence(entropy=20261201, spawn_key=k))
    masters = [fp.make_master(settings, 1 + i % 10, rng(0, i)) for i in range(N)]
    latents = [make_latent(m, LatentSettings(), rng(1, i), overlap=masters[(i + 1) % N]) for i, m in enumerate(masters)]

    sampler_rate = _per_second(lambda lat: refine_latent(model, lat, steps, t0, seed=1), latents)
    simulator_rate = _per_second(lambda i: make_latent(masters[i], LatentSettings(), rng(2, i),
                                                       overlap=masters[(i + 1) % N]), range(N))
    extract_rate = _per_second(lambda lat: extract_minutiae(lat.image), latents)
    refined = [refine_latent(model, lat, steps, t0, seed=1) for lat in latents]
    other_seed = [refine_latent(model, lat, steps, t0, seed=2) for lat in latents]
    mad_input = float(np.mean([np.abs(a.astype(np.float32) - lat.image).mean() for a, lat in zip(refined, latents)]))
    mad_seeds = float(np.mean([np.abs(a.astype(np.float32) - b).mean() for a, b in zip(refined, other_seed)]))
    # the stage's latent: simulator + sampler + gate (two extractions: the start and the result)
    whole = 1.0 / (1.0 / simulator_rate + 1.0 / sampler_rate + 2.0 / extract_rate)

    result = {
        "checkpoint": str(SHIPPED_WEIGHTS.name), "parameters": parameter_count(model), "trained_steps": meta["steps"],
        "train_device": meta.get("device"), "sampler": {"steps": steps, "t0": t0},
        "held_out_loss": {"shipped": loss_shipped, "untrained": loss_untrained,
                          "reduction": 1.0 - loss_shipped / loss_untrained},
        "mean_abs_difference": {"diffusion_vs_procedural_start": mad_input, "seed_1_vs_seed_2": mad_seeds},
        "cpu_latents_per_second_per_core": {"sampler": sampler_rate, "simulator": simulator_rate,
                                            "nbis_extraction": extract_rate, "stage_latent": whole},
        "latents": N, "canvas": [LatentSettings().height, LatentSettings().width],
    }
    if torch.cuda.is_available():
        gpu = load_model(SHIPPED_WEIGHTS, device="cuda")
        refine_latent(gpu, latents[0], steps, t0, seed=1, device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        cuda = [refine_latent(gpu, lat, steps, t0, seed=1, device="cuda") for lat in latents]
        torch.cuda.synchronize()
        result["cuda"] = {"device": torch.cuda.get_device_name(0),
                          "sampler_latents_per_second": N / (time.perf_counter() - start),
                          "max_abs_difference_vs_cpu": int(max(np.abs(a.astype(int) - b).max()
                                                               for a, b in zip(cuda, refined)))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latent_diffusion.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    assert loss_shipped < loss_untrained
    assert mad_seeds > 0.5 and mad_input > 0.5
