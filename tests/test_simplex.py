"""Log-domain simplex helpers, checked against scipy's independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from strategies import logits, strategies

import gpo_core as gc
from gpo_core.simplex import safe_log

sizes = st.integers(1, 6)


@given(data=st.data(), n=sizes, shift=st.floats(-1e3, 1e3, allow_subnormal=False))
def test_softmax_is_shift_invariant(data, n, shift):
    z = data.draw(logits(n, batch_shape=(2,)))
    np.testing.assert_allclose(gc.softmax(z + shift), gc.softmax(z), rtol=1e-9, atol=1e-12)
    # A per-row shift (broadcast over the batch) is also invisible.
    shifts = np.array([[shift], [-shift]])
    np.testing.assert_allclose(gc.softmax(z + shifts), gc.softmax(z), rtol=1e-9, atol=1e-12)


@given(data=st.data(), n=sizes)
def test_softmax_matches_scipy_and_lies_on_the_simplex(data, n):
    z = data.draw(logits(n, batch_shape=(3,)))
    p = gc.softmax(z)
    assert p.shape == z.shape and p.dtype == np.float64
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(p, scipy.special.softmax(z, axis=-1), rtol=1e-9, atol=1e-15)


@given(data=st.data(), n=sizes)
def test_logsumexp_and_log_softmax_match_scipy(data, n):
    z = data.draw(logits(n, batch_shape=(2,)))
    lse = gc.logsumexp(z)
    assert lse.shape == (2,)
    np.testing.assert_allclose(lse, scipy.special.logsumexp(z, axis=-1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        gc.log_softmax(z), scipy.special.log_softmax(z, axis=-1), rtol=1e-9, atol=1e-9
    )
    # log_softmax is normalised: its own logsumexp is 0.
    np.testing.assert_allclose(gc.logsumexp(gc.log_softmax(z)), 0.0, atol=1e-12)


def test_logsumexp_is_stable_for_huge_logits():
    z = np.array([1e6, 1e6, -1e6])
    assert gc.logsumexp(z) == pytest.approx(1e6 + np.log(2.0), rel=1e-15)
    np.testing.assert_array_equal(gc.softmax(z), [0.5, 0.5, 0.0])


@given(data=st.data(), n=sizes)
def test_entropy_matches_scipy_and_is_bounded(data, n):
    p = data.draw(strategies(n))
    h = gc.entropy(p)
    assert float(h) == pytest.approx(float(scipy.stats.entropy(p)), abs=1e-12)
    assert -1e-12 <= h <= np.log(n) + 1e-12


def test_entropy_extremes():
    # A vertex has entropy 0 (0 log 0 = 0), the uniform strategy has log n.
    assert gc.entropy(np.array([0.0, 1.0, 0.0])) == 0.0
    assert gc.entropy(np.full(4, 0.25)) == pytest.approx(np.log(4.0), rel=1e-15)


@given(data=st.data(), n=sizes)
def test_kl_matches_scipy_and_is_nonnegative(data, n):
    p = data.draw(strategies(n), label="p")
    q = data.draw(strategies(n), label="q")
    expected = float(np.sum(scipy.special.rel_entr(p, q)))
    got = float(gc.kl(p, q))
    if np.isinf(expected):
        assert np.isinf(got) and got > 0
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert got >= -1e-12
    assert float(gc.kl(p, p)) == pytest.approx(0.0, abs=1e-12)


def test_kl_is_infinite_off_the_support():
    assert gc.kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == np.inf
    # ... but a zero of p where q is zero costs nothing.
    assert gc.kl(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0


def test_uniform_logits():
    z = gc.uniform_logits(4, batch_shape=(2, 3))
    assert z.shape == (2, 3, 4) and z.dtype == np.float64
    np.testing.assert_array_equal(gc.softmax(z), np.full((2, 3, 4), 0.25))


@given(data=st.data(), n=sizes)
def test_safe_log_round_trips_faces_with_exact_zeros(data, n):
    # Zero probabilities get a finite logit whose softmax is an exact 0 (simplex.py's promise),
    # so e.g. KL to a distribution with the same support stays finite.
    p = data.draw(strategies(n))
    z = safe_log(p)
    assert np.all(np.isfinite(z))
    q = gc.softmax(z)
    np.testing.assert_array_equal(q == 0, p == 0)
    np.testing.assert_allclose(q, p, rtol=1e-12)
    assert np.isfinite(gc.kl(q, p))


@pytest.mark.parametrize(
    ("p", "match"),
    [
        ([-0.5, 1.5], r"p must be a probability vector, got negative entries"),
        ([0.2, 0.2], r"p must sum to 1 over its last axis .*got sums 0\.4"),
        ([np.nan, 1.0], r"p must be finite"),
        ([], r"p must have at least one entry on its last axis .*shape \(0,\)"),
        (0.5, r"p must have at least one entry on its last axis .*shape \(\)"),
    ],
)
def test_entropy_refuses_what_is_not_a_distribution(p, match):
    # entropy([-0.5, 1.5]) was -0.608
    with pytest.raises(ValueError, match=match):
        gc.entropy(p)


def test_entropy_refuses_strings():
    with pytest.raises(TypeError, match=r"p must be a real numeric array, got the string 'ab'"):
        gc.entropy("ab")


@pytest.mark.parametrize(
    ("p", "q", "error", "match"),
    [
        ([0.5, 0.5], [1 / 3] * 3, ValueError, r"p and q must be distributions over the same "
         r"actions .*shapes \(2,\) and \(3,\)"),
        (np.full((2, 2), 0.5), np.full((3, 2), 0.5), ValueError, r"shapes \(2, 2\) and \(3, 2\)"),
        ([0.5, 0.5], [1.5, -0.5], ValueError, r"q must be a probability vector"),
        ([0.9, 0.9], [0.5, 0.5], ValueError, r"p must sum to 1"),
        ([0.5, 0.5], "ab", TypeError, r"q must be a real numeric array"),
        ([], [], ValueError, r"p must have at least one entry"),
    ],
)
def test_kl_names_its_bad_argument(p, q, error, match):
    with pytest.raises(error, match=match):
        gc.kl(p, q)


@pytest.mark.parametrize("fn", [gc.softmax, gc.log_softmax, gc.logsumexp])
@pytest.mark.parametrize(
    ("z", "error", "match"),
    [
        ([], ValueError, r"z must have at least one entry on its last axis .*shape \(0,\)"),
        (np.zeros((2, 0)), ValueError, r"shape \(2, 0\)"),
        (1.0, ValueError, r"shape \(\)"),
        ("ab", TypeError, r"z must be a real numeric array, got the string 'ab'"),
        ([[1.0], [1.0, 2.0]], TypeError, r"z must be a real numeric array"),
    ],
)
def test_softmax_family_names_its_bad_argument(fn, z, error, match):
    # an empty z leaked numpy's "zero-size array to reduction operation maximum"
    with pytest.raises(error, match=match):
        fn(z)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(logits=np.zeros(3), utilities=np.ones(2)), ValueError,
         r"utilities must have 3 entries on its last axis .*got shape \(2,\)"),
        (dict(logits=np.zeros((2, 3)), utilities=np.ones((4, 3))), ValueError,
         r"utilities must have 3 entries .*leading axes that broadcast .*got shape \(4, 3\)"),
        (dict(logits=np.zeros(3), utilities=np.ones(3), alpha=0.1, log_magnet=np.zeros(2)),
         ValueError, r"log_magnet must have 3 entries .*got shape \(2,\)"),
        (dict(logits=np.zeros(0), utilities=np.ones(0)), ValueError,
         r"logits must have at least one entry on its last axis"),
        (dict(logits="ab", utilities=np.ones(2)), TypeError, r"logits must be a real numeric array"),
        (dict(logits=np.zeros(2), utilities="x"), TypeError, r"utilities must be a real numeric"),
    ],
)
def test_mirror_step_names_its_bad_argument(kwargs, error, match):
    # mismatched shapes leaked numpy's "operands could not be broadcast together"
    with pytest.raises(error, match=match):
        gc.mirror_step(eta=1.0, **kwargs)
