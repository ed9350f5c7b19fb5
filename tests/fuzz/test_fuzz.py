"""A bounded fuzz run (issue 13, item 6): a few hypothesis-chosen seeds per family of bad input, each run
through ``admc.cli.main`` must keep the contract of ``cases.run_case`` (no uncaught exception or hang, one
line on refusal, nothing left behind, no read outside the bundle, no tampered bundle accepted).
``benchmarks/fuzz_full.py`` runs the same families over ≥ 1,000 seeds."""

from __future__ import annotations

import shutil
import warnings

import pytest
from cases import FAMILIES, make_base, make_case, run_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::RuntimeWarning")

EXAMPLES_PER_FAMILY = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_base(tmp_path_factory.mktemp("fuzz-base"))


@pytest.mark.parametrize("family", FAMILIES)
def test_fuzz_family_keeps_the_refusal_contract(base, tmp_path_factory, family):
    @settings(max_examples=EXAMPLES_PER_FAMILY, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2 ** 31))
    def check(seed):
        directory = tmp_path_factory.mktemp(f"{family}-{seed}")
        case = make_case(family, seed, base, directory)
        outcome = run_case(case, base, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)
        assert outcome.kept_contract, (case.description, case.argv, outcome)

    check()
