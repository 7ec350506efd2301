"""ANSI/NIST-ITL 1-2011 transactions in the traditional (tagged-field) encoding: records in,
bytes out. Nothing here reads files; `pipeline.export` gathers a subject's images and truth.

Traditional encoding (ANSI/NIST-ITL 1-2011 Annex B): a record is `<type>.<tag:03d>:<value>`
fields joined by GS (0x1D) and ended by FS (0x1C); a field holds subfields joined by RS
(0x1E), a subfield holds information items joined by US (0x1F). Every record starts with
`xx.001` (LEN: the record's byte count, FS included), then `xx.002` (IDC, except Type-1), the
other fields in ascending numeric order and, last, the binary image field `xx.999` (DATA).

Records written (field references are to ANSI/NIST-ITL 1-2011):
- Type-1 transaction information (8.1): 1.002 VER 0500, 1.003 CNT (one subfield per record:
  type, IDC; the first `1 US <number of other records>`), 1.004 TOT, 1.005 DAT, 1.007 DAI,
  1.008 ORI, 1.009 TCN, 1.011 NSR (00.00: Field 1.011 applies to Type-4 records only, there
  are none), 1.012 NTR (the images' nominal resolution in pixels/mm: 19.69 at 500 ppi),
  1.013 DOM (DNM, DVN: the domain that defines the Type-2 fields), 1.014 GMT (YYYYMMDDhhmmssZ).
- Type-2 user-defined descriptive text (8.2): IDC plus the caller's fields (user-defined).
- Type-14 variable-resolution fingerprint image (8.14): IMP, SRC, FCD, HLL, VLL, SLC 1
  (pixels per inch) with THPS = TVPS = ppi, CGA (Table 15 code: PNG, WSQ20), BPX 8, FGP,
  14.020 COM, 14.021 SEG (one subfield per finger: FRSP, LHC, RHC, TVC, BVC in pixels from
  the top-left corner) and 14.999 DATA, the compressed image bytes as they are.
- Type-9 minutiae (8.9) in the Extended Feature Set block (8.9.7, Table 30). 9.004 FMT is
  "U": Table 27 allows "S" only with the legacy fields 9.005-9.012, which "shall not appear
  for all new applications". EFS fields used:
    9.300 ROI  EWI, EHI[, EHO, EVO]: region of interest, 10 µm units; offsets from the
               image's top-left corner (absent = 0)
    9.302 FPP  FGP: the finger position (1-10) the region shows
    9.331 MIN  one subfield per minutia: MXC, MYC (10 µm units from the ROI's top-left
               corner, y down), MTD (integer degrees 0-359, counter-clockwise from the
               +x axis as seen on the image; the ISO/IEC 19794-2 convention: a ridge ending
               points up its ridge), MTY (E ridge ending, B bifurcation, X either),
               MRU (radius of position uncertainty, 0: exact), MDU (direction uncertainty, 0)
    9.334 NMIN "Y" instead of 9.331 when the region holds no minutiae
    9.350 MFD  FIE "ALL", FME "AUTO", FAV, FAL: which algorithm produced the features
    9.351 COM  free text
  IDC is the IDC of the Type-14 image the minutiae were taken from (Section 7.3.1).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

FS, GS, RS, US = b"\x1c", b"\x1d", b"\x1e", b"\x1f"
VERSION = "0500"                      # 1.002: ANSI/NIST-ITL 1-2011
MAX_IDC = 99                          # xx.002: 0 <= IDC <= 99
UNITS_PER_INCH = 2540                 # EFS positions are in 10 µm (0.01 mm) units
COMPRESSION_CODES = ("NONE", "WSQ20", "JPEGB", "JPEGL", "JP2", "JP2L", "PNG")  # Table 15
EFS_TYPE = {0: "E", 1: "B"}           # Table 48 (MTY); anything else is "X"

Item = Union[str, int]
FieldValue = Union[Item, Sequence[Union[Item, Sequence[Item]]]]


@dataclass(frozen=True)
class Record:
    """One tagged-field record: `fields` maps tag → value (LEN and IDC are added on
    encoding). A value is an item, or a list of subfields, each an item or a tuple of items."""
    type: int
    idc: int | None                    # None only for Type-1
    fields: dict[int, FieldValue]
    data: bytes | None = None          # binary field xx.999, written last


@dataclass(frozen=True)
class TransactionHeader:
    tcn: str                           # 1.009, unique per transaction (alphanumeric)
    time: _dt.datetime                 # 1.005 (date) and 1.014 (UTC time)
    tot: str = "CAR"                   # 1.004, as the application profile defines
    agency: str = "BIOMINT"            # 1.007 DAI and 1.008 ORI
    domain: str = "BIOMINT"            # 1.013 DNM
    domain_version: str = ""           # 1.013 DVN
    nominal_ppi: int = 500             # 1.012 NTR


@dataclass(frozen=True)
class Segment:
    """One finger of a multi-finger image, 14.021: pixels, origin top-left."""
    position: int
    left: int
    right: int
    top: int
    bottom: int


@dataclass(frozen=True)
class FingerImage:
    """A Type-14 record's content; `data` is the compressed image exactly as transmitted."""
    idc: int
    position: int                      # FGP: 1-10 one finger, 13/14/15 slaps
    impression_code: int               # IMP (Table 7)
    width: int
    height: int
    ppi: int
    compression: str                   # CGA code (Table 15)
    data: bytes
    capture_date: _dt.date
    source_agency: str = "BIOMINT"
    segments: tuple[Segment, ...] = ()
    comment: str | None = None


