"""``admc sweep``: chip-to-chip Monte Carlo (yield, sensitivity) and design-space exploration on Ray.

The spec (``spec``) expands into points (``points``), each built once (``build_cache``); each chip of a point
is a Ray task (``execute``, ``cluster``) whose run on the twin its target's backend makes (``chip``) becomes
one row of the results table (``results``); ``report`` and ``statistics`` turn the table into yields,
sensitivities and Pareto fronts.
"""
