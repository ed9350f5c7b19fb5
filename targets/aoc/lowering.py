"""The AOC lowering as named passes (docs/design.md §4): each takes the lowering state to a new one.

Requires: a ``CompiledProgram`` from the spine for an ``AocTarget`` (read, never changed). Guarantees: the
passes run the steps of ``backend.py`` in the order and with the arithmetic of one fixed pipeline — state
scaling → tiling and placement → routing → α selection → gain floors → gains and transmissions → σ fit and
fold (the identity without a declared σ shape) → quantisation → realised program → emission — each returning
a new :class:`AocLowering` (``dataclasses.replace``); emission returns the lowered ``CompiledProgram``, a
new one. Checks (``lowering_checks.py``) sit beside the passes they check. The calibrated lowering
(``calibrated_build.py``) shares the state and the passes it has in common with this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from admc.passes.manager import NOT_IR, BackendPass, Lowering
from admc.targets.aoc import sigma_build
from admc.targets.aoc.backend import (
    alpha_in_range,
    gain_floors,
    gains_and_transmissions,
    place,
    quantise_set,
    realised_blocks,
    route,
    scale_states,
    weight_errors,
)
from admc.targets.aoc.emit import aoc_section, lowered_report
from admc.targets.aoc.image_sets import image_set_factors
from admc.targets.aoc.lowering_checks import (
    alpha_range_check,
    gains_check,
    placement_check,
    quantisation_check,
    routing_check,
    state_scaling_check,
)


@dataclass(frozen=True)
class AocLowering:
    """What the AOC lowering has computed so far (None: not yet). ``spine`` is the compiled spine program."""

    spine: Any = field(metadata=NOT_IR)
    layout: str = "auto"
    scaled: Any = None  # the voltage-scaled BlockProgram (with each phase's blocks when Δt is in the images)
    headroom: list | None = None
    placement: Any = None
    tile_rows: tuple | None = None  # each tile's weights and the channels its rows feed (channel_gains.TileRows)
    alpha_demand: tuple | None = None  # the rows α must bring within β_max, when not ``tile_rows`` (calibrated)
    routing: Any = None
    alpha: Any = None
    alpha_selection: Any = None
    floors: tuple | None = None
    beta: Any = None
    transmissions: tuple | None = None
    sigma_scales: Any = None
    image_sets: tuple | None = None
    realised: Any = None  # the program the emitted weights realise
    weight_errors: list | None = None

    @property
    def target(self) -> Any:
        return self.spine.target


def scale(state: AocLowering) -> AocLowering:
    scaled, headroom = scale_states(state.spine, state.target)
    return replace(state, scaled=scaled, headroom=headroom)


def place_tiles(state: AocLowering) -> AocLowering:
    placement, tile_rows = place(state.scaled, state.target, state.layout)
    return replace(state, placement=placement, tile_rows=tile_rows)


def route_tiles(state: AocLowering) -> AocLowering:
    return replace(state, routing=route(state.scaled, state.placement))


def choose_alpha_in_range(state: AocLowering) -> AocLowering:
    """The α pass, once, with the gain range known (the driver gave the runs before it a settling α only)."""
    demand = state.tile_rows if state.alpha_demand is None else state.alpha_demand
    selection = alpha_in_range(state.spine, state.scaled, demand, state.target)
    return replace(state, alpha=selection.alpha, alpha_selection=selection)


def floor_gains(state: AocLowering) -> AocLowering:
    return replace(state, floors=tuple(gain_floors(state.scaled, state.placement, state.spine.schedule,
                                                   state.target)))


def set_gains(state: AocLowering) -> AocLowering:
    beta, transmissions = gains_and_transmissions(state.placement, state.tile_rows, state.alpha, state.target,
                                                  state.floors)
    return replace(state, beta=beta, transmissions=tuple(transmissions))


def fit_and_fold_sigma(state: AocLowering) -> AocLowering:
    scales = sigma_build.fit(state.spine, state.scaled, state.target, state.alpha)  # None: no σ shape declared
    if scales is None:
        return state
    transmissions, beta = sigma_build.fold(scales, state.scaled, state.placement, state.transmissions, state.beta,
                                           state.floors, state.target.gain.per_channel)
    return replace(state, sigma_scales=scales, transmissions=tuple(transmissions), beta=beta)


def quantise_images(state: AocLowering) -> AocLowering:
    """One image set, or one per distinct step factor when Δt is in the images (no per-channel gains)."""
    target = state.target
    set_factors = [None] if target.gain.per_channel else image_set_factors(state.spine.schedule)
    return replace(state, image_sets=tuple(quantise_set(state.placement, state.scaled, state.transmissions,
                                                        factors, target) for factors in set_factors))


def realise(state: AocLowering) -> AocLowering:
    """The weights the images and gains realise: per image set, and the first set's as the realised program."""
    image_sets = state.image_sets
    if state.sigma_scales is not None:
        image_sets = tuple(sigma_build.effective_image_set(image_set, state.sigma_scales, state.scaled,
                                                           state.placement, state.target.module.ports)
                           for image_set in image_sets)
    achieved = {image_set.factors: realised_blocks(state.scaled, state.placement, image_set, state.beta, state.alpha)
                for image_set in image_sets}
    scaled = state.scaled if state.target.gain.per_channel else replace(state.scaled, phase_blocks=achieved)
    first = image_sets[0].factors
    realised = replace(scaled, blocks=[replace(block, matrix=matrix)
                                       for block, matrix in zip(scaled.blocks, achieved[first], strict=True)])
    return replace(state, scaled=scaled, image_sets=image_sets, realised=realised,
                   weight_errors=weight_errors(scaled, achieved[first], first))


