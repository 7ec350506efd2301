"""Specification of the ground-truth writers: NIST .xyt and ISO/IEC 19794-2:2005."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from generators.fingerprint import write_iso19794_2, write_xyt

MINUTIAE = np.array([[10.2, 20.7, np.deg2rad(90.0), 0],
                     [399.0, 499.0, np.deg2rad(359.0), 1],
                     [150.0, 3.0, np.deg2rad(45.0), 0]], dtype=np.float32)


def read_iso19794_2(data: bytes) -> dict:
    """Small independent reader of a single-view ISO/IEC 19794-2:2005 record."""
    assert data[:4] == b"FMR\x00" and data[4:8] == b" 20\x00"
    length, equipment, w, h, rx, ry, views, _ = struct.unpack(">IHHHHHBB", data[8:24])
    pos, view, quality, n = struct.unpack(">BBBB", data[24:28])
    rows = []
    for i in range(n):
        a, b, angle, q = struct.unpack(">HHBB", data[28 + 6 * i:34 + 6 * i])
        rows.append(((a >> 14) & 3, a & 0x3FFF, b & 0x3FFF, angle * 360.0 / 256.0, q))
    ext = struct.unpack(">H", data[28 + 6 * n:30 + 6 * n])[0]
    return {"length": length, "width": w, "height": h, "res": (rx, ry), "views": views, "position": pos,
            "minutiae": rows, "ext": ext, "size": len(data)}


def test_iso_record_round_trips(tmp_path):
    path = tmp_path / "a.ist"
    write_iso19794_2(path, MINUTIAE, 400, 500, 500, finger_position=3)
    rec = read_iso19794_2(path.read_bytes())
    assert rec["length"] == rec["size"] == 24 + 4 + 6 * 3 + 2
    assert (rec["width"], rec["height"], rec["res"], rec["views"], rec["position"]) == (400, 500, (197, 197), 1, 3)
    types = [r[0] for r in rec["minutiae"]]
    assert types == [1, 2, 1]                     # 01 ridge ending, 10 bifurcation
    xy = np.array([(r[1], r[2]) for r in rec["minutiae"]])
    assert np.array_equal(xy, np.rint(MINUTIAE[:, :2]))
    angles = np.array([r[3] for r in rec["minutiae"]])
    err = np.abs((angles - np.degrees(MINUTIAE[:, 2]) + 180) % 360 - 180)
    assert np.all(err <= 360 / 256 / 2 + 1e-6)
    assert rec["ext"] == 0


def test_xyt_round_trips(tmp_path):
    path = tmp_path / "a.xyt"
    write_xyt(path, MINUTIAE)
    rows = np.loadtxt(path, dtype=int, ndmin=2)
    assert rows.shape == (3, 4)
    assert np.array_equal(rows[:, :2], np.rint(MINUTIAE[:, :2]).astype(int))
    assert list(rows[:, 2]) == [90, 359, 45]


def test_empty_minutiae_are_valid_records(tmp_path):
    write_xyt(tmp_path / "e.xyt", np.zeros((0, 4)))
    assert (tmp_path / "e.xyt").read_text() == ""
    write_iso19794_2(tmp_path / "e.ist", np.zeros((0, 4)), 400, 500)
    assert read_iso19794_2((tmp_path / "e.ist").read_bytes())["minutiae"] == []


def test_writers_reject_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        write_xyt(tmp_path / "b.xyt", np.zeros((3, 2)))
    with pytest.raises(ValueError):
        write_iso19794_2(tmp_path / "b.ist", np.zeros((300, 4)), 400, 500)
