"""Greyscale PNG images of SLM grey levels, written and read with Pillow (issue 13: a kept library instead of
a hand-written codec).

Requires: 2-D uint8 (written as 8-bit greyscale) or uint16 (16-bit greyscale) arrays.
Guarantees: the same array always gives the same bytes (fixed compression level 9, no metadata chunks, no
timestamp); :func:`decode_png` returns exactly the array :func:`encode_png` was given, and refuses anything
that is not a well-formed non-interlaced 8/16-bit greyscale PNG of at most :data:`MAX_PIXELS` pixels
(a decompression bomb, a truncated or corrupt file) with an AdmcError naming it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from admc.errors import AdmcError

COMPRESSION_LEVEL = 9
MAX_PIXELS = 4096 * 4096  # the largest SLM a description allows (module.ports ≤ 4096)
_MODES = {np.dtype(np.uint8): "L", np.dtype(np.uint16): "I;16"}


def encode_png(grey_levels: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 or uint16 array."""
    image = np.asarray(grey_levels)
    if image.ndim != 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise AdmcError(f"PNG: expected a non-empty 2-D array of grey levels, got shape {image.shape}")
    if image.dtype not in _MODES:
        raise AdmcError(f"PNG: expected uint8 or uint16 grey levels, got {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=COMPRESSION_LEVEL)
    return buffer.getvalue()


def write_png(path: str | Path, grey_levels: np.ndarray) -> None:
    """Write a 2-D uint8 / uint16 array as an 8-bit / 16-bit greyscale PNG."""
    Path(path).write_bytes(encode_png(grey_levels))


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
