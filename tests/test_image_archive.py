"""Image archives (bundles above ``IMAGE_ARCHIVE_FROM`` modules): one stored ZIP of the module PNGs per image set.

The threshold is lowered here so that a small model's bundle takes the archive path; what is checked is what an
operator and the bundle checker rely on: the archive holds exactly the PNGs a file-per-image bundle holds, any
unzip reads them, the same build gives the same bytes, and a tampered archive is refused naming the image.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hardening_helpers import refused, replace_payload
from models import gemm_model

from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.targets.aoc import emit
from admc.targets.aoc.image_archive import pack_images, unpack_images
from admc.targets.aoc.png import decode_png, encode_png

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("archive")
    model = gemm_model(directory / "model.onnx", "transB", hidden=8, seed=2)
    files = build(model, directory / "files", target="aoc-48", solver="implicit-euler", steps=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(emit, "IMAGE_ARCHIVE_FROM", 0)
        archived = build(model, directory / "archived", target="aoc-48", solver="implicit-euler", steps=3)
        again = build(model, directory / "again", target="aoc-48", solver="implicit-euler", steps=3)
    return {"files": files, "archived": archived, "again": again}


def test_the_archive_holds_the_same_pngs_as_the_files(bundles) -> None:
    files, archived = bundles["files"], bundles["archived"]
    pngs = sorted((files / "aoc" / "images").iterdir())
    assert pngs and not (archived / "aoc" / "images").exists()
    with zipfile.ZipFile(archived / "aoc" / "images.zip") as archive:  # the standard library's reader, as unzip
        assert archive.testzip() is None
        assert archive.namelist() == [png.name for png in pngs]
        for png in pngs:
            assert archive.read(png.name) == png.read_bytes()
    grey = np.load(archived / "aoc" / "grey_positive.npy")
    with zipfile.ZipFile(archived / "aoc" / "images.zip") as archive:
        assert np.array_equal(decode_png(archive.read("module_0000_positive.png"), "image"), grey[0])
    manifest = Bundle(archived).manifest
    assert manifest["aoc"]["image_sets"][0]["image_archive"] == "aoc/images.zip"
    assert not any(name.startswith("aoc/images/") for name in manifest["payloads"])


def test_the_archive_is_deterministic(bundles) -> None:
    assert (bundles["archived"] / "aoc" / "images.zip").read_bytes() == \
        (bundles["again"] / "aoc" / "images.zip").read_bytes()
    images = {"module_0001_negative.png": encode_png(np.eye(4, dtype=np.uint8)),
              "module_0000_positive.png": encode_png(np.ones((4, 4), dtype=np.uint8))}
    assert pack_images(images) == pack_images(dict(reversed(list(images.items()))))
    assert unpack_images(pack_images(images), "archive") == images


def _rewritten(bundle: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with zipfile.ZipFile(copy / "aoc" / "images.zip") as archive:
        images = {name: archive.read(name) for name in archive.namelist()}
    replace_payload(copy, "aoc/images.zip", change(images))
    return copy


def test_a_tampered_image_is_refused_naming_it(capsys, bundles, tmp_path) -> None:
    def tamper(images: dict) -> bytes:
        images["module_0000_positive.png"] = encode_png(np.full((48, 48), 7, dtype=np.uint8))
        return pack_images(images)

    bundle = _rewritten(bundles["archived"], tmp_path, tamper)
    message = refused(capsys, "inspect", bundle, fragments=("differs from the grey levels",))
    assert "images.zip:module_0000_positive.png" in message


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda images: pack_images({name: images[name] for name in list(images)[1:]}), "is not in the bundle"),
    (lambda images: pack_images({**images, "module_9999_positive.png": images["module_0000_positive.png"]}),
     "an image of no module"),
    (lambda images: pack_images({**images, "../escape.png": b"x"}), "is not a module image name"),
    (lambda images: b"PK\x03\x04 not a zip", "not a readable image archive"),
])
def test_a_malformed_archive_is_refused(capsys, bundles, tmp_path, change, fragment) -> None:
    bundle = _rewritten(bundles["archived"], tmp_path, change)
    refused(capsys, "inspect", bundle, fragments=(fragment,))


def test_a_compressed_archive_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("module_0000_positive.png", b"png")
    with pytest.raises(Exception, match="is compressed"):
        unpack_images(buffer.getvalue(), "archive")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_threaded_encoding_gives_the_same_bytes_in_order(monkeypatch, dtype) -> None:
    from admc.targets.aoc import png

    monkeypatch.setattr(png, "PARALLEL_FROM", 4)
    monkeypatch.setattr(png, "ENCODE_CHUNK", 3)  # chunks that do not divide the stack
    monkeypatch.setattr(png.os, "cpu_count", lambda: 2)
    stack = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (11, 6, 5)).astype(dtype)
    assert png.encode_pngs(stack) == [encode_png(image) for image in stack]