@dataclass(frozen=True)
class FingerMinutiae:
    """A Type-9 EFS record's content: the minutiae of one finger in one image."""
    idc: int                           # IDC of the Type-14 image
    position: int                      # FPP FGP, 1-10
    impression_code: int
    ppi: int
    roi: tuple[int, int, int, int]     # x0, y0, x1, y1 in image pixels (x1, y1 exclusive)
    minutiae: np.ndarray               # [N, 4] x, y (px, top-left, y down), angle (rad, ISO), type
    algorithm_vendor: str = "BIOMINT"
    algorithm: str = "ground truth"
    comment: str | None = None


def _text(value: Item) -> bytes:
    data = str(value).encode("ascii")
    if any(b < 0x20 for b in data):
        raise ValueError(f"ANSI/NIST text {value!r} holds a control character (separators are reserved)")
    return data


def encode_field(record_type: int, tag: int, value: FieldValue) -> bytes:
    """`<type>.<tag:03d>:<value>`: subfields joined by RS, items by US."""
    if isinstance(value, (str, int)):
        body = _text(value)
    else:
        body = RS.join(US.join(_text(i) for i in sub) if isinstance(sub, (tuple, list)) else _text(sub)
                       for sub in value)
    return f"{record_type}.{tag:03d}:".encode() + body


def encode_record(record: Record) -> bytes:
    """The record's bytes with a correct LEN (it counts its own digits, hence the loop)."""
    if record.type != 1 and not (record.idc is not None and 0 <= record.idc <= MAX_IDC):
        raise ValueError(f"Type-{record.type} record IDC {record.idc} is not in 0..{MAX_IDC}")
    fields = dict(record.fields)
    if record.type != 1:
        fields[2] = record.idc
    parts = [encode_field(record.type, tag, fields[tag]) for tag in sorted(fields) if tag not in (1, 999)]
    if record.data is not None:
        parts.append(f"{record.type}.999:".encode() + record.data)
    rest = GS + GS.join(parts) + FS
    length = len(rest) + 8
    while True:
        head = encode_field(record.type, 1, length)
        if len(head) + len(rest) == length:
            return head + rest
        length = len(head) + len(rest)


def encode_transaction(header: TransactionHeader, records: Sequence[Record]) -> bytes:
    """Type-1 (with CNT listing `records` in order) followed by the records."""
    t = header.time.astimezone(_dt.timezone.utc) if header.time.tzinfo else header.time
    cnt = [(1, len(records))] + [(r.type, r.idc) for r in records]
    type1 = Record(1, None, {
        2: VERSION,
        3: cnt,
        4: header.tot,
        5: t.strftime("%Y%m%d"),
        7: header.agency,
        8: header.agency,
        9: header.tcn,
        11: "00.00",
        12: f"{header.nominal_ppi / 25.4:05.2f}",
        13: [(header.domain, header.domain_version) if header.domain_version else header.domain],
        14: t.strftime("%Y%m%d%H%M%SZ"),
    })
    return b"".join([encode_record(type1), *(encode_record(r) for r in records)])


