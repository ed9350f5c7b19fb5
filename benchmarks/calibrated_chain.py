"""Programs for a measured machine: figures for issue 7 (the chain in machine units, `build --calibration`).

Run: `nice .venv/bin/python benchmarks/calibrated_chain.py [--calibration FILE] [--quick] [--json OUT]`
(the shipped hw48 calibration by default; ~10 min on one core, --quick skips the d=16 network and verify).

For each model: built for aoc-48 without and with `--calibration`, run in the twin with that calibration and
every effect on (discrete mode, noise included); final-sample NRMSE against each bundle's own ideal program.
For the calibrated example also every effect on but one, and the operating-point fit's σ mismatch.
For the shipped example also: α, the ideal loop iterations per step and settle time, against the pre-chain
preset (σ gain programmable in [0.25, 4], β_max 0.3875, written as a YAML inheriting aoc-48); the figure of
each effect alone on the uncompensated program; and `admc verify`'s verdict with the calibration.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from models import (  # noqa: E402
    AdmForm,
    GlueMlp,
    ResidualMlp,
    SinusoidalTime,
    StandardMlp,
    example_inputs,
    export_onnx,
    seeded,
)

from admc.bundle.program import bundle_program  # noqa: E402
from admc.bundle.store import Bundle  # noqa: E402
from admc.compiler.driver import build  # noqa: E402
from admc.core.errors import AdmcError  # noqa: E402
from admc.runtime.executor import IdealExecutor  # noqa: E402
from admc.targets.aoc.calibration import read_calibration  # noqa: E402
from admc.targets.aoc.twin import AocTwin, all_off  # noqa: E402
from admc.verify.chain import verify_bundle  # noqa: E402

DEFAULT_CALIBRATION = "hw48"  # the makers' published calibration, shipped with admc
PRE_CHAIN = """inherits: aoc-48
sigma:
  gain_min: 0.25
  gain_max: 4.0
gain:
  beta_max: 0.3875
  beta_min: 0.0003875
