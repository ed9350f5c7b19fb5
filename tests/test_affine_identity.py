"""Per-feature time terms keep the identity implicit (``ir/affine.py``): O(n) memory, not a dense n × n eye.

Every operation on such a term must give what the dense identity gives, exactly.
"""

from __future__ import annotations

import numpy as np

from admc.ir.adm import Atom, TimeTerm
from admc.ir.affine import Form, Identity, TimeValue


def _form_with_time(features: int) -> Form:
    # A per-feature time value: sin(k t) for k = 1..features.
    value = TimeValue(lambda times, cache: np.sin(np.outer(times, np.arange(1, features + 1))), (features,))
    return Form.of_atom(Atom("x", "tanh"), features, (features,)).plus_time(value, "time bias")


def _dense(term: TimeTerm) -> TimeTerm:
    matrix = np.eye(term.matrix.size) if isinstance(term.matrix, Identity) else term.matrix
    return TimeTerm(matrix, term.function, term.description)


def test_a_per_feature_time_term_is_an_implicit_identity_with_the_dense_values() -> None:
    form = _form_with_time(7)
    term = form.time_terms[0]
    assert isinstance(term.matrix, Identity)
    times = np.linspace(0.0, 1.0, 5)
    np.testing.assert_array_equal(term.evaluate(times), _dense(term).evaluate(times))
    rows = np.array([5, 0, 3])
    selected = form.selected(rows).time_terms[0]
    np.testing.assert_array_equal(selected.evaluate(times), _dense(term).evaluate(times)[:, rows])
    factors = np.linspace(-2.0, 2.0, 7)
    scaled = form.scaled(factors).time_terms[0]
    np.testing.assert_array_equal(scaled.evaluate(times), _dense(term).evaluate(times) * factors)
    matrix = np.random.default_rng(0).standard_normal((3, 7))
    projected = form.linear(matrix).time_terms[0]
    np.testing.assert_allclose(projected.evaluate(times), _dense(term).evaluate(times) @ matrix.T, rtol=1e-14)