def user_text_record(fields: dict[int, FieldValue], idc: int = 0) -> Record:
    """Type-2: user-defined fields (tags >= 3) as the domain named in 1.013 defines them."""
    if any(tag < 3 or tag > 999 for tag in fields):
        raise ValueError("Type-2 user-defined fields are 2.003-2.999")
    return Record(2, idc, dict(fields))


def image_record(image: FingerImage) -> Record:
    """Type-14 variable-resolution fingerprint image."""
    if image.compression not in COMPRESSION_CODES:
        raise ValueError(f"compression {image.compression!r} is not an ANSI/NIST-ITL code {COMPRESSION_CODES}")
    fields: dict[int, FieldValue] = {
        3: image.impression_code,
        4: image.source_agency,
        5: image.capture_date.strftime("%Y%m%d"),
        6: image.width,
        7: image.height,
        8: 1,                          # SLC 1: THPS/TVPS in pixels per inch
        9: image.ppi,
        10: image.ppi,
        11: image.compression,
        12: 8,
        13: image.position,
    }
    if image.comment:
        fields[20] = image.comment[:126]
    if image.segments:
        for s in image.segments:
            if not (0 <= s.left < s.right <= image.width and 0 <= s.top < s.bottom <= image.height):
                raise ValueError(f"segment of finger {s.position} {s} lies outside the "
                                 f"{image.width}x{image.height} image")
        fields[21] = [(s.position, s.left, s.right, s.top, s.bottom) for s in image.segments]
    return Record(14, image.idc, fields, data=image.data)


def _units(pixels: float, ppi: int) -> int:
    return int(round(pixels * UNITS_PER_INCH / ppi))


def efs_minutiae_items(minutiae: np.ndarray, roi: tuple[int, int, int, int], ppi: int) -> list[tuple]:
    """9.331 subfields: (MXC, MYC, MTD, MTY, MRU, MDU) per minutia, relative to the ROI
    (positions are clipped to it: EFS features lie inside their region of interest)."""
    m = np.asarray(minutiae, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = roi
    ox, oy, w, h = _units(x0, ppi), _units(y0, ppi), _units(x1 - x0, ppi), _units(y1 - y0, ppi)
    items = []
    for x, y, angle, kind in m:
        mx = min(max(_units(x, ppi) - ox, 0), w)
        my = min(max(_units(y, ppi) - oy, 0), h)
        theta = int(round(math.degrees(angle))) % 360
        items.append((mx, my, theta, EFS_TYPE.get(int(kind), "X"), 0, 0))
    return items


def minutiae_record(finger: FingerMinutiae) -> Record:
    """Type-9 with the EFS block: ROI, FPP, MIN (or NMIN), MFD and COM."""
    x0, y0, x1, y1 = finger.roi
    if not (x1 > x0 >= 0 and y1 > y0 >= 0):
        raise ValueError(f"region of interest {finger.roi} is empty or negative")
    roi: tuple = (_units(x1 - x0, finger.ppi), _units(y1 - y0, finger.ppi))
    if (x0, y0) != (0, 0):              # EHO, EVO default to 0 when absent
        roi += (_units(x0, finger.ppi), _units(y0, finger.ppi))
    fields: dict[int, FieldValue] = {
        3: finger.impression_code,
        4: "U",
        300: [roi],
        302: [(finger.position,)],
        350: [("ALL", "AUTO", finger.algorithm_vendor[:40], finger.algorithm[:40])],
    }
    items = efs_minutiae_items(finger.minutiae, finger.roi, finger.ppi)
    if items:
        fields[331] = items
    else:
        fields[334] = "Y"
    if finger.comment:
        fields[351] = finger.comment[:126]
    return Record(9, finger.idc, fields)
