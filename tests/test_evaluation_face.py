"""Face embedder on real photos (the images bundled in the insightface wheel) and its errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from photo_faces import insightface_images
from evaluation.errors import EvaluationInputError, ModelFileNotFoundError
from evaluation.face_embedding import (ARCFACE_TEMPLATE_112, SFACE_COSINE_THRESHOLD,
                                       make_face_embedder, norm_crop, similarity_transform)


IMAGES = insightface_images()
needs_photos = pytest.mark.skipif(
    IMAGES is None, reason="real test photos come from the insightface wheel: "
                           "pip install --no-deps insightface (test extra)")


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# A hand-encoded ONNX protobuf (the onnx package is not a dependency): a model whose
# "embedding" is the per-channel mean of its input, so the ArcFace preprocessing
# (RGB order, (x - 127.5) / 127.5, NCHW) can be checked exactly.
def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F; n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)

def _field(num, value):
    """protobuf field: int → varint (wire 0), bytes/str → length-delimited (wire 2)."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data

def _tensor_info(name, dims):
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    tensor = _field(1, 1) + _field(2, shape)               # elem_type FLOAT, shape
    return _field(1, name) + _field(2, _field(1, tensor))  # ValueInfoProto{name, TypeProto}

def channel_mean_model() -> bytes:
    """ONNX model: data [n, 3, 112, 112] → ReduceMean(axes=[2, 3], keepdims=0) → out [n, 3]."""
    attr_axes = _field(1, "axes") + _field(8, 2) + _field(8, 3) + _field(20, 7)
    attr_keep = _field(1, "keepdims") + _field(3, 0) + _field(20, 2)
    node = (_field(1, "data") + _field(2, "out") + _field(3, "mean") + _field(4, "ReduceMean")
            + _field(5, attr_axes) + _field(5, attr_keep))
    graph = (_field(1, node) + _field(2, "g") + _field(11, _tensor_info("data", ["n", 3, 112, 112]))
             + _field(12, _tensor_info("out", ["n", 3])))
    return _field(1, 7) + _field(7, graph) + _field(8, _field(2, 13))



def six_people() -> list[np.ndarray]:
    """The six faces of t1.jpg, each cropped with a margin of 0.6 × its box side."""
    img = _rgb(IMAGES / "t1.jpg")
    det = cv2.FaceDetectorYN.create(
        str(make_face_embedder("sface").detector_path), "", (img.shape[1], img.shape[0]),
        0.6, 0.3, 5000)
    _, faces = det.detect(np.ascontiguousarray(img[:, :, ::-1]))
    crops = []
    for x, y, w, h in faces[:, :4].astype(int):
        m = int(0.6 * max(w, h))
        crops.append(np.ascontiguousarray(img[max(0, y - m):y + h + m, max(0, x - m):x + w + m]))
    return crops


def augment(crop: np.ndarray) -> list[np.ndarray]:
    """Flip, brighter, darker, blurred copies of one face crop."""
    return [np.ascontiguousarray(crop[:, ::-1]),
            np.clip(crop.astype(np.int16) + 40, 0, 255).astype(np.uint8),
            np.clip(crop.astype(np.int16) - 40, 0, 255).astype(np.uint8),
            cv2.GaussianBlur(crop, (5, 5), 1.5)]


def test_umeyama_recovers_a_known_similarity():
    angle, scale, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE_112.astype(np.float64)
    m = similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


@needs_photos
def test_alignment_matches_opencv_aligncrop():
    img = _rgb(IMAGES / "t1.jpg")
    emb = make_face_embedder("sface")
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    det = cv2.FaceDetectorYN.create(str(emb.detector_path), "", (img.shape[1], img.shape[0]),
                                    0.6, 0.3, 5000)
    _, faces = det.detect(bgr)
    ours = norm_crop(bgr, faces[0, 4:14].reshape(5, 2))
    theirs = emb.recognizer.alignCrop(bgr, faces[0])
    assert np.abs(ours.astype(int) - theirs).max() <= 1


@needs_photos
def test_sface_separates_real_people_from_augmented_copies():
    from evaluation.metrics import eer

    emb = make_face_embedder("sface")
    crops = six_people()
    assert len(crops) == 6
    ref = emb.embed(crops)
    assert ref.found.all()
    assert ref.embeddings.shape == (6, 128) and ref.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ref.embeddings, axis=1), 1.0, atol=1e-5)
    assert ref.aligned.shape == (6, 112, 112, 3) and ref.landmarks.shape == (6, 5, 2)
    # landmarks are in input pixel coords: eyes above the mouth, inside the crop
    assert (ref.landmarks[:, :2, 1] < ref.landmarks[:, 3:, 1]).all()
    aug = emb.embed([a for c in crops for a in augment(c)])
    assert aug.found.all()
    genuine = np.einsum("ikd,id->ik", aug.embeddings.reshape(6, 4, -1), ref.embeddings).ravel()
    sims = ref.embeddings @ ref.embeddings.T
    impostor = sims[np.triu_indices(6, 1)]
    assert genuine.min() > SFACE_COSINE_THRESHOLD, genuine
    assert impostor.max() < SFACE_COSINE_THRESHOLD, impostor
    assert eer(genuine, impostor) == 0.0
    # Tom Hanks (an already aligned 112×112 crop) is none of the six
    tom = emb.embed([_rgb(IMAGES / "Tom_Hanks_54745.png")])
    assert tom.found[0]
    assert (ref.embeddings @ tom.embeddings[0]).max() < SFACE_COSINE_THRESHOLD


