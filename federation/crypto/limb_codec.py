"""Exact signed integers in BFV slots: split into 30-bit limbs so sums over 256 regions never wrap.

A value ``v`` of a ``bits``-bit component is written as ``L = limbs_for(bits)`` limbs::

    v = l_0 + l_1 * 2**30 + ... + l_{L-1} * 2**(30 (L-1))

The low limbs are unsigned (``0 <= l_j < 2**30``); the top limb is signed (arithmetic shift), so
negative values need no offset. Summing one limb over ``k <= 256`` regions gives at most
``256 * 2**30 = 2**38`` in absolute value, below half the 40-bit plain modulus: no slot sum wraps,
and the client rebuilds the exact federation-wide integer from the limb sums.

>>> split_values([-5, 2**40 + 7], 64).tolist()
[[1073741819, 1073741823, -1], [7, 1024, 0]]
>>> join_limbs([1073741819, 1073741823, -1])
-5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpf.federation.errors import CryptoError

LIMB_BITS = 30
LIMB_MASK = (1 << LIMB_BITS) - 1
MAX_REGIONS = 256


def limbs_for(bits: int) -> int:
    """Limbs needed for a signed ``bits``-bit value (the top limb carries the sign)."""
    return -(-bits // LIMB_BITS)


def check_range(value: int, bits: int) -> None:
    """Refuse a value that does not fit a signed ``bits``-bit integer."""
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise CryptoError(
            f"a partial result does not fit in a signed {bits}-bit integer",
            code="PARTIAL_OUT_OF_RANGE",
            hint="narrow the filter or group finer",
        )


def split_values(values: Sequence[int], bits: int) -> np.ndarray:
    """Limbs of each value, shape ``(len(values), limbs_for(bits))``, after a range check."""
    n_limbs = limbs_for(bits)
    out = np.zeros((len(values), n_limbs), dtype=np.int64)
    for i, v in enumerate(values):
        v = int(v)
        check_range(v, bits)
        for j in range(n_limbs - 1):
            out[i, j] = v & LIMB_MASK
            v >>= LIMB_BITS
        out[i, n_limbs - 1] = v  # signed top limb, |v| < 2**29 by the range check
    return out


def join_limbs(limb_sums: Sequence[int]) -> int:
    """Rebuild the exact integer from (summed) limbs."""
    total = 0
    for j, s in enumerate(limb_sums):
        total += int(s) << (LIMB_BITS * j)
    return total
