"""The Skellam mechanism's math: the noise the nodes draw, the RDP bound against the exact Renyi divergence, the
(epsilon, delta) conversion against the Gaussian's exact privacy curve and published figures, and calibration."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from examples import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from hpf.federation.privacy.skellam import (
    ALPHAS,
    MAX_MU,
    ComponentNoise,
    calibrate,
    epsilon_of,
    noise_sd,
    rdp_skellam,
    rdp_to_epsilon,
    sample_shares,
)

NODES = 5
SLOTS = 200_000


def node_seed(i: int) -> bytes:
    return f"test-run/node-{i}".encode()


def assert_moments(draws: np.ndarray, mu: float) -> None:
    """Mean and variance of i.i.d. Sk(mu) draws within 5 standard errors of 0 and 2*mu.

    The sample variance's standard error uses the exact excess kurtosis of Sk(mu), 1 / (2 mu).
    """
    n = draws.size
    x = draws.astype(np.float64)
    var = 2.0 * mu
    assert abs(float(x.mean())) <= 5.0 * math.sqrt(var / n)
    se_var = var * math.sqrt(2.0 / (n - 1) + 1.0 / (2.0 * mu) / n)
    assert abs(float(x.var(ddof=1)) - var) <= 5.0 * se_var


# --- the noise a node draws ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [3.0, 1234.5, 2.0**45])
def test_nodes_shares_sum_to_skellam_of_the_policy_size(mu: float) -> None:
    mus = np.full(SLOTS, mu)
    shares = [sample_shares(node_seed(i), mus, NODES) for i in range(NODES)]
    assert all(s.dtype == np.int64 and s.shape == (SLOTS,) for s in shares)
    assert_moments(sum(shares[1:], shares[0]), mu)
    assert_moments(shares[0], mu / NODES)


def test_a_single_node_draws_the_largest_mu_in_many_exact_pieces() -> None:
    """mu = MAX_MU with one participant: each Poisson is the sum of 1024 pieces of mean 2**40."""
    assert_moments(sample_shares(b"solo", np.full(2048, MAX_MU), 1), MAX_MU)


def test_shares_are_deterministic_in_seed_mus_and_participants() -> None:
    mus = np.array([0.0, 3.0, 1234.5, 2.0**45, 0.0, 7.0] * 50)
    first = sample_shares(b"run-1/node-a", mus, 3)
    assert np.array_equal(first, sample_shares(b"run-1/node-a", mus, 3))
    assert not np.array_equal(first, sample_shares(b"run-1/node-b", mus, 3))
    assert not np.array_equal(first, sample_shares(b"run-1/node-a", mus, 4))
    assert np.all(first[mus == 0.0] == 0)  # no noise on a slot with mu 0
    assert np.count_nonzero(first[mus > 0.0]) > 0


def test_share_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="2\\*\\*62"):
        sample_shares(b"s", np.array([2.0**63]), 1)
    sample_shares(b"s", np.array([2.0**63]), 4)  # the per-node mean is what counts: 2**61
    with pytest.raises(ValueError, match="participants"):
        sample_shares(b"s", np.array([1.0]), 0)
    with pytest.raises(ValueError, match=">= 0"):
        sample_shares(b"s", np.array([-1.0]), 1)
    with pytest.raises(ValueError, match=">= 0"):
        sample_shares(b"s", np.array([math.nan]), 1)
    assert sample_shares(b"s", np.zeros(0), 2).shape == (0,)


def test_noise_sd_is_the_skellam_standard_deviation() -> None:
    assert noise_sd(8.0) == 4.0
    assert noise_sd(0.0) == 0.0


# --- RDP bound vs the exact Renyi divergence ------------------------------------------------------------------


@cache
def skellam_logpmf(mu: float) -> tuple[int, np.ndarray]:
    """(kmax, log P(k) for k = -kmax..kmax) of Sk(mu), from the Poisson convolution in log space.

    P(k) = sum_j Pois(j + k; mu) Pois(j; mu) for k >= 0 and P(-k) = P(k); Poisson log-pmfs from math.lgamma.
    """
    kmax = int(40 * math.sqrt(mu)) + 400
    n = kmax + int(mu + 60 * math.sqrt(mu)) + 200
    log_mu = math.log(mu)
    lp = np.array([-mu + j * log_mu - math.lgamma(j + 1.0) for j in range(n + 1)])
    half = np.empty(kmax + 1)
    for k in range(kmax + 1):
        terms = lp[k:] + lp[: n + 1 - k]
        top = float(terms.max())
        half[k] = top + math.log(float(np.exp(terms - top).sum()))
    logpmf = np.concatenate([half[:0:-1], half])
    assert abs(float(np.exp(logpmf).sum()) - 1.0) < 1e-11
    return kmax, logpmf


def exact_rdp(mu: float, shift: int, alpha: float) -> float:
    """D_alpha(Sk(mu) || Sk(mu) + shift), exactly up to rounding (the same both ways round: Sk is symmetric)."""
    kmax, lp = skellam_logpmf(mu)
    k = np.arange(-kmax + shift, kmax + 1)
    terms = alpha * lp[k + kmax] + (1.0 - alpha) * lp[k - shift + kmax]
    top = float(terms.max())
    assert terms[0] - top < -50.0 and terms[-1] - top < -50.0, "support too narrow for this order"
    return (top + math.log(float(np.exp(terms - top).sum()))) / (alpha - 1.0)


# Largest bound / exact ratio seen per mu over shift in {1, 3} and alpha in {2, 5, 20}, plus a small margin:
# 1.734 at mu = 10 (shift 3, alpha 20), 1.025 at mu = 100 (shift 3, alpha 20), 1.0011 at mu = 1000 (shift 1,
# alpha 2). At mu = 10 and alpha = 20 the exact divergence falls below the Gaussian's alpha*shift**2/(4 mu),
# which the bound never goes under; the discreteness surcharge itself stays within 1.12x of the Gaussian term.
TIGHTNESS = {10.0: 1.75, 100.0: 1.03, 1000.0: 1.002}


@pytest.mark.parametrize("mu", sorted(TIGHTNESS))
@pytest.mark.parametrize("shift", [1, 3])
@pytest.mark.parametrize("alpha", [2, 5, 20])
def test_rdp_bound_covers_the_exact_divergence(mu: float, shift: int, alpha: int) -> None:
    exact = exact_rdp(mu, shift, alpha)
    bound = rdp_skellam(alpha, mu, shift, shift)
    assert exact <= bound <= TIGHTNESS[mu] * exact
    if mu >= 1000.0:  # large mu: close to the Gaussian mechanism at the same variance 2 mu
        assert bound <= 1.002 * alpha * shift**2 / (4.0 * mu)


@pytest.mark.parametrize("mu", sorted(TIGHTNESS))
@pytest.mark.parametrize("alpha", [2, 5, 20])
def test_rdp_bound_covers_a_vector_shift(mu: float, alpha: int) -> None:
    """Shift (2, 1, 1): L1 4, L2 sqrt(6); independent coordinates, so the exact divergence is the sum."""
    exact = exact_rdp(mu, 2, alpha) + 2.0 * exact_rdp(mu, 1, alpha)
    assert exact <= rdp_skellam(alpha, mu, 4, math.sqrt(6.0)) <= TIGHTNESS[mu] * exact


def test_fractional_orders_use_the_next_integer_order() -> None:
    assert rdp_skellam(2.5, 10.0, 1, 1) == rdp_skellam(3, 10.0, 1, 1)
    assert rdp_skellam(1.01, 10.0, 1, 1) == rdp_skellam(2, 10.0, 1, 1)
    assert exact_rdp(10.0, 1, 2.5) <= rdp_skellam(2.5, 10.0, 1, 1)


@pytest.mark.parametrize(("alpha", "variance", "l1", "l2"), [(2, 7.0, 1, 1), (17, 300.0, 9, 5), (200, 1e6, 40, 12)])
def test_rdp_is_the_papers_formula_at_variance_two_mu(alpha: int, variance: float, l1: int, l2: int) -> None:
    """Agarwal-Kairouz-Liu state the bound for Skellam noise of variance V: here Sk(mu) has V = 2 mu."""
    paper = alpha * l2**2 / (2 * variance) + min(
        ((2 * alpha - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance)
    )
    assert rdp_skellam(alpha, variance / 2.0, l1, l2) == pytest.approx(paper, rel=1e-14)


def test_rdp_inputs_are_checked() -> None:
    assert rdp_skellam(2, 0.0, 1, 1) == math.inf
    for bad in [(1.0, 1.0, 1, 1), (0.5, 1.0, 1, 1), (2, -1.0, 1, 1), (2, 1.0, 0, 1), (2, 1.0, 1, -1)]:
        with pytest.raises(ValueError):
            rdp_skellam(*bad)


# --- RDP -> (epsilon, delta) ----------------------------------------------------------------------------------


def gaussian_exact_epsilon(sigma: float, delta: float) -> float:
    """The exact epsilon of the Gaussian mechanism (sensitivity 1) at delta: Balle and Wang 2018, Theorem 8."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    def delta_at(eps: float) -> float:
        return phi(0.5 / sigma - eps * sigma) - math.exp(eps) * phi(-0.5 / sigma - eps * sigma)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if delta_at(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("sigma", [0.8, 2.0, 5.0, 20.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-9])
def test_conversion_on_the_gaussian_curve(sigma: float, delta: float) -> None:
    """Between the Gaussian's exact epsilon (no conversion can beat it) and the classical conversion's optimum
    over all real orders, rho + 2 sqrt(rho log(1/delta)) with rho = 1 / (2 sigma**2)."""
    rho = 1.0 / (2.0 * sigma**2)
    improved = rdp_to_epsilon([a * rho for a in ALPHAS], delta)
    classical = rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))
    assert 0.0 < gaussian_exact_epsilon(sigma, delta) < improved < classical


