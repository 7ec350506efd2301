"""The dataset's PNG encoder (pipeline.stages.base.image_png_bytes): lossless and valid for
independent decoders, deterministic, and strict about what it is given."""
from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.stages.base import image_png_bytes


def _pillow(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(image)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, payload) of every chunk, each CRC checked with zlib (not the encoder's own CRC)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        tag, payload = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        crc = int.from_bytes(data[at + 8 + length:at + 12 + length], "big")
        assert crc == zlib.crc32(payload, zlib.crc32(tag)), f"bad CRC in {tag!r}"
        chunks.append((tag, payload))
        at += 12 + length
    return chunks


@pytest.mark.parametrize("shape", [(500, 400), (1, 1), (3, 2), (61, 47, 3), (1, 9, 3)])
def test_png_is_lossless_for_pillow_and_opencv(shape):
    image = np.random.default_rng(len(shape) * 100 + shape[0]).integers(0, 256, shape, dtype=np.uint8)
    data = image_png_bytes(image)
    assert np.array_equal(_pillow(data), image)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded[..., ::-1] if image.ndim == 3 else decoded, image)   # OpenCV reads BGR


def test_png_holds_one_header_one_image_stream_and_an_end_with_valid_crcs():
    image = np.tile(np.arange(256, dtype=np.uint8), (20, 2))
    tags = [tag for tag, _ in _chunks(image_png_bytes(image))]
    assert tags == [b"IHDR", b"IDAT", b"IEND"]
    header = _chunks(image_png_bytes(image))[0][1]
    assert int.from_bytes(header[:4], "big") == 512 and int.from_bytes(header[4:8], "big") == 20
    assert header[8:10] == bytes([8, 0])     # 8-bit grey


def test_every_row_is_sub_filtered_so_a_smooth_ramp_compresses_to_almost_nothing():
    ramp = np.tile(np.arange(400, dtype=np.uint16) % 256, (500, 1)).astype(np.uint8)
    idat = dict(_chunks(image_png_bytes(ramp)))[b"IDAT"]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(500, 401)
    assert (rows[:, 0] == 1).all()                     # filter type 1 (SUB) on every row
    assert (rows[:, 2:] == 1).all()                    # a ramp of step 1 filters to ones
    assert len(idat) < 2000


def test_a_view_of_a_larger_image_encodes_as_its_copy_and_bytes_repeat():
    base = np.random.default_rng(3).integers(0, 256, (120, 90), dtype=np.uint8)
    view = base[10:110:2, ::-1]
    assert image_png_bytes(view) == image_png_bytes(np.ascontiguousarray(view))
    assert np.array_equal(_pillow(image_png_bytes(view)), view)


def test_a_noisy_print_sized_image_stays_close_to_its_entropy():
    # ridge-like rows: a sinusoid plus noise, the kind of image the stages write
    rng = np.random.default_rng(5)
    x = np.arange(400)[None, :] + 3 * np.arange(500)[:, None]
    image = np.clip(128 + 100 * np.sin(2 * np.pi * x / 10) + rng.normal(0, 12, (500, 400)), 0, 255).astype(np.uint8)
    data = image_png_bytes(image)
    opencv = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    assert len(data) < 1.15 * len(opencv)


@pytest.mark.parametrize("bad, error", [
    (np.zeros((4, 4), np.float32), TypeError),
    (np.zeros((4, 4, 4), np.uint8), ValueError),
    (np.zeros((4,), np.uint8), ValueError),
    (np.zeros((0, 4), np.uint8), ValueError),
])
def test_refuses_what_it_cannot_write_losslessly(bad, error):
    with pytest.raises(error):
        image_png_bytes(bad)
