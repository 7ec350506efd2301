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
    lines = [f"{int(round(x))} {int(round(y))} {int(round(np.degrees(a))) % 360} {int(quality)}"
             for x, y, a in m[:, :3]]
    return "".join(line + "\n" for line in lines).encode()


def iso19794_2_bytes(minutiae: np.ndarray, width: int, height: int, dpi: int = 500,
                     finger_position: int = 0, quality: int = 100) -> bytes:
    """ISO/IEC 19794-2:2005 finger minutiae record with one finger view, no extended data.

    Header (24 bytes): 'FMR\\0', version ' 20\\0', record length (4 bytes), capture
    equipment (2 bytes: certification flags 4 bits + device type 12 bits), image size x, y
    (2+2), resolution x, y in pixels per centimetre (2+2), number of finger views (1),
    reserved (1). Finger view (4 bytes): position, view number (4 bits) + impression type
    (4 bits), finger quality, number of minutiae; then 6 bytes per minutia: type (2 bits) +
    x (14 bits), reserved (2 bits) + y (14 bits), angle in units of 360/256 degrees,
    quality; then 2 bytes of extended-data length (0). Big-endian throughout.
    """
    m = _checked(minutiae)
    if len(m) > 255:
        raise ValueError(f"an ISO/IEC 19794-2 finger view holds at most 255 minutiae, got {len(m)}")
    ppcm = int(round(dpi / 2.54))
    body = bytearray(struct.pack(">BBBB", int(finger_position), 0, int(quality), len(m)))
    for x, y, a, kind in m[:, :4]:
        xi = int(np.clip(round(x), 0, 0x3FFF))
        yi = int(np.clip(round(y), 0, 0x3FFF))
        angle = int(round((np.degrees(a) % 360.0) * 256.0 / 360.0)) % 256
        body += struct.pack(">HHBB", (_ISO_TYPE[int(kind)] << 14) | xi, yi, angle, int(quality))
    body += struct.pack(">H", 0)
    length = 24 + len(body)
    header = b"FMR\x00" + b" 20\x00" + struct.pack(">IHHHHHBB", length, 0, int(width), int(height), ppcm, ppcm, 1, 0)
    return header + bytes(body)
