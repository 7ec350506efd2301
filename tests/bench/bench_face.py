"""Face generator benchmark: images/s of StyleGAN2 (random weights, real architectures) at
256², 512², 1024² on CPU (and CUDA when present), plus the identity gate's cost per image.

Writes tests/bench/results/face.json. Random weights cost exactly what trained ones do.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from generators.face import Generator, Generator3, IdentityGate, max_cosine_blockwise

RESULTS = Path(__file__).parent / "results" / "face.json"

# stylegan2-ada-pytorch train.py configs: paper256 (cbase 16384), paper512 / stylegan2 (32768).
ARCHS = {
    256: dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256),
    512: dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
    1024: dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
}
# stylegan3 train.py: --cfg=stylegan3-t --cbase=32768 --cmax=512; -r doubles both and uses
# radial filters and 1x1 convolutions (the FFHQ-U / FFHQ snapshots NVIDIA published).
ARCHS3 = {
    "stylegan3-t": dict(channel_base=32768, channel_max=512, conv_kernel=3, use_radial_filters=False),
    "stylegan3-r": dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True),
}
PLAN3 = {"cpu": {256: (1, 1)}, "cuda": {256: (16, 4), 512: (8, 4), 1024: (4, 4)}}
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


def _time_stylegan3(cfg: str, res: int, device: str, batch: int, reps: int, fp16: bool) -> dict:
    torch.manual_seed(0)
    g = Generator3(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                   mapping_kwargs=dict(num_layers=2), num_fp16_res=4 if fp16 else 0, conv_clamp=256,
                   magnitude_ema_beta=0.999, **ARCHS3[cfg])
    g = g.eval().requires_grad_(False).to(device)
    z = torch.randn(batch, 512, device=device)
    with torch.no_grad():
        g(z, truncation_psi=0.7)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            g(z, truncation_psi=0.7)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    n = batch * reps
    return {"config": cfg, "resolution": res, "device": device, "batch": batch, "images": n, "fp16": fp16,
            "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 3),
            "params": int(sum(p.numel() for p in g.parameters()))}


def _faces_per_s(runs: list[dict], gate: dict) -> list[dict]:
    """Images/s of the face stage's per-image work, composed from the timed parts: synthesis,
    YuNet + SFace on the image, and the gate's comparison against 10,000 identities (edits are
    a few vector additions on w: free beside them). An estimate from parts, labelled so."""
    embed = gate.get("embed_ms_per_image_256px")
    if embed is None:
        return []
    per_gate = gate["max_cosine_ms_per_candidate_vs_10000"] + gate.get("gate_offer_ms_per_image", 0.0)
    out = []
    for r in runs:
        seconds = 1.0 / r["images_per_s"] + (embed + per_gate) / 1000.0
        out.append({k: r[k] for k in ("config", "resolution", "device", "fp16") if k in r}
                   | {"faces_per_s_with_gate_estimated": round(1.0 / seconds, 3)})
    return out


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
    try:
        from PIL import Image

        from evaluation.face_embedding import make_face_embedder
        from photo_faces import PORTRAIT, insightface_images
        emb = make_face_embedder("sface")
        photo = insightface_images() / PORTRAIT
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
    runs, runs3 = [], []
    for device in devices:
        for res, (batch, reps) in PLAN[device].items():
            runs.append(_time_generator(res, device, batch, reps, fp16=False))
            if device == "cuda":
                runs.append(_time_generator(res, device, batch, reps, fp16=True))
        for cfg in ARCHS3:
            for res, (batch, reps) in PLAN3[device].items():
                runs3.append(_time_stylegan3(cfg, res, device, batch, reps, fp16=False))
                if device == "cuda":
                    runs3.append(_time_stylegan3(cfg, res, device, batch, reps, fp16=True))
    gate = _gate_cost()
    speedup = {f"{r['resolution']}": round(r["images_per_s"] / q["images_per_s"], 3)
               for r in runs for q in runs if r["device"] == q["device"] == "cuda"
               and r["resolution"] == q["resolution"] and r["fp16"] and not q["fp16"]}
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "generator": runs,
        "stylegan3": runs3,
        "fp16_speedup_cuda_stylegan2": speedup,
        "identity_gate": gate,
        "face_stage_per_image": _faces_per_s(runs + runs3, gate),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    for r in runs:
        assert r["images_per_s"] > 0
    assert result["generator"][0]["params"] > 1_000_000
