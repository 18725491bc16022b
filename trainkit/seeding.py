"""Derived seeds: every random stream trainkit uses is a pure function of integers.

A step's dropout must depend only on ``(seed, step, micro-batch)``, never on how many random
numbers something else drew before, so that a resumed or re-run step is bit-for-bit the
same. :func:`derive_seed` hashes a tuple of integers into a 63-bit seed with the SplitMix64
finaliser (Steele, Lea and Flood, 2014), whose outputs for neighbouring inputs are
uncorrelated; feeding it sequentially makes the result depend on every key and their order.
"""

from __future__ import annotations

__all__ = ["derive_seed"]

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*keys: int) -> int:
    """Hash integers (e.g. ``seed, step, micro_index``) into a seed in ``[0, 2**63)``.

    Args:
        *keys: any integers; negative ones are taken modulo 2**64.

    Returns:
        A seed for ``torch.Generator.manual_seed``; equal keys give equal seeds.

    Example:
        >>> derive_seed(42, 0, 0) == derive_seed(42, 0, 0)
        True
        >>> derive_seed(42, 0, 1) == derive_seed(42, 1, 0)
        False
    """
    h = 0
    for key in keys:
        h = _splitmix64(h ^ (int(key) & _MASK64))
    return h >> 1
