"""The distributed Skellam mechanism: its privacy accounting, its calibration and one node's noise share.

In a differentially private aggregate every participating node adds integer noise to every slot before the
homomorphic sum, so no party ever holds an un-noised total. Skellam noise fits this exactly: it is an integer
(it survives the modular slot arithmetic without rounding) and it is closed under addition, so ``n`` nodes each
adding ``Sk(mu / n)`` give a sum that carries exactly ``Sk(mu)``.

Conventions used throughout this module: ``Sk(mu)`` is ``Poisson(mu) - Poisson(mu)``, variance ``2 * mu``.

A query has several components (COUNT, SUM(x), SUM(x*x), ...), each with integer sensitivities: ``l1`` and
``l2``, the largest L1 and L2 norms by which one person can change that component's vector of cells. Component
``j`` gets ``mu_j = s * l2_j**2`` for one common scale ``s``; the release's Renyi DP is the sum of the
components' (RDP composes additively) and is converted to (epsilon, delta)-DP.

Everything that decides a privacy guarantee (:func:`rdp_skellam`, :func:`rdp_to_epsilon`,
:func:`epsilon_of`, :func:`calibrate`) uses Python floats and ``math`` only, so every node and the client
compute bit-identical noise sizes from the same policy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_MU = 2.0**50
"""The largest ``mu`` a component's cells may carry; a caller coarsens a sum's unit to stay below it.

