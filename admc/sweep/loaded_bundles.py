"""The bundles a worker process has loaded, kept for its next chip (or verify shard) of the same bundle.

Requires: a :class:`SharedBundle`: the bundle's build key, the sha256 of its ``manifest.json`` (the manifest lists
every payload's sha256, so equal digests mean equal files) and its files, as a mapping or as a Ray ObjectRef to
one (a ref nested in this dataclass is not fetched by Ray when the task starts).
Guarantees: :func:`loaded_bundle` returns the checked :class:`~admc.bundle.store.Bundle` of those files. Only on a
miss are the files fetched (from the object store), written to this machine's disk once
(``build_cache.materialise_bundle``) and parsed and hash-checked; a hit costs nothing, so a worker loads a bundle
at most once while it stays cached. The cache holds bundles of at most :data:`CACHE_BYTES` payload bytes in all,
the most recently used one always (least recently used evicted first). A loaded ``Bundle`` is only read (every
chip builds its own twin, with its own seed, from it), so a cached one gives the same results as a fresh one.
:func:`loads` counts the misses of this process (for tests and benchmarks).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from admc.core.errors import AdmcError

if TYPE_CHECKING:
    from admc.bundle.store import Bundle

# Payload bytes of loaded bundles a process keeps; the bundle in use is kept even when larger (a 36M-weight
# AOC bundle holds about 1.1 GB).
CACHE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class SharedBundle:
    """A bundle as tasks receive it: named by build key and manifest digest; files fetched only on a miss."""

    key: str
    manifest_sha256: str
    files: Any  # dict[str, bytes], or a Ray ObjectRef to one

    @classmethod
    def of(cls, key: str, files: Mapping[str, bytes], shared_files: Any = None) -> SharedBundle:
        """``files`` (the mapping) names it; ``shared_files`` (e.g. ``ray.put(files)``) is what tasks fetch."""
        digest = hashlib.sha256(files["manifest.json"]).hexdigest()
        return cls(key, digest, files if shared_files is None else shared_files)


_cache: OrderedDict[tuple[str, str], tuple[Bundle, int]] = OrderedDict()
_misses = [0]


def _fetch(files: Any) -> Mapping[str, bytes]:
    if isinstance(files, Mapping):
        return files
    import ray  # only a Ray task holds an ObjectRef

    return ray.get(files)


def loaded_bundle(shared: SharedBundle) -> Bundle:
    """The bundle ``shared`` names, loaded once per process while cached (see module docstring)."""
    from admc.bundle.store import Bundle
    from admc.sweep.build_cache import materialise_bundle

    name = (shared.key, shared.manifest_sha256)
    if name in _cache:
        _cache.move_to_end(name)
        return _cache[name][0]
    files = _fetch(shared.files)
    if hashlib.sha256(files["manifest.json"]).hexdigest() != shared.manifest_sha256:
        raise AdmcError(f"bundle {shared.key[:12]}: its files do not match the manifest digest sent with them")
    bundle = Bundle(materialise_bundle(shared.key, files))
    _misses[0] += 1
    _cache[name] = (bundle, sum(len(content) for content in files.values()))
    while len(_cache) > 1 and sum(size for _, size in _cache.values()) > CACHE_BYTES:
        _cache.popitem(last=False)
    return bundle


def loads() -> int:
    """How many bundles this process has loaded (cache misses) so far."""
    return _misses[0]


def clear() -> None:
    """Forget every loaded bundle (the next chip of each loads it again)."""
    _cache.clear()