def test_conversion_matches_published_figures() -> None:
    """Two values from the tests of Google's dp_accounting RDP accountant, which uses the same conversion:
    constant RDP 1.1 at orders 2..32 gives 1.32783806176 at delta 1e-5, and the Gaussian with noise multiplier
    4.530877117 gives epsilon 1 at delta 1e-6 over the orders 1.001, 1.002, ..., 99.999."""
    assert rdp_to_epsilon([1.1] * 31, 1e-5, range(2, 33)) == pytest.approx(1.32783806176, abs=1e-10)
    orders = [0.001 * i for i in range(1001, 100_000)]
    sigma = 4.530877117
    assert rdp_to_epsilon([a / (2 * sigma**2) for a in orders], 1e-6, orders) == pytest.approx(1.0, abs=1e-7)


def test_conversion_inputs_are_checked() -> None:
    for delta in (0.0, 1.0, -1e-6):
        with pytest.raises(ValueError, match="delta"):
            rdp_to_epsilon([1.0], delta, [2])
    with pytest.raises(ValueError, match="one RDP value per order"):
        rdp_to_epsilon([1.0, 2.0], 1e-6, [2])
    with pytest.raises(ValueError, match="> 1"):
        rdp_to_epsilon([1.0], 1e-6, [1.0])