def lowered_program(state: AocLowering, sections: dict, payloads: dict[str, bytes]) -> Any:
    """The lowered ``CompiledProgram``: a new one, the spine's with the lowering's program, α, report,
    sections and payloads."""
    spine = state.spine
    return replace(spine, program=state.scaled, alpha=state.alpha, alpha_selection=state.alpha_selection,
                   report=lowered_report(spine.report, state.target, state.placement),
                   extra_sections={**spine.extra_sections, **sections},
                   extra_payloads={**spine.extra_payloads, **payloads}, block_arrays=False,
                   realised_program=state.realised)


def section_and_payloads(state: AocLowering, extra_lines: tuple[str, ...] = ()) -> tuple[dict, dict[str, bytes]]:
    return aoc_section(state.target, state.scaled, state.alpha, state.placement, state.routing, state.beta,
                       state.image_sets, state.headroom, state.weight_errors, extra_lines)


def emit_program(state: AocLowering) -> Any:
    """The manifest's ``aoc`` section (with the σ compensation's record, if any) and its payloads."""
    if state.sigma_scales is None:
        section, payloads = section_and_payloads(state)
        return lowered_program(state, {"aoc": section}, payloads)
    sigma_section, sigma_payloads, line = sigma_build.record(state.sigma_scales, state.target)
    section, payloads = section_and_payloads(state, (line,))
    return lowered_program(state, {"aoc": {**section, "sigma_compensation": sigma_section}},
                           {**payloads, **sigma_payloads})


STATE_SCALING = BackendPass("state scaling", scale, state_scaling_check)
PLACEMENT = BackendPass("tiling and placement", place_tiles, placement_check)
ROUTING = BackendPass("routing", route_tiles, routing_check)
ALPHA_IN_RANGE = BackendPass("α selection", choose_alpha_in_range, alpha_range_check)
GAIN_FLOORS = BackendPass("gain floors", floor_gains)
REALISED_PROGRAM = BackendPass("realised program", realise)
EMISSION = BackendPass("emission", emit_program)  # the driver's check of the whole lowering follows it

NOMINAL_PASSES = (STATE_SCALING, PLACEMENT, ROUTING, ALPHA_IN_RANGE, GAIN_FLOORS,
                  BackendPass("gains and transmissions", set_gains, gains_check),
                  BackendPass("σ fit and fold", fit_and_fold_sigma, gains_check),
                  BackendPass("quantisation", quantise_images, quantisation_check),
                  REALISED_PROGRAM, EMISSION)


def nominal_lowering(compiled: Any, layout: str) -> Lowering:
    """The lowering for the target as described (no measured machine)."""
    return Lowering(AocLowering(compiled, layout), NOMINAL_PASSES)
