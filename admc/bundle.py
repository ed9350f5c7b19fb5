"""The program bundle on disk: a versioned ``manifest.json`` plus payload files, each hashed (DESIGN.md §5).

Guarantees: ``write_bundle`` writes into a temporary sibling directory and renames it into place, so a
failed build leaves nothing behind and a reader never sees half a bundle; the same manifest and payloads
give byte-identical files (sorted JSON keys, ``.npy`` without pickles, no timestamps). ``read_bundle``
refuses a bundle whose format, version or any payload hash does not match, naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from admc.errors import AdmcError

BUNDLE_FORMAT = "admc-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def write_bundle(path: str | Path, manifest: dict, payloads: dict[str, bytes]) -> Path:
    """Write atomically; an existing *bundle* at ``path`` is replaced, any other existing path is refused."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and (path / MANIFEST).is_file()):
        raise AdmcError(f"{path}: exists and is not an admc bundle; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = dict(manifest)
    manifest["format"] = BUNDLE_FORMAT
    manifest["format_version"] = BUNDLE_VERSION
    manifest["payloads"] = {name: sha256(content) for name, content in sorted(payloads.items())}
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, content in payloads.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        (staging / MANIFEST).write_bytes(manifest_bytes(manifest))
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, retired / "bundle")
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


class Bundle:
    """A verified bundle: its manifest and hash-checked payload access."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise AdmcError(f"{self.path}: not an admc bundle (no {MANIFEST})")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AdmcError(f"{manifest_path}: unreadable manifest ({error})") from None
        if self.manifest.get("format") != BUNDLE_FORMAT:
            raise AdmcError(f"{manifest_path}: field 'format' is {self.manifest.get('format')!r}, "
                            f"expected '{BUNDLE_FORMAT}'")
        if self.manifest.get("format_version") != BUNDLE_VERSION:
            raise AdmcError(f"{manifest_path}: field 'format_version' is {self.manifest.get('format_version')!r};"
                            f" this admc reads version {BUNDLE_VERSION}")
        self._verified: dict[str, bytes] = {}
        for name in self.manifest.get("payloads", {}):
            self.read_bytes(name)

    def read_bytes(self, name: str) -> bytes:
        if name in self._verified:
            return self._verified[name]
        expected = self.manifest.get("payloads", {}).get(name)
        if expected is None:
            raise AdmcError(f"{self.path}: payload '{name}' is not listed in the manifest")
        file = self.path / name
        if not file.is_file():
            raise AdmcError(f"{file}: payload listed in the manifest is missing")
        content = file.read_bytes()
        if sha256(content) != expected:
            raise AdmcError(f"{file}: sha256 does not match the manifest; the bundle was modified or damaged")
        self._verified[name] = content
        return content

    def array(self, name: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(name)), allow_pickle=False)
