"""SLM sign split, response inversion and quantisation; deterministic greyscale PNG files."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from admc.core.errors import AdmcError
from admc.targets.aoc.png import encode_png, read_png, write_png
from admc.targets.aoc.slm import (
    check_response,
    drive_for_weight,
    quantise,
    realised_weight,
    sign_split,
)
from admc.targets.loader import load_target

RESPONSES = [
    (-0.1433, 0.8531, 0.0489),  # concave, like the 48-variable machine
    (0.2306, 0.2163, 0.4887),  # convex, like the 16-variable machine's positive path
    (0.0, 0.5, 0.1),  # linear
]


@pytest.mark.parametrize("response", RESPONSES)
def test_realised_weight_inverts_drive_for_weight(response: tuple[float, float, float]) -> None:
    weights = np.concatenate([[0.0, 1.0], np.random.default_rng(0).uniform(0, 1, 500)])
    drive = drive_for_weight(weights, response)
    assert np.all((drive >= 0) & (drive <= 1))
    np.testing.assert_allclose(realised_weight(drive, response), weights, atol=1e-12)
    # And the other way round, so the inverse is not the identity by accident.
    levels = np.linspace(0, 1, 101)
    np.testing.assert_allclose(drive_for_weight(realised_weight(levels, response), response), levels, atol=1e-12)


def test_realised_weight_subtracts_darkness_and_normalises() -> None:
    a, b, c = RESPONSES[0]
    assert realised_weight(0.0, RESPONSES[0]) == 0.0
    assert realised_weight(1.0, RESPONSES[0]) == pytest.approx(1.0)
    u = 0.3
    assert realised_weight(u, RESPONSES[0]) == pytest.approx((a * u * u + b * u + c - c) / (a + b))
    # Concave response: half drive gives more than half the weight.
    assert realised_weight(0.5, RESPONSES[0]) > 0.5


def test_non_monotone_response_is_refused() -> None:
    for response in [(-1.0, 1.0, 0.0), (0.5, -0.1, 0.0), (0.0, 0.0, 0.3)]:
        with pytest.raises(AdmcError, match="not increasing"):
            check_response(response)
        with pytest.raises(AdmcError, match="not increasing"):
            drive_for_weight(0.5, response)
    with pytest.raises(AdmcError, match=r"\[0, 1\]"):
        drive_for_weight(1.5, RESPONSES[0])


@pytest.mark.parametrize("response", RESPONSES)
@pytest.mark.parametrize("bit_depth", [4, 8, 10])
def test_quantisation_picks_the_nearest_level(response: tuple[float, float, float], bit_depth: int) -> None:
    weights = np.random.default_rng(bit_depth).uniform(0, 1, (40, 30))
    weights[0, :3] = [0.0, 1.0, 0.5]
    grey, realised = quantise(weights, response, bit_depth)
    assert grey.shape == weights.shape
    assert grey.dtype == (np.uint8 if bit_depth <= 8 else np.uint16)
    top = 2**bit_depth - 1
    # Brute force, independently of the implementation: every level's weight from the raw quadratic.
    a, b, c = response
    u = np.arange(top + 1) / top
    level_weights = (a * u**2 + b * u + c - c) / (a + b)
    distances = np.abs(weights[..., None] - level_weights)
    best = distances.min(axis=-1)
    chosen = np.take_along_axis(distances, grey[..., None].astype(np.int64), axis=-1)[..., 0]
    np.testing.assert_allclose(chosen, best, atol=1e-15)
    np.testing.assert_allclose(realised, level_weights[grey], atol=1e-15)
    # Error at most half the local step (the gap between the two levels around each weight).
    upper = np.clip(np.searchsorted(level_weights, weights), 1, top)
    local_step = level_weights[upper] - level_weights[upper - 1]
    assert np.all(np.abs(realised - weights) <= local_step / 2 + 1e-15)
    assert grey[0, 0] == 0 and grey[0, 1] == top


def test_quantisation_uses_the_response_not_a_linear_map() -> None:
    response = RESPONSES[0]
    grey, _ = quantise(np.array([0.5]), response, 8)
    linear_level = round(0.5 * 255)
    # The concave response reaches weight 0.5 at a lower drive than half scale.
    assert grey[0] < linear_level
    assert grey[0] == round(float(drive_for_weight(0.5, response)) * 255)


def test_float_weights_are_unchanged() -> None:
    weights = np.random.default_rng(1).uniform(0, 1, (5, 7))
    grey, realised = quantise(weights, RESPONSES[0], 8, float_weights=True)
    assert grey is None
    np.testing.assert_array_equal(realised, weights)
    with pytest.raises(AdmcError):
        quantise(np.array([-0.1]), RESPONSES[0], 8)


def test_preset_responses_are_monotone_and_quantise() -> None:
    for name in ("aoc-48", "aoc-16"):
        slm = load_target(name).slm
        for path in ("positive", "negative"):
            grey, realised = quantise(np.linspace(0, 1, 11), slm.response_for(path), slm.bit_depth)
            assert grey[0] == 0 and grey[-1] == 255
            assert np.all(np.diff(realised) > 0)


def test_sign_split_reconstructs_with_disjoint_support() -> None:
    weights = np.random.default_rng(2).normal(size=(9, 11))
    weights[0, 0] = 0.0
    positive, negative = sign_split(weights)
    np.testing.assert_array_equal(positive - negative, weights)
    assert np.all(positive >= 0) and np.all(negative >= 0)
    assert not np.any((positive > 0) & (negative > 0))
    assert np.count_nonzero(positive) + np.count_nonzero(negative) == np.count_nonzero(weights)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip_and_determinism(tmp_path: Path, dtype: type) -> None:
    high = np.iinfo(dtype).max
    image = np.random.default_rng(3).integers(0, high + 1, size=(13, 29)).astype(dtype)
    image[0, 0], image[0, 1] = 0, high
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    write_png(first, image)
    write_png(second, image.copy())
    assert first.read_bytes() == second.read_bytes()
    back = read_png(first)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_bytes_decoded_independently(dtype: type) -> None:
    image = (np.arange(6 * 5).reshape(6, 5) * (1 if dtype == np.uint8 else 2000)).astype(dtype)
    data = encode_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # IHDR: width, height, bit depth, colour type 0 (greyscale).
    assert data[12:16] == b"IHDR"
    assert int.from_bytes(data[16:20], "big") == 5 and int.from_bytes(data[20:24], "big") == 6
    assert data[24] == (8 if dtype == np.uint8 else 16) and data[25] == 0
    length = int.from_bytes(data[33:37], "big")
    assert data[37:41] == b"IDAT"
    raw = zlib.decompress(data[41 : 41 + length])
    sample_bytes = 1 if dtype == np.uint8 else 2
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(6, 1 + 5 * sample_bytes)
    assert np.all(rows[:, 0] == 0)  # filter type 0 on every row: the bytes are a pure function of the array
    samples = _unfilter(rows, sample_bytes).view(">u2" if sample_bytes == 2 else np.uint8)
    np.testing.assert_array_equal(samples.astype(dtype), image)
    assert data.endswith(b"IEND\xaeB`\x82")


def _unfilter(rows: np.ndarray, step: int) -> np.ndarray:
    """Undo the PNG row filters (types 0-4) of [rows, 1 + bytes] data: an independent reference decoder."""
    result = np.zeros((rows.shape[0], rows.shape[1] - 1), dtype=np.int64)
    for index, row in enumerate(rows.astype(np.int64)):
        previous = result[index - 1] if index else np.zeros(rows.shape[1] - 1, dtype=np.int64)
        for position, value in enumerate(row[1:]):
            left = result[index, position - step] if position >= step else 0
            up = previous[position]
            corner = previous[position - step] if position >= step else 0
            predictor = [0, left, up, (left + up) // 2, _paeth(left, up, corner)][row[0]]
            result[index, position] = (value + predictor) % 256
    return result.astype(np.uint8)


def test_png_matches_matplotlib_and_pillow(tmp_path: Path) -> None:
    image_module = pytest.importorskip("matplotlib.image")
    pillow = pytest.importorskip("PIL.Image")
    image = np.random.default_rng(4).integers(0, 256, size=(7, 9)).astype(np.uint8)
    path = tmp_path / "m.png"
    write_png(path, image)
    np.testing.assert_allclose(image_module.imread(path), image / 255.0, atol=1e-6)
    with pillow.open(path) as opened:
        assert opened.mode == "L"
        np.testing.assert_array_equal(np.asarray(opened), image)
    deep = np.random.default_rng(5).integers(0, 65536, size=(4, 6)).astype(np.uint16)
    write_png(tmp_path / "deep.png", deep)
    with pillow.open(tmp_path / "deep.png") as opened:
        np.testing.assert_array_equal(np.asarray(opened).astype(np.int64), deep.astype(np.int64))
    # Pillow chooses its own row filters; our reader must undo them.
    smooth = (np.add.outer(np.arange(20), np.arange(30)) * 4 % 256).astype(np.uint8)
    pillow.fromarray(smooth).save(tmp_path / "pillow.png")
    np.testing.assert_array_equal(read_png(tmp_path / "pillow.png"), smooth)


@pytest.mark.parametrize("name, dtype, shape", [("pre_pillow_writer_8bit.png", np.uint8, (48, 48)),
                                                 ("pre_pillow_writer_16bit.png", np.uint16, (16, 24))])
def test_png_bytes_identical_to_the_writer_before_pillow(name: str, dtype: type, shape: tuple) -> None:
    """The files in tests/data were written by admc's PNG writer before the switch to Pillow (commit c541cc3)
    from these arrays; the current writer must give the same bytes, and Pillow must read them back."""
    pillow = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(2026)
    grey8 = rng.integers(0, 256, size=(48, 48)).astype(np.uint8)
    grey8[:, :12] = 0
    grey16 = rng.integers(0, 65536, size=(16, 24)).astype(np.uint16)
    image = grey8 if dtype == np.uint8 else grey16
    assert image.shape == shape
    golden = (Path(__file__).parent / "data" / name).read_bytes()
    assert encode_png(image) == golden
    with pillow.open(Path(__file__).parent / "data" / name) as opened:
        np.testing.assert_array_equal(np.asarray(opened).astype(np.int64), image.astype(np.int64))


def test_png_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(AdmcError, match="uint8 or uint16"):
        encode_png(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(AdmcError, match="2-D"):
        encode_png(np.zeros(4, dtype=np.uint8))
    path = tmp_path / "not.png"
    path.write_bytes(b"hello")
    with pytest.raises(AdmcError, match="not.png: not a readable PNG"):
        read_png(path)


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    options = [(abs(estimate - left), left), (abs(estimate - up), up), (abs(estimate - corner), corner)]
    return min(options, key=lambda option: option[0])[1]  # min keeps the first on ties, as the PNG spec says


def test_png_reader_undoes_every_filter_type(tmp_path: Path) -> None:
    image = np.random.default_rng(6).integers(0, 65536, size=(10, 7)).astype(np.uint16)
    rows = image.astype(">u2").view(np.uint8).reshape(10, -1).astype(int)
    step = 2  # bytes per pixel at 16 bits
    filtered = bytearray()
    for index, row in enumerate(rows):
        previous = rows[index - 1] if index else np.zeros_like(row)
        kind = index % 5
        filtered.append(kind)
        for position, value in enumerate(row):
            left = row[position - step] if position >= step else 0
            up = previous[position]
            corner = previous[position - step] if position >= step else 0
            predictor = [0, left, up, (left + up) // 2, _paeth(left, up, corner)][kind]
            filtered.append((value - predictor) % 256)
    reference = encode_png(image)
    idat_start = reference.index(b"IDAT") - 4
    idat_length = int.from_bytes(reference[idat_start : idat_start + 4], "big")
    payload = zlib.compress(bytes(filtered))
    chunk = len(payload).to_bytes(4, "big") + b"IDAT" + payload + zlib.crc32(b"IDAT" + payload).to_bytes(4, "big")
    crafted = reference[:idat_start] + chunk + reference[idat_start + 12 + idat_length :]
    path = tmp_path / "filters.png"
    path.write_bytes(crafted)
    np.testing.assert_array_equal(read_png(path), image)
