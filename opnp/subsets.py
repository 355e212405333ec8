"""Seeded random subsets: the paper's 1-100 % training fractions.

Numpy only, so that steps on cached features (sensitivity) draw the same subset as
steps on images (:func:`opnp.data.manifests.seeded_subset`) without importing image code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["seeded_subset_indices"]


def seeded_subset_indices(
    n_total: int, fraction: float, seed: int = 0, max_items: int | None = None
) -> np.ndarray:
    """Sorted int64 indices of a seeded uniform random ``fraction`` percent (0, 100] of
    ``n_total`` items.

    ``round(N * fraction / 100)`` items (at least 1, at most ``max_items``) drawn without
    replacement by ``numpy.random.default_rng(seed)``, kept in their original order; all
    N items (``arange``, no draw) when that is every item.
    """
    fraction = float(fraction)
    if not 0 < fraction <= 100:
        raise ValueError(f"fraction must be a percentage in (0, 100], got {fraction!r}")
    n = max(1, round(n_total * fraction / 100))
    if max_items is not None:
        if max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        n = min(n, int(max_items))
    if n >= n_total:  # a sorted draw of every item is the identity: skip the permutation
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))
