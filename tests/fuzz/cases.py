"""Generated bad inputs for admc (issue 13, item 6) and the contract each run must keep.

A case is made from a seed by one of :data:`FAMILIES` (mutated manifests, payloads, containment attacks,
mutated ONNX models, target YAML, noise arrays, command-line misuse) and run in-process through
``admc.cli.main`` under a timeout. :func:`run_case` reports whether it kept the contract:
- exit 0, 1 (verify only) or 2; never an uncaught exception nor exit 70 (internal error), never a hang;
- a refusal (exit 2) is exactly one ``admc: error:`` line on stderr;
- nothing is left behind after a refusal (the case directory lists the same files as before);
- no file in the decoy directory (what tampered manifests point at) is opened;
- a bundle tampered so that the reader must notice (content changed without its hash, manifest changed
  without its digest, symlinks, names outside the bundle, images or routing that disagree) is refused.
Used by ``tests/fuzz`` (a few cases per family, hypothesis-chosen seeds) and ``benchmarks/fuzz_full.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import admc.bundle.store

FAMILIES = ("manifest_value", "manifest_structure", "payload", "containment", "onnx_model", "target_yaml",
            "noise", "command_line")


@dataclass
class Base:
    """Artifacts the cases mutate (built once): a model, an ideal and an AOC bundle, noise, a decoy dir."""

    model: Path
    bundles: dict[str, Path]
    noise: Path
    decoy: Path


@dataclass
class Case:
    family: str
    seed: int
    argv: list[str]
    directory: Path
    must_refuse: bool = False
    description: str = ""


@dataclass
class Outcome:
    case: Case
    status: int | None = None
    stderr: str = ""
    uncaught: str = ""
    hang: bool = False
    not_one_line: bool = False
    left_behind: list[str] = field(default_factory=list)
    outside_reads: list[str] = field(default_factory=list)
    tampered_accepted: bool = False

    @property
    def kept_contract(self) -> bool:
        return not (self.uncaught or self.hang or self.not_one_line or self.left_behind or self.outside_reads
                    or self.tampered_accepted or self.status == 70)


def make_base(directory: Path) -> Base:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models import gemm_model

    from admc.compiler.driver import build

    directory.mkdir(parents=True, exist_ok=True)
    model = gemm_model(directory / "model.onnx", "transB", hidden=8, seed=5)
    bundles = {"ideal": build(model, directory / "ideal", target="ideal", solver="heun", steps=3),
               "aoc": build(model, directory / "aoc", target="aoc-48", solver="implicit-euler", steps=3)}
    noise = directory / "noise.npy"
    np.save(noise, np.random.default_rng(0).standard_normal((4, 2)))
    decoy = directory / "decoy"
    decoy.mkdir(exist_ok=True)
    shutil.copy(model, decoy / "model.onnx")
    shutil.copy(bundles["ideal"] / "channels" / "alpha.npy", decoy / "alpha.npy")
    shutil.copy(bundles["ideal"] / "manifest.json", decoy / "manifest.json")
    return Base(model, bundles, noise, decoy)


# ---------------------------------------------------------------- random values


def nasty_value(rng: random.Random):
    return rng.choice([
        None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 63), 10 ** 9, 1e9, -1e-9, 0.5, 1e308, "", "foo", "../x",
        "/etc/passwd", "a\nb\x1b[31m", "x" * 5000, [], [1, 2], {}, {"a": 1}, [[[]]], "NaN", 3.5, -7,
    ])


def json_paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from json_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data[:6]):
            yield from json_paths(value, (*prefix, index))


def set_path(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def redigest(manifest: dict) -> None:
    manifest[admc.bundle.store.DIGEST_FIELD] = admc.bundle.store.sha256(admc.bundle.store.canonical_bytes(manifest))


def copy_bundle(base: Base, rng: random.Random, directory: Path) -> tuple[Path, str]:
    kind = rng.choice(["ideal", "aoc"])
    bundle = directory / "bundle"
    shutil.copytree(base.bundles[kind], bundle)
    return bundle, kind


def bundle_command(rng: random.Random, bundle: Path, base: Base, directory: Path) -> list[str]:
    twin = (bundle / "aoc").is_dir() and rng.random() < 0.3  # the digital twin reads AOC bundles too
    command = rng.choice(["inspect", "simulate", "verify"])
    if command == "inspect":
        return ["inspect", str(bundle)] + (["--json"] if rng.random() < 0.5 else [])
    if command == "simulate":
        return ["simulate", str(bundle), "--noise", str(base.noise), "-o", str(directory / "out.npy"),
                *(["--loop-iterations", "30"] if twin else ["--ideal"])]
    return ["verify", str(bundle), "--samples", "8", *(["--loop-iterations", "30"] if twin else ["--no-twin"])]


# ---------------------------------------------------------------- families


def manifest_value(base: Base, rng: random.Random, directory: Path) -> Case:
    bundle, _ = copy_bundle(base, rng, directory)
    manifest = json.loads((bundle / "manifest.json").read_text())
    paths = [path for path in json_paths(manifest) if path and path[0] != admc.bundle.store.DIGEST_FIELD]
    path = rng.choice(paths)
    value = nasty_value(rng)
    original = manifest
    for key in path:
        original = original[key]
    changed = json.dumps(original, sort_keys=True) != json.dumps(value, sort_keys=True)
    set_path(manifest, path, value)
    keep_digest = rng.random() < 0.3
    if not keep_digest:
        redigest(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    argv = bundle_command(rng, bundle, base, directory)
    return Case("manifest_value", 0, argv, directory, must_refuse=keep_digest and changed,
                description=f"{'/'.join(map(str, path))} = {value!r:.40}{' (digest kept)' if keep_digest else ''}")


def manifest_structure(base: Base, rng: random.Random, directory: Path) -> Case:
    bundle, _ = copy_bundle(base, rng, directory)
    text = (bundle / "manifest.json").read_text()
    manifest = json.loads(text)
    choice = rng.choice(["delete", "array", "deep", "truncate", "garbage", "not_utf8", "duplicate_key", "huge"])
    if choice == "delete":
        del manifest[rng.choice(["layout", "source", "phases", "solver", "target", "payloads", "channels",
                                 "static_injection", "format_version"])]
        redigest(manifest)
        content = json.dumps(manifest).encode()
    elif choice == "array":
        content = b"[]"
    elif choice == "deep":
        depth = rng.choice([100, 10_000, 100_000])
        content = ("[" * depth + "]" * depth).encode()
    elif choice == "truncate":
        content = text.encode()[: rng.randrange(len(text))]
    elif choice == "garbage":
        content = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    elif choice == "not_utf8":
        content = text.encode()[:50] + b"\xff\xfe" + text.encode()[50:]
    elif choice == "duplicate_key":
        content = text.replace('"format"', '"format": "x", "format"', 1).encode()
    else:
        manifest["padding"] = "x" * (65 * 1024 * 1024)
        content = json.dumps(manifest).encode()
    (bundle / "manifest.json").write_bytes(content)
    return Case("manifest_structure", 0, bundle_command(rng, bundle, base, directory), directory,
                must_refuse=True, description=choice)


def payload(base: Base, rng: random.Random, directory: Path) -> Case:
    bundle, kind = copy_bundle(base, rng, directory)
    manifest = json.loads((bundle / "manifest.json").read_text())
    name = rng.choice(sorted(manifest["payloads"]))
    file = bundle / name
    content = bytearray(file.read_bytes())
    choice = rng.choice(["flip", "truncate", "delete", "directory", "fifo", "rehash_other_array",
                         "rehash_png" if kind == "aoc" else "flip", "rehash_routing" if kind == "aoc" else "flip"])
    must_refuse = True
    if choice == "flip":
        content[rng.randrange(len(content))] ^= 1 << rng.randrange(8)
        file.write_bytes(bytes(content))
    elif choice == "truncate":
        file.write_bytes(bytes(content[: rng.randrange(len(content))]))
    elif choice == "delete":
        file.unlink()
    elif choice == "directory":
        file.unlink()
        file.mkdir()
    elif choice == "fifo":
        file.unlink()
        os.mkfifo(file)
    else:
        if choice == "rehash_png":
            name = rng.choice([key for key in manifest["payloads"] if key.endswith(".png")])
            from admc.targets.aoc.png import encode_png

            new = encode_png(np.full((48, 48), rng.randrange(1, 255), dtype=np.uint8))
        elif choice == "rehash_routing":
            name = "aoc/routing.json"
            routing = json.loads((bundle / name).read_text())
            routing["edges"] = routing["edges"][rng.randrange(1, 4):]
            new = json.dumps(routing).encode()
        else:
            array = rng.choice([np.zeros((2, 3, 4)), np.zeros(1, dtype=np.complex128), np.array(["a"]),
                                np.zeros(0), np.full(3, np.nan), np.zeros((10 ** 3,), dtype=np.int8)])
            if name.endswith(".npy"):
                new = admc.bundle.store.npy_bytes(array)
            else:
                new = b"\x00" * 16
                must_refuse = False  # a rehashed source model is a new bundle; it may still be refused later
        (bundle / name).write_bytes(new)
        manifest["payloads"][name] = admc.bundle.store.sha256(new)
        redigest(manifest)
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return Case("payload", 0, bundle_command(rng, bundle, base, directory), directory, must_refuse=must_refuse,
                description=f"{choice} {name}")


def containment(base: Base, rng: random.Random, directory: Path) -> Case:
    bundle, _ = copy_bundle(base, rng, directory)
    manifest = json.loads((bundle / "manifest.json").read_text())
    choice = rng.choice(["absolute", "dotdot", "source_outside", "symlink_payload", "symlink_manifest",
                         "symlink_directory"])
    if choice in ("absolute", "dotdot", "source_outside"):
        decoy = base.decoy / ("model.onnx" if choice == "source_outside" else "alpha.npy")
        relative = os.path.relpath(decoy, bundle)
        name = str(decoy) if choice == "absolute" else relative
        manifest["payloads"][name] = admc.bundle.store.sha256(decoy.read_bytes())
        if choice == "source_outside":
            manifest["source"]["payload"] = name
        else:
            manifest["channels"]["alpha"] = name
        redigest(manifest)
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    elif choice == "symlink_payload":
        target = bundle / "channels" / "alpha.npy"
        shutil.copy(target, base.decoy / f"alpha-{directory.name}.npy")
        target.unlink()
        target.symlink_to(base.decoy / f"alpha-{directory.name}.npy")
    elif choice == "symlink_manifest":
        shutil.copy(bundle / "manifest.json", base.decoy / f"manifest-{directory.name}.json")
        (bundle / "manifest.json").unlink()
        (bundle / "manifest.json").symlink_to(base.decoy / f"manifest-{directory.name}.json")
    else:
        moved = base.decoy / f"channels-{directory.name}"
        shutil.move(bundle / "channels", moved)
        (bundle / "channels").symlink_to(moved)
    return Case("containment", 0, bundle_command(rng, bundle, base, directory), directory, must_refuse=True,
                description=choice)


def onnx_model(base: Base, rng: random.Random, directory: Path) -> Case:
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(base.model))
    graph = model.graph
    choice = rng.choice(["initializer_shape", "initializer_dtype", "initializer_nan", "op_type", "attribute",
                         "duplicate_name", "drop_input", "name_control", "truncate", "flip_bytes", "value_info"])
    if choice == "initializer_shape":
        item = rng.choice(list(graph.initializer))
        array = numpy_helper.to_array(item)
        shape = rng.choice([(0,), (1,), array.shape[::-1], (*array.shape, 1), (array.size + 1,)])
        item.CopyFrom(numpy_helper.from_array(np.resize(array, shape).astype(array.dtype), item.name))
    elif choice == "initializer_dtype":
        item = rng.choice(list(graph.initializer))
        dtype = rng.choice([np.float16, np.int32, np.int64, np.bool_, np.uint8, np.complex64, np.float64])
        item.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(item).astype(dtype), item.name))
    elif choice == "initializer_nan":
        item = rng.choice(list(graph.initializer))
        array = numpy_helper.to_array(item).copy()
        array.flat[rng.randrange(array.size)] = rng.choice([np.nan, np.inf, 1e38])
        item.CopyFrom(numpy_helper.from_array(array, item.name))
    elif choice == "op_type":
        rng.choice(list(graph.node)).op_type = rng.choice(["Relu", "Conv", "Softmax", "MatMul", "Unsqueeze",
                                                           "Identity", "Foo", "Loop"])
    elif choice == "attribute":
        node = rng.choice(list(graph.node))
        node.attribute.append(onnx.helper.make_attribute(rng.choice(["alpha", "beta", "transA", "transB",
                                                                     "axis"]),
                                                         rng.choice([float("nan"), 1, 0, -1, 2.5, 10 ** 6])))
    elif choice == "duplicate_name":
        nodes = list(graph.node)
        nodes[rng.randrange(len(nodes))].name = nodes[0].name
    elif choice == "drop_input":
        node = rng.choice([node for node in graph.node if len(node.input) > 1])
        del node.input[-1]
    elif choice == "name_control":
        rng.choice(list(graph.node)).name = "evil\n\x1b[2J" + "n" * rng.choice([10, 20_000])
    elif choice == "value_info":
        graph.value_info.append(onnx.helper.make_tensor_value_info("h", rng.choice([TensorProto.INT64,
                                                                                   TensorProto.STRING]), [2, 3]))
    content = model.SerializeToString()
    if choice == "truncate":
        content = content[: rng.randrange(len(content))]
    elif choice == "flip_bytes":
        data = bytearray(content)
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        content = bytes(data)
    path = directory / "model.onnx"
    path.write_bytes(content)
    if rng.random() < 0.3:
        return Case("onnx_model", 0, ["reference", str(path), "--noise", str(base.noise), "-o",
                                      str(directory / "out.npy"), "--steps", "2"], directory,
                    description=f"reference: {choice}")
    return Case("onnx_model", 0, ["build", str(path), "-o", str(directory / "bundle"), "--target", "ideal",
                                  "--steps", "2"], directory, description=choice)


PRESET_FIELDS = ["module.ports", "module.count", "slm.bit_depth", "slm.response", "gain.per_channel",
                 "gain.beta_min", "gain.beta_max", "alpha.min", "alpha.max", "sigma.gain_min", "sigma.gain_max",
                 "state.voltage_min", "state.injection_clip", "timing.repeats", "timing.readout_window",
                 "nonidealities.seed", "kind", "name", "inherits", "unknown.field"]


def target_yaml(base: Base, rng: random.Random, directory: Path) -> Case:
    import yaml

    path = directory / "target.yaml"
    choice = rng.choice(["field", "field", "field", "not_utf8", "deep", "fifo", "dev_zero", "inherits_fifo",
                         "garbage", "inherits_cycle", "alias_bomb"])
    if choice == "field":
        data: dict = {"inherits": "aoc-48", "name": "fuzzed"}
        dotted = rng.choice(PRESET_FIELDS)
        set_nested(data, dotted.split("."), nasty_value(rng) if rng.random() < 0.7 else rng.choice([0, 1e-300, -0.0]))
        path.write_text(yaml.safe_dump(data))
    elif choice == "not_utf8":
        path.write_bytes(b"inherits: aoc-48\nname: \xff\xfe\n")
    elif choice == "deep":
        depth = rng.choice([100, 10_000])
        path.write_text("inherits: aoc-48\nextra: " + "[" * depth + "]" * depth + "\n")
    elif choice == "fifo":
        os.mkfifo(path)
    elif choice == "dev_zero":
        path = Path("/dev/zero")
    elif choice == "inherits_fifo":
        os.mkfifo(directory / "parent.yaml")
        path.write_text("inherits: parent.yaml\nname: child\n")
    elif choice == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
    elif choice == "inherits_cycle":
        path.write_text("inherits: target.yaml\nname: loop\n")
    else:
        path.write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                        "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nkind: ideal\n")
    return Case("target_yaml", 0, ["build", str(base.model), "-o", str(directory / "bundle"), "--target", str(path),
                                   "--steps", "2"], directory, description=choice)


def set_nested(data: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def noise(base: Base, rng: random.Random, directory: Path) -> Case:
    path = directory / "noise.npy"
    choice = rng.choice(["npz", "empty", "huge_header", "zero_rows", "complex", "object", "wide", "nan",
                         "three_d", "text", "fifo", "int", "fortran"])
    if choice == "npz":
        np.savez(directory / "noise.npz", a=np.zeros((2, 2)))
        (directory / "noise.npz").rename(path)
    elif choice == "empty":
        path.write_bytes(b"")
    elif choice == "huge_header":
        with path.open("wb") as file:
            np.lib.format.write_array_header_1_0(file, {"descr": "<f8", "fortran_order": False,
                                                        "shape": (10 ** 12, 2)})
            file.write(b"\x00" * 64)
    elif choice == "zero_rows":
        np.save(path, np.zeros((0, 2)))
    elif choice == "complex":
        np.save(path, np.ones((3, 2), dtype=np.complex128))
    elif choice == "object":
        np.save(path, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    elif choice == "wide":
        np.save(path, np.zeros((3, 7)))
    elif choice == "nan":
        np.save(path, np.full((3, 2), np.nan))
    elif choice == "three_d":
        np.save(path, np.zeros((2, 2, 2)))
    elif choice == "text":
        path.write_text("1 2\n3 4\n")
    elif choice == "fifo":
        os.mkfifo(path)
    elif choice == "int":
        np.save(path, np.ones((3, 2), dtype=np.int64))
    else:
        np.save(path, np.asfortranarray(np.ones((3, 2))))
    bundle = rng.choice(list(base.bundles.values()))
    return Case("noise", 0, ["simulate", str(bundle), "--noise", str(path), "-o", str(directory / "out.npy"),
                             "--ideal"], directory, description=choice)


def command_line(base: Base, rng: random.Random, directory: Path) -> Case:
    value = str(rng.choice([0, -1, 10 ** 9, 2 ** 63, 2 ** 64, "nan", "inf", "-inf", "1e999", "abc", "", "0x10",
                            "1.5", "-0", "1e-320"]))
    bundle = str(base.bundles["ideal"])
    (directory / "FILE").write_text("x")
    candidates = [
        ["build", str(base.model), "-o", str(directory / "b"), "--target", "ideal", "--steps", value],
        ["build", str(base.model), "-o", str(directory / "b"), "--target", "ideal", "--fp-iterations", value],
        ["simulate", bundle, "--noise", str(base.noise), "-o", str(directory / "o.npy"), "--ideal",
         "--loop-iterations", value],
        ["simulate", bundle, "--noise", str(base.noise), "-o", str(directory / "o.npy"), "--ideal", "--seed", value],
        ["verify", bundle, "--no-twin", "--samples", value],
        ["verify", bundle, "--no-twin", "--samples", "8", "--tolerance", value],
        ["verify", bundle, "--no-twin", "--samples", "8", "--twin-ratio", value],
        ["verify", bundle, "--no-twin", "--samples", "8", "--seed", value],
        ["build", str(base.model), "-o", str(directory / "FILE" / "b"), "--target", "ideal"],
        ["build", str(base.model), "-o", str(directory / "missing" / "b"), "--target", "ideal"],
        ["build", str(base.model), "-o", str(directory), "--target", "ideal"],
        ["build", str(base.model), "-o", str(directory / "b"), "--target", "ideal", "--dump-ir",
         str(directory / "FILE")],
        ["verify", bundle, "--no-twin", "--samples", "8", "--json", str(directory / "missing" / "r.json")],
        ["verify", bundle, "--no-twin", "--samples", "8", "--json", str(directory)],
        ["verify", bundle, "--no-twin", "--samples", "8", "--report", str(directory / "FILE")],
        ["--max-memory", value, "inspect", bundle],
        [rng.choice(["build", "inspect", "verify", "simulate", "reference", "frobnicate", "--bogus"])],
        ["inspect", str(directory / "FILE")],
        ["inspect", "/dev/zero"],
    ]
    return Case("command_line", 0, rng.choice(candidates), directory, description=value)


GENERATORS = {"manifest_value": manifest_value, "manifest_structure": manifest_structure, "payload": payload,
              "containment": containment, "onnx_model": onnx_model, "target_yaml": target_yaml, "noise": noise,
              "command_line": command_line}


def make_case(family: str, seed: int, base: Base, directory: Path) -> Case:
    directory.mkdir(parents=True, exist_ok=True)
    case = GENERATORS[family](base, random.Random(f"{family}:{seed}"), directory)
    case.seed = seed
    return case


# ---------------------------------------------------------------- running a case


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so admc's internal-error handler does not swallow it."""


