"""Greyscale PNG images of SLM grey levels: a fixed-form writer, and Pillow as the reader.

Requires: 2-D uint8 (written as 8-bit greyscale) or uint16 (16-bit greyscale) arrays.
Guarantees: the same array always gives the same bytes, and the same bytes as admc's writer before the switch
to Pillow (issue 13; `tests/data/pre_pillow_writer_*.png` were made by that writer): one IHDR, one IDAT of
zlib level 9 over rows that all use filter type 0, one IEND, no metadata or timestamp. :func:`decode_png`
returns exactly the array :func:`encode_png` was given, and refuses anything that is not a well-formed
non-interlaced 8/16-bit greyscale PNG of at most :data:`MAX_PIXELS` pixels (a decompression bomb, a truncated
or corrupt file) with an AdmcError naming it.

Why the writer is not Pillow's: Pillow's PNG encoder picks a row filter per row (adaptive filtering, with no
option to turn it off for greyscale) and deflates with its own memory level, so no Pillow setting gives the
bytes earlier builds wrote, and a bundle's image hashes would change with the Pillow version. The writer is
the three chunks below; decoding, the part with many cases (filters, bit depths, corrupt and hostile files),
is Pillow's.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from admc.core.atomic import write_file_atomically
from admc.core.errors import AdmcError

COMPRESSION_LEVEL = 9
# Stacks of at least this many images are encoded on a thread per core, in chunks of ENCODE_CHUNK: zlib releases
# the GIL while it compresses, and a 36M-weight program has 31,384 images (5 s of one core at level 9).
PARALLEL_FROM = 512
ENCODE_CHUNK = 256
MAX_PIXELS = 4096 * 4096  # the largest SLM a description allows (module.ports ≤ 4096)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREYSCALE = 0  # PNG colour type
_BIT_DEPTHS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png(grey_levels: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 or uint16 array."""
    image = np.asarray(grey_levels)
    if image.ndim != 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise AdmcError(f"PNG: expected a non-empty 2-D array of grey levels, got shape {image.shape}")
    if image.dtype not in _BIT_DEPTHS:
        raise AdmcError(f"PNG: expected uint8 or uint16 grey levels, got {image.dtype}")
    height, width = image.shape
    header = struct.pack(">IIBBBBB", width, height, _BIT_DEPTHS[image.dtype], _GREYSCALE, 0, 0, 0)
    samples = image.astype(">u2") if image.dtype == np.uint16 else image  # PNG stores 16-bit samples big-endian
    rows = np.ascontiguousarray(samples).view(np.uint8).reshape(height, -1)
    filtered = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows]).tobytes()  # filter type 0 on every row
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(filtered, COMPRESSION_LEVEL))
            + _chunk(b"IEND", b""))


def encode_pngs(stack: np.ndarray) -> list[bytes]:
    """``encode_png`` of every image of a [count, rows, columns] stack, in order (the same bytes as one by one);
    a large stack on as many threads as the machine has cores."""
    if len(stack) < PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return [encode_png(image) for image in stack]
    from concurrent.futures import ThreadPoolExecutor

    def chunk(start: int) -> list[bytes]:
        return [encode_png(image) for image in stack[start:start + ENCODE_CHUNK]]

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        return [image for part in pool.map(chunk, range(0, len(stack), ENCODE_CHUNK)) for image in part]


def write_png(path: str | Path, grey_levels: np.ndarray) -> None:
    """Write a 2-D uint8 / uint16 array as an 8-bit / 16-bit greyscale PNG (atomically: ``core.atomic``)."""
    write_file_atomically(path, encode_png(grey_levels))


def decode_png(content: bytes, label: str) -> np.ndarray:
    """The grey levels of PNG bytes (uint8 or uint16); ``label`` names the file in errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=["PNG"]) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise AdmcError(f"{label}: PNG of {width} × {height} pixels is larger than an SLM")
                if image.mode not in ("L", "I;16", "I;16B") or image.info.get("interlace"):
                    raise AdmcError(f"{label}: expected a non-interlaced 8/16-bit greyscale PNG, got mode "
                                    f"{image.mode}")
                image.load()
                levels = np.asarray(image)
    except AdmcError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise AdmcError(f"{label}: not a readable PNG ({error})") from None
    return levels.astype(np.uint8 if image.mode == "L" else np.uint16)


def read_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit or 16-bit greyscale PNG file into a uint8 or uint16 array."""
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise AdmcError(f"{path}: cannot read PNG: {error.strerror}") from None
    return decode_png(content, str(path))
