"""The SLM images of a bundle with many modules: one archive per image set, a stored ZIP of the same PNGs.

Requires: the PNG bytes of every module image of one set, by their names inside the archive
(``module_MMMM_<path>.png``, the names the images have as files in a smaller bundle). Guarantees:
``pack_images`` gives the same bytes for the same images (entries in name order, the fixed timestamp
1980-01-01 00:00, fixed permissions, no comment or extra fields, stored without compression: PNGs are already
deflated), so the archive is content-hashed like any payload, and any unzip tool lists and extracts the PNGs an
operator loads. ``unpack_images`` reads one back, refusing (naming the file) an archive that is not a ZIP, is
compressed, holds a name that is not a module image, holds one twice, or is larger than a payload may be.

Why: at 36M weights a bundle held 31,384 PNG files. Creating, hashing and checking that many small files cost
more than the images' content (issue 25), while a bundle of a few modules keeps one file per image, as before.
"""

from __future__ import annotations

import io
import re
import zipfile

from admc.core import limits
from admc.core.errors import AdmcError

# Above this many modules, an image set's PNGs go into one archive instead of a file per module and path.
IMAGE_ARCHIVE_FROM = 256
ENTRY_NAME = re.compile(r"module_\d{4,}_(positive|negative)\.png")
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a ZIP can hold: no build time in the bundle
_PERMISSIONS = 0o644 << 16


def module_image_name(module: int, path: str) -> str:
    """The name of one module's image on one optical path (a file name, or an entry of the archive)."""
    return f"module_{module:04d}_{path}.png"


def pack_images(images: dict[str, bytes]) -> bytes:
    """A stored ZIP of ``images`` (name → PNG bytes), deterministic byte for byte."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(images):
            info = zipfile.ZipInfo(name, date_time=_TIMESTAMP)
            info.external_attr = _PERMISSIONS
            info.create_system = 3  # Unix, whatever the building machine: the permissions above mean the same
            archive.writestr(info, images[name])
    return buffer.getvalue()


def unpack_images(content: bytes, label: str) -> dict[str, bytes]:
    """The PNG bytes of every entry of an image archive; ``label`` names the file in errors."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            entries = archive.infolist()
            names = [entry.filename for entry in entries]
            if len(set(names)) != len(names):
                raise AdmcError(f"{label}: an image appears twice in the archive")
            for entry in entries:
                if not ENTRY_NAME.fullmatch(entry.filename):
                    raise AdmcError(f"{label}: '{entry.filename}' is not a module image name "
                                    "(module_MMMM_positive.png or _negative.png)")
                if entry.compress_type != zipfile.ZIP_STORED:
                    raise AdmcError(f"{label}: '{entry.filename}' is compressed; the archive stores its PNGs")
            if sum(entry.file_size for entry in entries) > limits.PAYLOAD_BYTES:
                raise AdmcError(f"{label}: the images add up to more than {limits.PAYLOAD_BYTES} bytes")
            return {entry.filename: archive.read(entry) for entry in entries}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise AdmcError(f"{label}: not a readable image archive ({error})") from None
