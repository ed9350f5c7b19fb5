"""Shared fixtures: the ideal target without linear channels, the ``slow`` marker, and builds without the
semidefinite convergence certificate outside the tests about certificates (see ``sdp_certificate_off``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from admc.passes import loop_budget

# tests/models.py is imported as ``models`` by the end-to-end tests.
sys.path.insert(0, str(Path(__file__).parent))


def one_thread_per_worker() -> None:
    """In a parallel run (pytest-xdist), each worker computes on one thread, and so do the processes it starts.

    Why: two workers that each run torch and BLAS on every core of a 2-core machine spin against each other;
    a twin simulation measured 62 s per worker that way against 11.7 s with one thread each (9.4 s alone on
    two). Results do not depend on it: builds already run their BLAS on one thread (``BLAS_THREADS``)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import torch
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


def pytest_configure(config: pytest.Config) -> None:
    one_thread_per_worker()
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "known_bug: a failing test pinning down a reported compiler bug")
    # Registered here too so that ``-p no:xdist`` runs do not warn about the mark this conftest adds.
    config.addinivalue_line("markers", "xdist_group(name): run in the same pytest-xdist worker (--dist loadgroup)")
    config.addinivalue_line("markers", "full_certificates: builds keep the default semidefinite certificate "
                            "(tests in modules named *alpha*, *certificate*, *convergence* get it without the mark)")


# Modules about α selection and convergence certificates build with every default (the SDP included).
FULL_CERTIFICATE_MODULES = ("alpha", "certificate", "convergence", "loop_budget")
DEFAULT_SDP_PHASES = loop_budget.SDP_PHASES


@pytest.fixture(scope="module", autouse=True)
def sdp_certificate_off(request: pytest.FixtureRequest) -> Iterator[None]:
    """Builds in this module skip the semidefinite certificate of the convergence pass (``SDP_PHASES`` = 0).

    Why: the SDP only adds a tighter bound to the manifest's ``convergence`` section (``sdp``; Theorem 1, the
    block bound, the measured iterations and the loop budget are still computed) and costs 0.1-8 CPU-s per build
    (≤ 300 channels); measured on tests/test_model_kinds.py: 84 CPU-s without it, 93 with it (+10 %).
    Tests whose subject it is keep it: ``certify_phase`` called directly is unaffected; modules named in
    ``FULL_CERTIFICATE_MODULES``, modules and tests marked ``full_certificates`` build with every default.
    Module-scoped (autouse runs first within its scope), so the modules' shared bundles are built this way too.
    Subprocesses (CLI runs, Ray workers) are not affected.
    """
    module = request.module.__name__
    if request.node.get_closest_marker("full_certificates") or any(
            word in module for word in FULL_CERTIFICATE_MODULES):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop_budget, "SDP_PHASES", 0)
        yield


@pytest.fixture(autouse=True)
def full_certificates_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked ``full_certificates`` in a module without them gets the default SDP back."""
    if request.node.get_closest_marker("full_certificates"):
        monkeypatch.setattr(loop_budget, "SDP_PHASES", DEFAULT_SDP_PHASES)


@pytest.fixture(scope="session")
def no_linear_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ideal target whose channels all go through σ (forces the fold-input layout)."""
    path = tmp_path_factory.mktemp("targets") / "ideal-no-linear.yaml"
    path.write_text("inherits: ideal\nname: ideal-no-linear\nlinear_channels: false\n")
    return path


# Under pytest-xdist with ``--dist loadgroup`` (the README's test command): the tests that start a local Ray
# instance run in one worker, one after the other; a module whose module-scoped fixture is expensive stays in
# one worker, so that fixture is built once. Without xdist the mark is inert.
XDIST_GROUPS = {
    "test_sweep_ray": "ray",
    "test_packaging": "packaging",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = XDIST_GROUPS.get(item.module.__name__.rsplit(".", 1)[-1]) if item.module is not None else None
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