"""
HOLD_OUT = {"adm-form": lambda: AdmForm((16, 12)), "standard-mlp": lambda: StandardMlp((16, 16)),
            "residual": lambda: ResidualMlp(16), "sinusoidal-time": lambda: SinusoidalTime(16),
            "glue": lambda: GlueMlp(12)}


def nrmse(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean((value - reference) ** 2)) / np.sqrt(np.mean(reference ** 2)))


def ideal(bundle: Bundle, noise: np.ndarray):
    program, schedule, alpha = bundle_program(bundle)
    return IdealExecutor(program, alpha).run(schedule, noise)


def twin_error(bundle: Bundle, calibration, noise: np.ndarray, reference: np.ndarray, switches=None,
               iterations: int = 300) -> float:
    twin = AocTwin(bundle, switches, calibration=calibration, switch_on_calibrated=switches is None,
                   loop_iterations=iterations, repeats=1)
    return nrmse(twin.run(noise).trajectory[-1], reference)


def example_figures(model: Path, work: Path, calibration, noise: np.ndarray) -> dict:
    pre_chain = work / "pre-chain.yaml"
    pre_chain.write_text(PRE_CHAIN)
    figures = {}
    for name, options in (("pre-chain preset", {"target": str(pre_chain)}), ("aoc-48", {}),
                          ("aoc-48 --calibration", {"calibration": calibration.path})):
        bundle = Bundle(build(model, work / name.replace(" ", "_"), **options))
        run = ideal(bundle, noise)
        iterations = float(np.mean([sum(step) for step in run.iterations]))
        tau = float(bundle.manifest["target"]["timing"]["loop_iteration_s"])
        figures[name] = {"alpha_max": float(np.max(bundle.array(bundle.manifest["channels"]["alpha"]))),
                         "alpha_mean": float(np.mean(bundle.array(bundle.manifest["channels"]["alpha"]))),
                         "ideal_iterations_per_step": iterations, "settle_time_us_per_step": iterations * tau * 1e6,
                         "bundle": bundle}
    return figures


def per_effect(bundle: Bundle, calibration, noise: np.ndarray, reference: np.ndarray) -> dict:
    full = AocTwin(bundle, calibration=calibration, repeats=1).nonidealities
    off = all_off(full)
    result = {"all off": twin_error(bundle, calibration, noise, reference, off)}
    for name in [field for field in off.__dataclass_fields__ if field != "seed"]:
        if not getattr(full, name).enabled:
            continue
        one = replace(off, **{name: getattr(full, name)})
        try:
            result[name] = twin_error(bundle, calibration, noise, reference, one)
        except Exception as error:  # a loop that diverges under one effect is a figure too
            result[name] = f"failed: {str(error)[:80]}"
    return result


def all_but_one(bundle: Bundle, calibration, noise: np.ndarray, reference: np.ndarray) -> dict:
    """The compensated program with every effect on but one: what each effect's compensation buys."""
    full = AocTwin(bundle, calibration=calibration, repeats=1).nonidealities
    result = {}
    for name in [field for field in full.__dataclass_fields__ if field != "seed"]:
        if not getattr(full, name).enabled:
            continue
        one = replace(full, **{name: replace(getattr(full, name), enabled=False)})
        try:
            result[name] = twin_error(bundle, calibration, noise, reference, one)
        except Exception as error:
            result[name] = f"failed: {str(error)[:80]}"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", default=str(DEFAULT_CALIBRATION))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--skip-example", action="store_true", help="only the hold-out kinds (and d=16)")
    parser.add_argument("--kinds", nargs="*", help="only these models (names as in the report, e.g. d16-256x3)")
    arguments = parser.parse_args()
    calibration = read_calibration(arguments.calibration)
    noise = np.random.default_rng(0).standard_normal((64, 2))
    report: dict = {}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        started = time.perf_counter()
        example = {} if arguments.skip_example else example_figures(ROOT / "examples" / "two_moons.onnx", work,
                                                                      calibration, noise)
        for name, entry in example.items():
            bundle = entry.pop("bundle")
            reference = ideal(bundle, noise).trajectory[-1]
            entry["twin_nrmse_calibrated_all_on"] = twin_error(bundle, calibration, noise, reference)
            if name == "aoc-48":
                entry["per_effect_alone"] = per_effect(bundle, calibration, noise, reference)
            if name == "aoc-48 --calibration":
                entry["all_on_but_one"] = all_but_one(bundle, calibration, noise, reference)
                entry["operating_points"] = {key: value for key, value in
                                             bundle.manifest["calibration"]["operating_points"].items()
                                             if key.startswith(("sigma_error", "channels", "largest"))}
            if not arguments.quick and name != "pre-chain preset":
                verdict = verify_bundle(bundle, 64, 0, twin_options={"calibration": calibration, "repeats": 1})
                entry["verify_passed"] = bool(verdict.passed)
                entry["verify_links"] = {link.name: link.passed for link in verdict.links}
        report["two_moons"] = example
        print(json.dumps(example, indent=1, default=str), flush=True)
        models = {kind: make() for kind, make in HOLD_OUT.items()}
        if not arguments.quick:
            models["d16-256x3"] = AdmForm((256, 256, 256), d=16)
        for index, (kind, module) in enumerate(models.items()):
            if arguments.kinds and kind not in arguments.kinds:
                continue
            d = 16 if kind.startswith("d16") else 2
            path = export_onnx(seeded(module, 20 + index), work / f"{kind}.onnx", inputs=example_inputs(d=d))
            samples = np.random.default_rng(1).standard_normal((32 if d == 16 else 64, d))
            entry = {}
            for label, options in (("uncompensated", {}), ("calibrated", {"calibration": calibration.path})):
                try:
                    bundle = Bundle(build(path, work / f"{kind}-{label}", steps=8 if d == 16 else 16, **options))
                except AdmcError as error:  # e.g. a kind the target refuses
                    entry[label] = f"refused: {error}"
                    continue
                reference = ideal(bundle, samples).trajectory[-1]
                entry[label] = twin_error(bundle, calibration, samples, reference, iterations=200 if d == 16 else 300)
                entry[f"{label}_modules"] = bundle.manifest["report"]["modules_used"]
                entry[f"{label}_alpha_max"] = float(np.max(bundle.array(bundle.manifest["channels"]["alpha"])))
                if not arguments.quick and label == "calibrated":
                    verdict = verify_bundle(bundle, samples.shape[0], 0,
                                            twin_options={"calibration": calibration, "repeats": 1})
                    entry["verify_passed"] = bool(verdict.passed)
                    entry["verify_links"] = {link.name: link.passed for link in verdict.links}
            report[kind] = entry
            print(f"{kind:16s} {entry}", flush=True)
        report["seconds"] = time.perf_counter() - started
    print(json.dumps(report, indent=1, default=str))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
