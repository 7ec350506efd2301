"""Face generator benchmark: images/s of StyleGAN2 (random weights, real architectures) at
256², 512², 1024² on CPU (and CUDA when present), plus the identity gate's cost per image.

Writes tests/bench/results/face.json. Random weights cost exactly what trained ones do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from generators.face import Generator, IdentityGate, max_cosine_blockwise

RESULTS = Path(__file__).parent / "results" / "face.json"

# stylegan2-ada-pytorch train.py configs: paper256 (cbase 16384), paper512 / stylegan2 (32768).
ARCHS = {
    256: dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256),
    512: dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
    1024: dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
}
# (batch, timed batches) per resolution and device; CPU is slow, so few images there.
PLAN = {"cpu": {256: (2, 2), 512: (1, 2), 1024: (1, 1)},
        "cuda": {256: (16, 8), 512: (16, 6), 1024: (8, 6)}}


def _time_generator(res: int, device: str, batch: int, reps: int, fp16: bool) -> dict:
    torch.manual_seed(0)
    g = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs={**ARCHS[res], "num_fp16_res": ARCHS[res]["num_fp16_res"] if fp16 else 0})
    g = g.eval().requires_grad_(False).to(device)
    z = torch.randn(batch, 512, device=device)
    with torch.no_grad():
        g(z, truncation_psi=0.7)  # warm-up (cuDNN autotune, allocator)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            g(z, truncation_psi=0.7, noise_mode="const")
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    n = batch * reps
    return {"resolution": res, "device": device, "batch": batch, "images": n, "fp16": fp16,
            "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 3),
            "params": int(sum(p.numel() for p in g.parameters()))}


def _gate_cost() -> dict:
    """Per-image: YuNet + SFace embedding of a real portrait, and the blockwise max-cosine
    of one candidate against 10,000 and 100,000 accepted identities."""
    out: dict = {}
    rng = np.random.default_rng(0)
    for n in (10_000, 100_000):
        ref = rng.standard_normal((n, 128)).astype(np.float32)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        q = ref[:64] + 0.01
        max_cosine_blockwise(q, ref)
        start = time.perf_counter()
        max_cosine_blockwise(q, ref)
        out[f"max_cosine_ms_per_candidate_vs_{n}"] = round((time.perf_counter() - start) * 1000 / 64, 4)
    spec = importlib.util.find_spec("insightface")
    try:
        from PIL import Image

        from evaluation.face_embedding import make_face_embedder
        emb = make_face_embedder("sface")
        photo = Path(list(spec.submodule_search_locations)[0]) / "data/images/Tom_Hanks_54745.png"
        face = np.asarray(Image.open(photo).convert("RGB").resize((256, 256)))
    except Exception as exc:  # the embedder or the photo is missing: report, do not fail
        out["embed_error"] = f"{type(exc).__name__}: {exc}"
        return out
    images = [face] * 8
    emb.embed(images[:1])
    start = time.perf_counter()
    r = emb.embed(images)
    per = (time.perf_counter() - start) / len(images)
    gate = IdentityGate(threshold=0.363)
    start = time.perf_counter()
    gate.offer_batch(r.embeddings, r.found)
    out.update(embed_ms_per_image_256px=round(per * 1000, 2), faces_found=int(r.found.sum()),
               gate_offer_ms_per_image=round((time.perf_counter() - start) * 1000 / len(images), 4))
    return out


@pytest.mark.bench
def test_bench_face():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    runs = []
    for device in devices:
        for res, (batch, reps) in PLAN[device].items():
            runs.append(_time_generator(res, device, batch, reps, fp16=False))
            if device == "cuda":
                runs.append(_time_generator(res, device, batch, reps, fp16=True))
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "generator": runs,
        "identity_gate": _gate_cost(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    for r in runs:
        assert r["images_per_s"] > 0
    assert result["generator"][0]["params"] > 1_000_000
