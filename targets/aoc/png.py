"""Deterministic greyscale PNG writer and reader for SLM images (zlib and struct only).

Requires: 2-D uint8 (written as 8-bit greyscale) or uint16 (16-bit greyscale, big-endian samples) arrays.
Guarantees: the same array always gives the same bytes (fixed compression level, filter type 0 on every row,
no timestamp or other ancillary chunks); :func:`read_png` reads back exactly what :func:`write_png` wrote
(and any non-interlaced 8/16-bit greyscale PNG using filter types 0-4), refusing other files with AdmcError.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from admc.errors import AdmcError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMPRESSION_LEVEL = 9
GREYSCALE = 0


def _chunk(kind: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)


def encode_png(grey_levels: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 or uint16 array."""
    image = np.asarray(grey_levels)
    if image.ndim != 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise AdmcError(f"PNG: expected a non-empty 2-D array of grey levels, got shape {image.shape}")
    if image.dtype == np.uint8:
        bit_depth, samples = 8, image
    elif image.dtype == np.uint16:
        bit_depth, samples = 16, image.astype(">u2")  # PNG stores 16-bit samples big-endian
    else:
        raise AdmcError(f"PNG: expected uint8 or uint16 grey levels, got {image.dtype}")
    height, width = image.shape
    header = struct.pack(">IIBBBBB", width, height, bit_depth, GREYSCALE, 0, 0, 0)
    rows = np.ascontiguousarray(samples).view(np.uint8).reshape(height, -1)
    # Filter type 0 (none) on every row: a fixed choice keeps the bytes a pure function of the array.
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows]).tobytes()
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, COMPRESSION_LEVEL))
        + _chunk(b"IEND", b"")
    )


def write_png(path: str | Path, grey_levels: np.ndarray) -> None:
    """Write a 2-D uint8 / uint16 array as an 8-bit / 16-bit greyscale PNG."""
    Path(path).write_bytes(encode_png(grey_levels))


def _paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    distance_left, distance_up, distance_corner = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
    if distance_left <= distance_up and distance_left <= distance_corner:
        return left
    return up if distance_up <= distance_corner else up_left


def _unfilter(filtered: bytes, height: int, stride: int, bytes_per_pixel: int, label: str) -> np.ndarray:
    if len(filtered) != height * (stride + 1):
        raise AdmcError(f"{label}: PNG image data has {len(filtered)} bytes, expected {height * (stride + 1)}")
    rows = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.int64)
    for index in range(height):
        start = index * (stride + 1)
        kind = filtered[start]
        line = np.frombuffer(filtered, dtype=np.uint8, count=stride, offset=start + 1).astype(np.int64)
        if kind == 0:
            current = line
        elif kind == 2:
            current = (line + previous) & 0xFF
        elif kind in (1, 3, 4):
            current = np.zeros(stride, dtype=np.int64)
            for position in range(stride):
                left = current[position - bytes_per_pixel] if position >= bytes_per_pixel else 0
                up = previous[position]
                up_left = previous[position - bytes_per_pixel] if position >= bytes_per_pixel else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + up) // 2
                else:
                    predictor = _paeth(left, up, up_left)
                current[position] = (line[position] + predictor) & 0xFF
        else:
            raise AdmcError(f"{label}: PNG row {index} uses unknown filter type {kind}")
        rows[index] = current
        previous = current
    return rows


def read_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit or 16-bit greyscale PNG into a uint8 or uint16 array."""
    label = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise AdmcError(f"{label}: cannot read PNG: {error.strerror}") from error
    if not data.startswith(SIGNATURE):
        raise AdmcError(f"{label}: not a PNG file (bad signature)")
    position, header, compressed = len(SIGNATURE), None, b""
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        payload = data[position + 8:position + 8 + length]
        (checksum,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length] or b"\0\0\0\0")
        if len(payload) != length or zlib.crc32(kind + payload) & 0xFFFFFFFF != checksum:
            raise AdmcError(f"{label}: PNG chunk {kind!r} is truncated or corrupt")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            compressed += payload
        elif kind == b"IEND":
            break
        position += 12 + length
    if header is None:
        raise AdmcError(f"{label}: PNG has no IHDR chunk")
    width, height, bit_depth, colour, _, _, interlace = header
    if colour != GREYSCALE or bit_depth not in (8, 16) or interlace != 0:
        raise AdmcError(
            f"{label}: only non-interlaced 8/16-bit greyscale PNGs are supported "
            f"(colour type {colour}, bit depth {bit_depth}, interlace {interlace})"
        )
    try:
        filtered = zlib.decompress(compressed)
    except zlib.error as error:
        raise AdmcError(f"{label}: PNG image data does not decompress: {error}") from error
    bytes_per_pixel = bit_depth // 8
    rows = _unfilter(filtered, height, width * bytes_per_pixel, bytes_per_pixel, label)
    if bit_depth == 8:
        return rows.reshape(height, width).copy()
    return rows.view(">u2").reshape(height, width).astype(np.uint16)
