"""Seeded training subsets shared by image datasets and cached features."""

from __future__ import annotations

import numpy as np
import pytest

from opnp.data import seeded_subset
from opnp.subsets import seeded_subset_indices


@pytest.mark.parametrize(("n_total", "fraction", "seed"), [(1000, 5, 3), (1000, 20, 0), (7, 50, 1)])
def test_draw_is_the_seeded_sorted_choice(n_total, fraction, seed):
    # The draw the sensitivity results on disk were made with: it must not change.
    size = max(1, round(n_total * fraction / 100))
    expected = np.sort(np.random.default_rng(seed).choice(n_total, size=size, replace=False))
    got = seeded_subset_indices(n_total, fraction, seed)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64
    assert list(seeded_subset(list(range(n_total)), fraction, seed).indices) == got.tolist()


@pytest.mark.parametrize(("n_total", "fraction"), [(1, 100), (300, 100), (100, 99.9)])
def test_every_item_is_the_identity_without_a_draw(n_total, fraction):
    full_draw = np.sort(np.random.default_rng(0).choice(n_total, size=n_total, replace=False))
    np.testing.assert_array_equal(seeded_subset_indices(n_total, fraction, 0), full_draw)


def test_max_items_caps_and_bad_arguments_are_named():
    assert len(seeded_subset_indices(1000, 100, 0, max_items=7)) == 7
    for fraction in (0, -1, 100.5):
        with pytest.raises(ValueError, match="fraction must be a percentage"):
            seeded_subset_indices(10, fraction)
    with pytest.raises(ValueError, match="max_items must be a positive integer"):
        seeded_subset_indices(10, 50, max_items=0)
