"""Training batches for the latent diffusion model: simulator pairs, or a lab's real latents.

Both sources return numpy batches (target latent [B, 1, P, P] in [-1, 1], conditions
[B, 2, P, P]: ridge map in [0, 1] and visible mask in {0, 1}) as a pure function of (data
seed, step), so a resumed run sees exactly the batches an uninterrupted one would, whether
the batches are made in this process or in `workers` processes ahead of the optimiser.

- SimulatorPairs: a pool of master prints renewed every `pool_refresh` steps; each batch
  draws latents from the procedural simulator and cuts `patches_per_latent` patches from
  each, centred near the visible region where the ridges are (the UNet has no attention, so
  patches train a full-resolution model: Patch Diffusion, arXiv 2304.12526).
- RealLatents: a folder of real latent images without pairs (e.g. NIST SD302's latents). The
  conditions are each latent's own enhanced ridge map and foreground mask (enhance.py), so
  fine-tuning teaches the model the real surfaces, noise and development textures around
  the ridges it is given. Every tenth image (by sorted name) is held out when there are ten
  or more.
"""
from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")
HELD_OUT_STEP = 10**9        # steps from here on are never trained on (held-out batches)


def data_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key)))


def _patch_window(rng: np.random.Generator, mask: np.ndarray, p: int) -> tuple[slice, slice]:
    """A p x p window near a random pixel of the visible region (anywhere if it is empty)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs):
        k = int(rng.integers(len(xs)))
        cy, cx = int(ys[k]), int(xs[k])
    else:
        cy, cx = h // 2, w // 2
    y0 = int(np.clip(cy - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, h - p))
    x0 = int(np.clip(cx - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, w - p))
    return slice(y0, y0 + p), slice(x0, x0 + p)


def _sample(image: np.ndarray, ridges: np.ndarray, mask: np.ndarray, window) -> tuple[np.ndarray, np.ndarray]:
    target = image[window].astype(np.float32) / 127.5 - 1.0
    return target[None], np.stack([ridges[window].astype(np.float32), mask[window].astype(np.float32)])


class SimulatorPairs:
    """Batches from the procedural simulator (`settings` is a training.TrainSettings)."""

    def __init__(self, settings):
        self.s = settings
        self._pool_index = -1
        self._pool: list = []

    def _masters(self, step: int) -> list:
        from generators.fingerprint import make_master

        index = step // self.s.pool_refresh
        if index != self._pool_index:
            self._pool = [make_master(self.s.fingerprint, 1 + k % 10, data_rng(self.s.data_seed, 0, index, k))
                          for k in range(self.s.pool_size)]
            self._pool_index = index
        return self._pool

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        from .simulator import make_latent

        masters = self._masters(step)
        rng = data_rng(self.s.data_seed, 1, step)
        targets, conds = [], []
        per = self.s.patches_per_latent
        for _ in range(-(-self.s.batch // per)):
            a, b = rng.choice(len(masters), size=2, replace=False)
            lat = make_latent(masters[a], self.s.latent, rng, overlap=masters[b])
            first = lat.residue if self.s.condition == "residue" else lat.ridges
            for _ in range(per):
                t, c = _sample(lat.image, first, lat.mask, _patch_window(rng, lat.mask, self.s.patch))
                targets.append(t)
                conds.append(c)
        return np.stack(targets[: self.s.batch]), np.stack(conds[: self.s.batch])


def real_latent_files(directory: Path) -> list[Path]:
    """The latent images of a folder (recursively), sorted by path; one sentence if none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"real latent folder {directory} does not exist")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{directory} holds no latent images ({', '.join(IMAGE_SUFFIXES)})")
    return files


@functools.lru_cache(maxsize=64)
def _enhanced(path: str, patch: int):
    """(image, ridges, mask) of one real latent; images smaller than a patch are padded."""
    import cv2

    from .enhance import enhance_latent

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read the latent image {path}")
    h, w = image.shape
    if h < patch or w < patch:
        image = cv2.copyMakeBorder(image, 0, max(0, patch - h), 0, max(0, patch - w), cv2.BORDER_REFLECT)
    enhanced = enhance_latent(image)
    return image, enhanced.ridges, enhanced.mask


class RealLatents:
    """Batches of patches of real latents conditioned on their own enhancement."""

    def __init__(self, settings):
        self.s = settings
        files = real_latent_files(Path(settings.real_dir))
        held = [f for i, f in enumerate(files) if i % 10 == 9] if len(files) >= 10 else files
        self.train_files = [f for f in files if f not in held] or files
        self.held_out_files = held

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        files = self.held_out_files if step >= HELD_OUT_STEP else self.train_files
        rng = data_rng(self.s.data_seed, 2, step)
        targets, conds = [], []
        for _ in range(self.s.batch):
            image, ridges, mask = _enhanced(str(files[int(rng.integers(len(files)))]), self.s.patch)
            t, c = _sample(image, ridges, mask, _patch_window(rng, mask, self.s.patch))
            targets.append(t)
            conds.append(c)
        return np.stack(targets), np.stack(conds)


def make_source(settings):
    return RealLatents(settings) if settings.real_dir else SimulatorPairs(settings)


_WORKER_SOURCE = None


def _init_worker(settings) -> None:
    global _WORKER_SOURCE
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _WORKER_SOURCE = make_source(settings)


def _worker_batch(step: int):
    return _WORKER_SOURCE.batch(step)


@dataclass
class Batches:
    """Iterator over the batches of steps [start, stop): made here (workers = 0) or by worker
    processes at most 2 x workers steps ahead (bounded, so memory does not grow)."""

    settings: object
    start: int
    stop: int
    workers: int = 0

    def __iter__(self):
        if self.workers <= 0:
            source = make_source(self.settings)
            for step in range(self.start, self.stop):
                yield source.batch(step)
            return
        # spawn: the parent holds torch's thread pools, which do not survive fork safely
        with get_context("spawn").Pool(self.workers, initializer=_init_worker, initargs=(self.settings,)) as pool:
            pending: collections.deque = collections.deque()
            step = self.start
            while step < self.stop or pending:
                while step < self.stop and len(pending) < 2 * self.workers:
                    pending.append(pool.apply_async(_worker_batch, (step,)))
                    step += 1
                yield pending.popleft().get()