def test_epsilon_of_composes_components() -> None:
    one = ComponentNoise(3, 2)
    twice = epsilon_of([50.0, 50.0], [one, one], 1e-6)
    rdp = [2.0 * rdp_skellam(a, 50.0, 3, 2) for a in ALPHAS]
    assert twice == pytest.approx(rdp_to_epsilon(rdp, 1e-6), rel=1e-15)
    assert epsilon_of([50.0], [one], 1e-6) < twice
    assert epsilon_of([100.0], [one], 1e-6) < epsilon_of([50.0], [one], 1e-6)
    with pytest.raises(ValueError, match="one mu per component"):
        epsilon_of([50.0], [one, one], 1e-6)


# --- calibration ----------------------------------------------------------------------------------------------

MIXED = [ComponentNoise(1, 1), ComponentNoise(120, 120), ComponentNoise(40, 7)]


@pytest.mark.parametrize(
    ("comps", "epsilon", "delta"),
    [
        ([ComponentNoise(1, 1)], 1.0, 1e-6),
        ([ComponentNoise(120, 120)], 1.0, 1e-6),
        (MIXED, 0.3, 1e-9),
        (MIXED, 8.0, 1e-3),
    ],
)
def test_calibrate_is_safe_and_tight(comps: list[ComponentNoise], epsilon: float, delta: float) -> None:
    mus = calibrate(comps, epsilon, delta)
    assert epsilon_of(mus, comps, delta) <= epsilon
    assert epsilon_of([0.999 * m for m in mus], comps, delta) > epsilon
    s = mus[0] / comps[0].l2 ** 2
    for m, c in zip(mus, comps, strict=True):
        assert m / c.l2**2 == pytest.approx(s, rel=1e-15)


