"""Minutiae files: NIST .xyt text and ISO/IEC 19794-2:2005 binary finger minutiae records."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# ISO/IEC 19794-2:2005 minutia type codes (2 bits): 01 ridge ending, 10 bifurcation
_ISO_TYPE = {0: 0b01, 1: 0b10}


def _checked(minutiae: np.ndarray) -> np.ndarray:
    m = np.asarray(minutiae, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 4:
        raise ValueError(f"minutiae must be an [N, 4] array (x, y, angle, type), got shape {m.shape}")
    return m


def write_xyt(path, minutiae: np.ndarray, quality: int = 100) -> None:
    Path(path).write_bytes(xyt_bytes(minutiae, quality))


def write_iso19794_2(path, minutiae: np.ndarray, width: int, height: int, dpi: int = 500,
                     finger_position: int = 0, quality: int = 100) -> None:
    Path(path).write_bytes(iso19794_2_bytes(minutiae, width, height, dpi, finger_position, quality))


def xyt_bytes(minutiae: np.ndarray, quality: int = 100) -> bytes:
    """NIST .xyt: one 'x y theta quality' line per minutia, integer pixels (origin top-left,
    y down, as in the image) and theta in whole degrees counter-clockwise from +x (ISO/NBIS)."""
    m = _checked(minutiae)
    # np.rint rounds half to even, as Python's round does
    x, y = np.rint(m[:, 0]).astype(np.int64), np.rint(m[:, 1]).astype(np.int64)
    theta = np.rint(np.degrees(m[:, 2])).astype(np.int64) % 360
    q = int(quality)
    return "".join(f"{a} {b} {t} {q}\n" for a, b, t in zip(x.tolist(), y.tolist(), theta.tolist())).encode()


def iso19794_2_bytes(minutiae: np.ndarray, width: int, height: int, dpi: int = 500,
                     finger_position: int = 0, quality: int = 100, impression_type: int = 0) -> bytes:
    """ISO/IEC 19794-2:2005 finger minutiae record with one finger view, no extended data."""
    return iso19794_2_views_bytes([(minutiae, finger_position)], width, height, dpi, quality, impression_type)


def iso19794_2_views_bytes(views: list[tuple[np.ndarray, int]], width: int, height: int, dpi: int = 500,
                           quality: int = 100, impression_type: int = 0) -> bytes:
    """ISO/IEC 19794-2:2005 finger minutiae record with one finger view per (minutiae, finger
    position) in `views` (a slap holds one view per finger), no extended data.

    Header (24 bytes): 'FMR\\0', version ' 20\\0', record length (4 bytes), capture
    equipment (2 bytes: certification flags 4 bits + device type 12 bits), image size x, y
    (2+2), resolution x, y in pixels per centimetre (2+2), number of finger views (1),
    reserved (1). Finger view (4 bytes): position, view number (4 bits) + impression type
    (4 bits), finger quality, number of minutiae; then 6 bytes per minutia: type (2 bits) +
    x (14 bits), reserved (2 bits) + y (14 bits), angle in units of 360/256 degrees,
    quality; then 2 bytes of extended-data length (0). Big-endian throughout. The impression
    type codes are ANSI/NIST-ITL's: 0 live-scan plain, 1 live-scan rolled, 2 and 3 the same
    from ink (non-live-scan).
    """
    if not 0 <= int(impression_type) <= 15:
        raise ValueError(f"impression_type is a 4-bit code, got {impression_type}")
    if not 1 <= len(views) <= 255:
        raise ValueError(f"an ISO/IEC 19794-2 record holds 1-255 finger views, got {len(views)}")
    ppcm = int(round(dpi / 2.54))
    body = bytearray()
    for minutiae, finger_position in views:
        m = _checked(minutiae)
        if len(m) > 255:
            raise ValueError(f"an ISO/IEC 19794-2 finger view holds at most 255 minutiae, got {len(m)}")
        if len(m):
            xs = np.clip(np.rint(m[:, 0]), 0, 0x3FFF).astype(np.uint32)
            ys = np.clip(np.rint(m[:, 1]), 0, 0x3FFF).astype(np.uint32)
            kinds = np.array([_ISO_TYPE[0], _ISO_TYPE[1]], np.uint32)[m[:, 3].astype(int)]
            angle = np.rint(np.mod(np.degrees(m[:, 2]), 360.0) * 256.0 / 360.0).astype(np.uint32) % 256
            record = np.zeros(len(m), dtype=[("xt", ">u2"), ("y", ">u2"), ("a", "u1"), ("q", "u1")])
            record["xt"] = (kinds << 14) | xs
            record["y"] = ys
            record["a"] = angle
            record["q"] = int(quality)
            minutiae_bytes = record.tobytes()
        else:
            minutiae_bytes = b""
        body += struct.pack(">BBBB", int(finger_position), int(impression_type) & 0x0F, int(quality), len(m)) + minutiae_bytes
        body += struct.pack(">H", 0)
    length = 24 + len(body)
    header = b"FMR\x00" + b" 20\x00" + struct.pack(">IHHHHHBB", length, 0, int(width), int(height), ppcm, ppcm,
                                                    len(views), 0)
    return header + bytes(body)
