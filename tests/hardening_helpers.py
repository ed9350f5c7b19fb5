"""Helpers of the hardening tests (issue 13): run the CLI, check the refusal contract, tamper with bundles."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

import admc.bundle.store
from admc.cli import main


def cli(capsys, *arguments) -> tuple[int, str, str]:
    status = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def refused(capsys, *arguments, fragments: tuple[str, ...] = ()) -> str:
    """Run the CLI; assert exit 2 and exactly one ``admc: error:`` line without a traceback; return it."""
    status, out, err = cli(capsys, *arguments)
    message = err.strip()
    assert status == 2, (status, out, err)
    assert message.startswith("admc: error: ") and "\n" not in message, err
    assert "Traceback" not in err and "Traceback" not in out
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def copy_bundle(bundle: Path, destination: Path) -> Path:
    shutil.copytree(bundle, destination, symlinks=True)
    return destination


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest(bundle: Path, manifest: dict, redigest: bool = True) -> None:
    """Write ``manifest`` back, recomputing its digest as a careful attacker would."""
    if redigest and isinstance(manifest, dict):
        manifest[admc.bundle.store.DIGEST_FIELD] = admc.bundle.store.sha256(admc.bundle.store.canonical_bytes(manifest))
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def replace_payload(bundle: Path, name: str, content: bytes) -> None:
    """Replace a payload and update its hash (and the manifest digest): only deeper checks can refuse it."""
    path = bundle / name
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(content)
    manifest = read_manifest(bundle)
    manifest["payloads"][name] = admc.bundle.store.sha256(content)
    write_manifest(bundle, manifest)


def save_noise(path: Path, samples: int = 4, dimension: int = 2) -> Path:
    np.save(path, np.random.default_rng(0).standard_normal((samples, dimension)))
    return path


def no_partial_files(directory: Path) -> bool:
    return not any(".partial" in name or name.startswith(".") for name in os.listdir(directory))