def test_calibrate_gives_the_same_bits_everywhere() -> None:
    """Nodes and client derive the noise from the policy independently: the result is pinned bit for bit."""
    assert calibrate([ComponentNoise(1, 1)], 1.0, 1e-6) == [float.fromhex("0x1.5967e4ea00000p+3")]
    assert calibrate([ComponentNoise(120, 120)], 1.0, 1e-6) == [float.fromhex("0x1.48767ba200000p+3") * 14400]
    assert calibrate(MIXED, 0.3, 1e-9) == calibrate(list(MIXED), 0.3, 1e-9)


def test_calibrate_adds_more_noise_for_a_smaller_epsilon() -> None:
    mus = [calibrate(MIXED, eps, 1e-6) for eps in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0)]
    for more, less in zip(mus, mus[1:], strict=False):
        assert all(a > b for a, b in zip(more, less, strict=True))


def test_calibrate_inputs_are_checked() -> None:
    comps = [ComponentNoise(1, 1)]
    for eps in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon"):
            calibrate(comps, eps, 1e-6)
    for delta in (0.0, 1.0, 2.0, math.nan):
        with pytest.raises(ValueError, match="delta"):
            calibrate(comps, 1.0, delta)
    with pytest.raises(ValueError, match="at least one component"):
        calibrate([], 1.0, 1e-6)
    with pytest.raises(ValueError, match="out of reach"):
        calibrate(comps, 1e-4, 1e-9)  # below what any noise is accounted at over the supported orders


@pytest.mark.parametrize(("l1", "l2"), [(0, 1), (1, 0), (-3, -3), (1, 2), (True, 1)])
def test_component_sensitivities_are_checked(l1: int, l2: int) -> None:
    with pytest.raises(ValueError, match="sensitivit|l1|l2"):
        ComponentNoise(l1, l2)
    with pytest.raises(ValueError):
        ComponentNoise(1.5, 1)  # type: ignore[arg-type]


@st.composite
def components(draw: st.DrawFn) -> ComponentNoise:
    l2 = draw(st.integers(1, 300))
    return ComponentNoise(draw(st.integers(l2, l2 * l2 + 1)), l2)


@settings(max_examples=budget(40), deadline=None)
@given(
    comps=st.lists(components(), min_size=1, max_size=4),
    epsilon=st.floats(0.1, 10.0),
    log10_delta=st.floats(-9.0, -3.0),
)
def test_calibrated_noise_always_meets_the_target(
    comps: list[ComponentNoise], epsilon: float, log10_delta: float
) -> None:
    delta = 10.0**log10_delta
    mus = calibrate(comps, epsilon, delta)
    assert epsilon_of(mus, comps, delta) <= epsilon
    assert all(m > 0.0 for m in mus)
