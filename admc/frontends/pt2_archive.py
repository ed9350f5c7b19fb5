"""Inspecting a ``.pt2`` archive before torch opens it: only tensor payloads and JSON may be read from a file.

Requires: a path to a file that claims to be a ``torch.export.save`` archive.
Guarantees: ``check_archive_is_safe`` returns only when the file is a readable zip holding an exported program
and no member that torch would unpickle or load as native code (compiled AOTInductor/ExecuTorch/MTIA code,
legacy pickled weights, pickled weight entries, sample inputs that are not plain tensors); otherwise it raises
``AdmcError`` naming the file and the member.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from admc.core.errors import AdmcError
from admc.frontends.messages import quote

_UNSAFE_DIRECTORIES = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")


def check_archive_is_safe(path: Path) -> None:
    """Refuse archives whose loading would unpickle arbitrary objects or load compiled code."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                raise AdmcError(f"{path}: corrupt archive member")
            members = {_strip_root(name): name for name in archive.namelist()}
            _check_members(path, members)
            for member, name in members.items():
                if member.endswith("_config.json") and member.startswith(("data/weights/", "data/constants/")):
                    _check_payload_config(path, member, archive.read(name))
                elif member.startswith("data/sample_inputs/"):
                    _check_sample_inputs(path, member, archive.read(name))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError,
            RecursionError, NotImplementedError) as error:
        raise AdmcError(f"{path}: not a readable .pt2 archive ({quote(error)})") from None


def _strip_root(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def _check_members(path: Path, members: dict[str, str]) -> None:
    if not any(member.startswith("models/") and member.endswith(".json") for member in members):
        raise AdmcError(f"{path}: no exported program in the archive (not written by torch.export.save?)")
    for member in members:
        if member.startswith(_UNSAFE_DIRECTORIES):
            raise AdmcError(f"{path}: archive member '{member}' holds compiled code; refusing to load it")
        if member.startswith(("data/weights/", "data/constants/")) and member.endswith(".pt"):
            raise AdmcError(f"{path}: archive member '{member}' is a pickle (legacy format); refusing to load it")


def _check_payload_config(path: Path, member: str, content: bytes) -> None:
    data = json.loads(content)
    config = data.get("config", {}) if isinstance(data, dict) else None
    if not isinstance(config, dict) or not all(isinstance(payload, dict) for payload in config.values()):
        raise AdmcError(f"{path}: {member} is not a weights configuration (a mapping of tensor entries)")
    for fully_qualified_name, payload in config.items():
        if payload.get("use_pickle") or not str(payload.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise AdmcError(
                f"{path}: '{fully_qualified_name}' in {member} is a pickled object, not raw tensor data; "
                "refusing to unpickle it"
            )


def _check_sample_inputs(path: Path, member: str, content: bytes) -> None:
    # torch retries with an unrestricted unpickler when this fails, so it must succeed restricted first.
    try:
        torch.load(io.BytesIO(content), weights_only=True)
    except Exception:  # any failure of the restricted unpickler means the content is not plain tensors
        raise AdmcError(f"{path}: {member} is not plain tensor data; refusing to unpickle it") from None