_watched: list[Path] = []
_outside: list[str] = []


def _audit(event: str, arguments: tuple) -> None:
    if event == "open" and _watched and arguments and isinstance(arguments[0], (str, bytes, os.PathLike)):
        try:
            opened = os.path.realpath(os.fsdecode(arguments[0]))
        except (TypeError, ValueError):
            return
        if any(opened.startswith(str(root)) for root in _watched):
            _outside.append(opened)


sys.addaudithook(_audit)


def _listing(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*")}


def run_case(case: Case, base: Base, timeout: float = 120.0) -> Outcome:
    from admc.cli import main

    outcome = Outcome(case)
    before = _listing(case.directory)
    stdout, stderr = io.StringIO(), io.StringIO()
    _outside.clear()
    _watched[:] = [base.decoy.resolve()]

    def alarm(signum, frame):
        raise CaseTimeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    # Native code (onnxruntime, HiGHS, torch's C++ logging) writes to file descriptor 2 directly: capture it
    # too, so a log line before admc's own counts against the one-line rule.
    native = tempfile.TemporaryFile()
    sys.stderr.flush()
    saved_descriptor = os.dup(2)
    os.dup2(native.fileno(), 2)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            outcome.status = main(case.argv)
    except CaseTimeout:
        outcome.hang = True
    except SystemExit as exit_:  # --help and the like
        outcome.status = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException as error:  # noqa: BLE001 - recording exactly what escaped is the point
        outcome.uncaught = f"{type(error).__name__}: {error}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _watched.clear()
        os.dup2(saved_descriptor, 2)
        os.close(saved_descriptor)
    native.seek(0)
    outcome.outside_reads = sorted(set(_outside))
    outcome.stderr = native.read().decode("utf-8", "replace") + stderr.getvalue()
    native.close()
    if outcome.status == 2:
        lines = outcome.stderr.strip().splitlines()
        outcome.not_one_line = len(lines) != 1 or not lines[0].startswith("admc: error: ")
        after = _listing(case.directory)
        outcome.left_behind = sorted(after - before)
    if outcome.status not in (0, 1, 2) and not outcome.hang and not outcome.uncaught:
        outcome.uncaught = outcome.uncaught or f"exit status {outcome.status}: {outcome.stderr.strip()[:200]}"
    if outcome.status == 1 and case.argv[:1] != ["verify"]:
        outcome.uncaught = f"exit 1 from {case.argv[:1]}"
    if case.must_refuse and outcome.status in (0, 1) and case.argv[0] in ("simulate", "verify", "inspect"):
        outcome.tampered_accepted = True
    return outcome
