"""The program bundle on disk: a versioned ``manifest.json`` plus payload files, each hashed (docs/design.md §5).

Guarantees: ``write_bundle`` writes into a temporary sibling directory and renames it into place, so a
failed build leaves nothing behind and a reader never sees half a bundle; the same manifest and payloads
give byte-identical files (sorted JSON keys, ``.npy`` without pickles, no timestamps). The manifest carries
the format version and ``manifest_digest``, the sha256 of its own canonical form (:func:`canonical_bytes`
of every field but the digest).

``Bundle`` is the trust boundary (issue 13): before any field is used it refuses, naming the file, a
manifest that is not a regular file (symlinks are not followed), too large or too deeply nested, not JSON,
of another format or version, whose digest does not match, or that fails the schema
(``admc.bundle.manifest_schema``); then it reads every payload through ``admc.core.safe_files`` (relative names inside
the bundle, no symlinks, regular files, size limits) and checks its sha256; arrays are checked against the
dtype and shape the manifest implies before a reader sees them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from admc.bundle.manifest_schema import check_manifest, expected_arrays
from admc.core import limits
from admc.core.atomic import staged_directory
from admc.core.errors import AdmcError
from admc.core.safe_files import decode_text, open_directory, read_member

BUNDLE_FORMAT = "admc-bundle"
BUNDLE_VERSION = 2  # 2: manifest_digest and the manifest schema
MANIFEST = "manifest.json"
DIGEST_FIELD = "manifest_digest"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def canonical_bytes(manifest: dict) -> bytes:
    """The canonical form the digest covers: every field but ``manifest_digest``, compact sorted JSON."""
    content = {key: value for key, value in manifest.items() if key != DIGEST_FIELD}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def write_bundle(path: str | Path, manifest: dict, payloads: dict[str, bytes]) -> Path:
    """Write atomically; an existing *bundle* at ``path`` is replaced, any other existing path is refused."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and (path / MANIFEST).is_file()):
        raise AdmcError(f"{path}: exists and is not an admc bundle; refusing to overwrite it")
    manifest = dict(manifest)
    manifest["format"] = BUNDLE_FORMAT
    manifest["format_version"] = BUNDLE_VERSION
    manifest["payloads"] = {name: sha256(content) for name, content in sorted(payloads.items())}
    manifest[DIGEST_FIELD] = sha256(canonical_bytes(manifest))
    with staged_directory(path) as staging:
        for name, content in payloads.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        (staging / MANIFEST).write_bytes(manifest_bytes(manifest))
    return path


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {duplicate!r} appears twice in one object")
    return result


def _nesting(data: object) -> int:
    """Deepest list/object nesting, computed without recursion."""
    deepest, pending = 0, [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limits.MANIFEST_NESTING:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def parse_manifest(content: bytes, label: str) -> dict:
    """The manifest's JSON, after the size, encoding, nesting, format, version and digest checks."""
    if len(content) > limits.MANIFEST_BYTES:
        raise AdmcError(f"{label}: {len(content)} bytes, more than a manifest may have ({limits.MANIFEST_BYTES})")
    text = decode_text(content, label, "manifest")
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise AdmcError(f"{label}: nested more than {limits.MANIFEST_NESTING} levels deep") from None
    except ValueError as error:
        raise AdmcError(f"{label}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise AdmcError(f"{label}: expected a JSON object at top level, got {type(data).__name__}")
    if _nesting(data) > limits.MANIFEST_NESTING:
        raise AdmcError(f"{label}: nested more than {limits.MANIFEST_NESTING} levels deep")
    if data.get("format") != BUNDLE_FORMAT:
        raise AdmcError(f"{label}: field 'format' is {data.get('format')!r}, expected '{BUNDLE_FORMAT}'")
    if data.get("format_version") != BUNDLE_VERSION:
        raise AdmcError(f"{label}: field 'format_version' is {data.get('format_version')!r}; this admc reads "
                        f"version {BUNDLE_VERSION}")
    try:
        digest = sha256(canonical_bytes(data))
    except ValueError:  # 1e400 parses as inf, which no manifest admc writes can hold
        raise AdmcError(f"{label}: holds a number too large to be finite") from None
    if data.get(DIGEST_FIELD) != digest:
        raise AdmcError(f"{label}: field '{DIGEST_FIELD}' does not match the manifest's content; the manifest "
                        "was modified or damaged")
    return data


class Bundle:
    """A verified bundle: its checked manifest and hash-checked, shape-checked payload access."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        label = str(self.path / MANIFEST)
        root = open_directory(self.path)
        try:
            try:
                content = read_member(root, MANIFEST, label, limits.MANIFEST_BYTES, "manifest")
            except AdmcError as error:
                if "missing" in str(error):
                    raise AdmcError(f"{self.path}: not an admc bundle (no {MANIFEST})") from None
                raise
            self.manifest = parse_manifest(content, label)
            self.schema, self.target = check_manifest(self.manifest, label)
            self._verified: dict[str, bytes] = {}
            total = 0
            for name, expected in self.manifest["payloads"].items():
                file_label = str(self.path / name)
                data = read_member(root, name, file_label, limits.PAYLOAD_BYTES)
                total += len(data)
                limits.require_memory(total, f"{self.path}: reading the bundle's payloads")
                if sha256(data) != expected:
                    raise AdmcError(f"{file_label}: sha256 does not match the manifest; the bundle was modified "
                                    "or damaged")
                self._verified[name] = data
        finally:
            os.close(root)
        self._expected = expected_arrays(self.schema, self.target)
        for name in self._expected:
            self._check_header(name)

    def read_bytes(self, name: str) -> bytes:
        content = self._verified.get(name) if isinstance(name, str) else None
        if content is None:
            raise AdmcError(f"{self.path}: payload {name!r} is not listed in the manifest")
        return content

    def array(self, name: str) -> np.ndarray:
        """The payload as an array, refused unless its dtype and shape are the ones the manifest implies."""
        label = str(self._check_header(name))
        try:
            array = np.load(io.BytesIO(self.read_bytes(name)), allow_pickle=False)
        except ValueError as error:
            raise AdmcError(f"{label}: damaged .npy array ({error})") from None
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise AdmcError(f"{label}: array holds NaN or Inf")
        return array

    def _check_header(self, name: str) -> Path:
        label = self.path / name
        buffer = io.BytesIO(self.read_bytes(name))
        try:
            version = np.lib.format.read_magic(buffer)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(buffer)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(buffer)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as error:
            raise AdmcError(f"{label}: not a .npy array ({error})") from None
        expected = self._expected.get(name)
        if expected is not None:
            dtypes, wanted = expected
            # One shape, or a list of the shapes the manifest allows (e.g. α per channel or per phase).
            shapes = wanted if isinstance(wanted, list) else [wanted]
            if dtype.str not in dtypes or fortran or not any(
                    len(shape) == len(allowed) and all(size is None or size == actual
                                                       for size, actual in zip(allowed, shape, strict=True))
                    for allowed in shapes):
                shown = " or ".join(str(tuple("any" if size is None else size for size in allowed))
                                    for allowed in shapes)
                raise AdmcError(f"{label}: array has dtype {dtype.str} shape {shape}, the manifest implies "
                                f"{'/'.join(dtypes)} shape {shown}")
        elif dtype.hasobject:
            raise AdmcError(f"{label}: object arrays are not allowed in a bundle")
        return label
