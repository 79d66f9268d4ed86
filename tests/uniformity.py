"""Is a vector of decrypted slots uniform over the plain range? What a masked (or randomised) answer must look like.

Pearson's chi-square over 64 equal bins of [-(t-1)/2, (t-1)/2]: 63 degrees of freedom, mean 63, variance 126.
:data:`CHI2_LIMIT` is the mean plus 6 standard deviations (130.3), which a uniform vector exceeds about once in
a million runs (Wilson-Hilferty: z = 4.7); the masks are fresh in every run, so that is the tests' false-alarm
rate, while a vector that is not uniform (an unmasked partial) lands far above it.
"""

from __future__ import annotations

import math

import numpy as np

from hpf.federation.crypto import he

BINS = 64
CHI2_LIMIT = (BINS - 1) + 6 * math.sqrt(2 * (BINS - 1))


def chi_square_uniform(values: np.ndarray, bins: int = BINS) -> float:
    """Pearson's statistic of ``values`` against the uniform distribution on [-(t-1)/2, (t-1)/2] in ``bins``."""
    half = (he.PLAIN_MODULUS - 1) // 2
    assert values.min() >= -half and values.max() <= half
    which = ((values.astype(np.int64) + half) * bins) // he.PLAIN_MODULUS
    observed = np.bincount(which, minlength=bins)
    expected = values.size / bins
    return float(((observed - expected) ** 2 / expected).sum())