def test_no_face_gives_zero_row_and_found_false():
    emb = make_face_embedder("sface")
    r = emb.embed([np.full((200, 160, 3), 128, np.uint8)])
    assert not r.found[0]
    assert not r.embeddings.any() and not r.aligned.any()


def test_bad_inputs_raise_one_clear_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="ArcFace ONNX file not found"):
        make_face_embedder("arcface", onnx_path=tmp_path / "w600k_r50.onnx")
    with pytest.raises(ModelFileNotFoundError, match="needs onnx_path"):
        make_face_embedder("arcface")
    with pytest.raises(EvaluationInputError, match="Unknown face embedder"):
        make_face_embedder("facenet")
    with pytest.raises(ValueError, match="uint8"):
        make_face_embedder("sface").embed([np.zeros((50, 50, 3), np.float32)])


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    """Six real people (t1.jpg), each as the crop plus flipped, brighter and blurred copies."""
    if IMAGES is None:
        pytest.skip("real test photos come from the insightface wheel: "
                    "pip install --no-deps insightface (test extra)")
    from test_evaluation_dataset import write_dataset

    root = tmp_path_factory.mktemp("facedata") / "ds"
    images = []
    for subject, crop in enumerate(six_people()):
        variants = [crop] + augment(crop)[:2] + augment(crop)[3:]
        images += [(subject, None, k, v) for k, v in enumerate(variants)]
    write_dataset(root, "face", "face", images)
    return root


def test_evaluate_dataset_on_real_faces(face_root, tmp_path):
    import pandas as pd

    from evaluation import EvaluationSettings, evaluate_dataset

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    crops = six_people()
    for k in (1, 4):   # two of the six people are also "real gallery" people
        cv2.imwrite(str(gallery / f"person{k}.png"), crops[k][:, :, ::-1])
    cv2.imwrite(str(gallery / "tom.png"), cv2.imread(str(IMAGES / "Tom_Hanks_54745.png")))
    s = evaluate_dataset(face_root, EvaluationSettings(progress=False, workers=1,
                                                             real_gallery=str(gallery)))
    face = s["face"]
    assert face["n_images"] == face["n_found"] == 24 and face["n_identities"] == 6
    v = face["verification"]
    assert v["n_genuine"] == 6 * 6 and v["n_impostor"] == 15
    assert v["eer"] == 0.0 and v["fnmr_at_fmr_1pct"] == 0.0
    assert v["fmr_at_sface_0.363"] == 0.0 and v["fnmr_at_sface_0.363"] == 0.0
    assert face["uniqueness"] == 1.0 and face["intra_class_consistency"] == 1.0
    assert face["look_alike_rate"] == pytest.approx(2 / 6)
    pairs = pd.read_parquet(face_root / "eval" / "face_pairs.parquet")
    assert pairs.loc[pairs["mated"], "score"].min() > SFACE_COSINE_THRESHOLD
    assert pairs.loc[~pairs["mated"], "score"].max() < SFACE_COSINE_THRESHOLD
    ids = pd.read_parquet(face_root / "eval" / "face_identities.parquet")
    assert len(ids) == 6 and (ids["nearest_other_cosine"] < SFACE_COSINE_THRESHOLD).all()
    samples = pd.read_parquet(face_root / "eval" / "face_samples.parquet")
    assert samples["sample_id"].is_unique and len(samples["embedding"].iloc[0]) == 128
    page = (face_root / "report" / "index.html").read_text()
    assert "Face distinctness (sface)" in page and "DET curve" in page


def test_missing_arcface_onnx_through_evaluate_dataset(face_root, tmp_path):
    from evaluation import EvaluationSettings, evaluate_dataset

    with pytest.raises(FileNotFoundError, match="ArcFace ONNX file not found at"):
        evaluate_dataset(face_root, EvaluationSettings(
            progress=False, face_embedder="arcface", face_onnx_path=str(tmp_path / "r50.onnx")))


@needs_photos
def test_any_folder_of_faces(tmp_path):
    from evaluation.face_distinctness import evaluate_face_folder
    from evaluation import EvaluationSettings

    for k, crop in enumerate(six_people()[:3]):
        (tmp_path / f"person{k}").mkdir()
        for j, img in enumerate([crop, augment(crop)[0]]):
            cv2.imwrite(str(tmp_path / f"person{k}" / f"{j}.png"), img[:, :, ::-1])
    s = evaluate_face_folder(tmp_path, EvaluationSettings(progress=False, workers=1),
                             out_dir=tmp_path / "out")
    assert s["n_identities"] == 3 and s["verification"]["eer"] == 0.0
    assert (tmp_path / "out" / "face_pairs.parquet").is_file()


def test_arcface_backend_preprocesses_like_insightface(tmp_path):
    path = tmp_path / "channel_mean.onnx"
    path.write_bytes(channel_mean_model())
    emb = make_face_embedder("arcface", onnx_path=path)
    crops = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    crops[1, :, :, 0] = 255                                        # a red-heavy crop
    expected = ((crops.astype(np.float64) - 127.5) / 127.5).mean(axis=(1, 2))   # RGB order
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(emb.embed_aligned(crops), expected, atol=1e-5)
    if IMAGES is not None:
        r = emb.embed([six_people()[0]])
        assert r.found[0] and r.embeddings.shape == (1, 3)
        m = ((r.aligned[0].astype(np.float64) - 127.5) / 127.5).mean(axis=(0, 1))
        np.testing.assert_allclose(r.embeddings[0], m / np.linalg.norm(m), atol=1e-5)