Two reasons. Sampling: numpy's Poisson sampler (rejection in doubles) is as close to a true Poisson as its
floating-point arithmetic allows, and that arithmetic coarsens as the mean grows; up to a mean of ``2**40`` a
double still resolves ``2**-12`` of a unit, so an integer outcome is never decided by rounding.
:func:`sample_shares` therefore splits a mean into pieces of at most ``2**40``, and ``mu <= 2**50`` bounds that
at 1024 pieces per draw even for a single participant. (The generator is PCG64, seeded from a secret per run
through HKDF: not a cryptographic generator, but nobody sees its output except inside sums with data.)
Slot range: the noise's standard deviation is
then at most ``2**25.5``, so even a 20-standard-deviation draw stays below ``2**30``, one limb, and a noised
partial never needs many more bits than the un-noised one.
"""

ALPHAS: tuple[int, ...] = (
    *range(2, 257),
    *(288, 320, 352, 384, 448, 512, 576, 640, 768, 896, 1024, 1280, 1536, 1792, 2048),
    *(2560, 3072, 4096, 5120, 6144, 8192, 12288, 16384),
)
"""Renyi orders the accounting minimises over: every integer up to 256 (where the optimum lies for epsilon of
about 0.5 and above), then a sparser tail that small epsilons and small deltas need (the optimal order grows
like ``sqrt(log(1/delta) / rho)``). All are integers, the orders the Skellam bound is proven for."""

_PIECE_MEAN = 2.0**40  # largest Poisson mean drawn in one numpy call (see MAX_MU)
_MAX_SHARE_MEAN = 2.0**62  # a node's per-Poisson mean above this would need over 2**22 pieces per slot
_MAX_DRAWS_PER_CALL = 1 << 22  # bounds the memory of one poisson call (pieces x slots x 2 variates)
_PRECISION = 1e-9  # relative precision of calibrate's scale s (width of the bisection bracket in log s)


@dataclass(frozen=True)
class ComponentNoise:
    """The sensitivities of one component: how much one person can move its vector of cells.

    Both are integers >= 1. For an integer vector ``||v||_2 <= ||v||_1``, so ``l1 < l2`` cannot describe a real
    query and is refused (it is what swapped arguments look like).
    """

    l1: int
    l2: int

    def __post_init__(self) -> None:
        for name, value in (("l1", self.l1), ("l2", self.l2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"a component's {name} sensitivity must be an integer >= 1, got {value!r}")
        if self.l1 < self.l2:
            raise ValueError(f"a component's l1 sensitivity ({self.l1}) cannot be below its l2 ({self.l2})")


def rdp_skellam(alpha: float, mu: float, l1: float, l2: float) -> float:
    """An upper bound on the RDP epsilon(alpha) of adding ``Sk(mu)`` to each coordinate of an integer vector query.

    Source: Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private Federated Learning"
    (NeurIPS 2021), Theorem 3.5 (multi-dimensional Skellam mechanism; Corollary 3.6 applies it to the
    distributed sum). The paper parametrises the symmetric Skellam by its VARIANCE ``V``: each coordinate is
    ``Poisson(V/2) - Poisson(V/2)``, pmf ``exp(-V) I_k(V)``, and for integer ``alpha > 1`` it proves::

        eps(alpha) <= alpha*D2**2/(2V) + min(((2*alpha - 1)*D2**2 + 6*D1) / (4V**2), 3*D1/(2V))

    (the same formula Google's distributed-DP accounting code evaluates with ``V`` the central variance). Here
    ``Sk(mu)`` is ``Poisson(mu) - Poisson(mu)``, so ``V = 2*mu`` and the bound becomes::

        eps(alpha) <= alpha*l2**2/(4*mu) + min(((2*alpha - 1)*l2**2 + 6*l1) / (16*mu**2), 3*l1/(4*mu))

    The first term is the Gaussian mechanism's RDP at the same variance; the ``min`` is the price of
    discreteness, negligible once ``mu`` is large.

    Range of ``alpha``: the theorem is proven for integer ``alpha >= 2``. A Renyi divergence never decreases
    with its order (van Erven and Harremoes 2014, Theorem 3), so for a real ``alpha > 1`` the bound at
    ``ceil(alpha)`` is still a valid (looser) bound, and that is what is returned. ``alpha <= 1`` is refused.
    ``mu == 0`` (no noise) has infinite RDP.
    """
    if not alpha > 1.0 or math.isinf(alpha):
        raise ValueError(f"the Renyi order must be a finite number > 1, got {alpha!r}")
    if not (math.isfinite(mu) and mu >= 0.0):
        raise ValueError(f"mu must be a finite number >= 0, got {mu!r}")
    if not (l1 > 0 and l2 > 0 and math.isfinite(l1) and math.isfinite(l2)):
        raise ValueError(f"sensitivities must be finite and positive, got l1={l1!r}, l2={l2!r}")
    if mu == 0.0:
        return math.inf
    a = float(math.ceil(alpha))
    l2_sq = float(l2) * float(l2)
    gaussian = a * l2_sq / (4.0 * mu)
    discrete = min(((2.0 * a - 1.0) * l2_sq + 6.0 * l1) / (16.0 * mu * mu), 3.0 * l1 / (4.0 * mu))
    return gaussian + discrete


@functools.lru_cache(maxsize=64)
def _conversion_terms(delta: float, alphas: tuple[float, ...]) -> tuple[float, ...]:
    """Per order, the part of the RDP -> (epsilon, delta) conversion that does not depend on the RDP."""
    log_delta = math.log(delta)
    return tuple(math.log((a - 1.0) / a) - (log_delta + math.log(a)) / (a - 1.0) for a in alphas)


def rdp_to_epsilon(rdp: Sequence[float] | np.ndarray, delta: float, alphas: Sequence[float] = ALPHAS) -> float:
    """The (epsilon, delta)-DP implied by RDP ``rdp[i]`` at order ``alphas[i]`` for every i (the best of them).

    Uses the conversion of Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential Privacy"
    (NeurIPS 2020), Proposition 12: (alpha, r)-RDP implies (epsilon, delta)-DP with::

        epsilon = r + log((alpha - 1)/alpha) - (log(delta) + log(alpha)) / (alpha - 1)

    which is never worse than the classical ``r + log(1/delta)/(alpha - 1)`` (Mironov 2017). A result below 0
    (possible only for a nearly vacuous delta) is reported as 0.
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    values = [float(r) for r in rdp]
    orders = tuple(float(a) for a in alphas)
    if len(values) != len(orders) or not orders:
        raise ValueError(f"need one RDP value per order: {len(values)} values for {len(orders)} orders")
    if any(not a > 1.0 for a in orders):
        raise ValueError("every Renyi order must be > 1")
    best = min(r + c for r, c in zip(values, _conversion_terms(float(delta), orders), strict=True))
    return max(best, 0.0)


def epsilon_of(mus: Sequence[float], comps: Sequence[ComponentNoise], delta: float) -> float:
    """The epsilon (at ``delta``) of one release of every component ``j`` with ``Sk(mus[j])`` on each of its cells.

    The components' RDP add up order by order (composition), then one conversion gives epsilon.
    """
    if len(mus) != len(comps):
        raise ValueError(f"need one mu per component: {len(mus)} mus for {len(comps)} components")
    rdp = [math.fsum(rdp_skellam(a, mu, c.l1, c.l2) for mu, c in zip(mus, comps, strict=True)) for a in ALPHAS]
    return rdp_to_epsilon(rdp, delta)


def _check_target(comps: Sequence[ComponentNoise], epsilon: float, delta: float) -> None:
    if not (math.isfinite(epsilon) and epsilon > 0.0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not comps:
        raise ValueError("a release needs at least one component to calibrate noise for")
    for c in comps:
        if not isinstance(c, ComponentNoise):
            raise ValueError(f"components must be ComponentNoise, got {type(c).__name__}")
    floor = rdp_to_epsilon([0.0] * len(ALPHAS), delta)
    if epsilon <= floor:
        raise ValueError(
            f"epsilon {epsilon!r} is out of reach at delta {delta!r}: even infinite noise is accounted "
            f"at {floor:.6g} by the conversion over the supported Renyi orders"
        )


def _round_up(s: float) -> float:
    """``s`` rounded up to 32 significant bits: a short, machine-independent value never below ``s``."""
    mantissa, exponent = math.frexp(s)
    return math.ldexp(math.ceil(mantissa * 2.0**32) / 2.0**32, exponent)


def calibrate(comps: Sequence[ComponentNoise], epsilon: float, delta: float) -> list[float]:
    """The least noise, ``mu_j = s * l2_j**2`` with the smallest common ``s``, whose release meets (epsilon, delta).

    Giving every component the same ``mu / l2**2`` equalises their Gaussian-like RDP terms ``alpha/(4s)``, so
    the budget is split evenly per component. ``s`` is found by bisection on ``log s`` (the accounted epsilon
    falls monotonically as ``s`` grows) until the bracket is narrower than ``1e-9`` relative; the feasible end
    is kept and rounded up, so the result always satisfies ``epsilon_of(result, comps, delta) <= epsilon``.

    Deterministic: only IEEE double arithmetic and ``math.log``/``math.exp``, no platform-dependent library
    kernels, so every node derives bit-identical mus from the same policy.
    """
    _check_target(comps, epsilon, delta)
    weights = [c.l2 * c.l2 for c in comps]

    def mus_at(s: float) -> list[float]:
        return [s * w for w in weights]

    def feasible(s: float) -> bool:
        return epsilon_of(mus_at(s), comps, delta) <= epsilon

    log_lo, log_hi = 0.0, 0.0
    step = math.log(2.0)
    if feasible(1.0):
        while feasible(math.exp(log_lo)):
            log_lo -= step
    else:
        while not feasible(math.exp(log_hi)):
            log_hi += step
            if log_hi > 650.0:  # exp would overflow; _check_target's floor makes this unreachable
                raise ValueError("no finite noise meets this epsilon")
    s_hi = math.exp(log_hi)
    while log_hi - log_lo > _PRECISION:
        mid = 0.5 * (log_lo + log_hi)
        s_mid = math.exp(mid)
        if feasible(s_mid):
            log_hi, s_hi = mid, s_mid
        else:
            log_lo = mid
    s = _round_up(s_hi)
    if not feasible(s):  # monotone arithmetic makes this impossible; never return an unchecked answer
        s = s_hi
    return mus_at(s)


def noise_sd(mu: float) -> float:
    """Standard deviation of ``Sk(mu)`` (variance ``2 * mu``): what a reader of a noisy cell should expect."""
    return math.sqrt(2.0 * mu)


def sample_shares(seed: bytes, mus: np.ndarray, participants: int) -> np.ndarray:
    """One node's noise share: ``Sk(mus[i] / participants)`` for every slot ``i``, as int64.

    The ``participants`` nodes' shares sum to ``Sk(mus[i])`` per slot. The draw is a pure function of
    ``(seed, mus, participants)``, so a node asked the same run twice answers the same noise (a second,
    independent draw would let an asker average the noise away).

    Precision: numpy's Poisson sampler works in doubles, so for a large mean the low bits of a draw would be
    decided by rounding. Each ``Poisson(m)`` is therefore the sum of ``k = ceil(m / 2**40)`` independent
    ``Poisson(m / k)`` draws (Poisson is closed under addition); the differences ``P - Q`` are accumulated per
    piece so nothing overflows int64. Slots are grouped by ``k`` and each group is drawn by one ``poisson``
    call (split into chunks only to bound memory). ``mus[i] == 0`` gives 0; a per-node mean above ``2**62`` is
    refused (callers keep ``mu <= MAX_MU`` by choosing units).
    """
    if isinstance(participants, bool) or not isinstance(participants, int) or participants < 1:
        raise ValueError(f"participants must be an integer >= 1, got {participants!r}")
    means = np.asarray(mus, dtype=np.float64)
    if means.ndim != 1:
        raise ValueError(f"mus must be a 1-D array, got shape {means.shape}")
    if not np.all(np.isfinite(means)) or np.any(means < 0.0):
        raise ValueError("every mu must be a finite number >= 0")
    per_node = means / float(participants)
    if np.any(per_node > _MAX_SHARE_MEAN):
        raise ValueError(f"a slot's per-node Poisson mean exceeds 2**62 (largest mu {float(means.max())!r})")
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    out = np.zeros(means.shape[0], dtype=np.int64)
    pieces = np.ceil(per_node / _PIECE_MEAN).astype(np.int64)  # 0 exactly where mu == 0
    for k in np.unique(pieces[pieces > 0]).tolist():
        slots = np.flatnonzero(pieces == k)
        lam = per_node[slots] / float(k)
        chunk = max(1, _MAX_DRAWS_PER_CALL // (2 * k))
        for start in range(0, slots.size, chunk):
            part = slice(start, start + chunk)
            draws = rng.poisson(lam[part], size=(2, k, lam[part].size))
            out[slots[part]] = (draws[0] - draws[1]).sum(axis=0)
    return out
