"""opnp.nearest: the float32 screen plus float64 recomputation gives the float64 k-th
largest inner product, on banks built to stress each branch."""

from __future__ import annotations

import numpy as np
import pytest

from opnp.nearest import kth_largest_inner_product, screening_error_bound


def unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def search(queries, bank, k, **kwargs):
    bank32 = bank.astype(np.float32)
    return kth_largest_inner_product(
        queries,
        k,
        len(bank),
        screen_rows=lambda a, b: bank32[a:b],
        exact_rows=lambda idx: bank32[idx].astype(np.float64),
        **kwargs,
    )


def brute_force(queries, bank, k):
    sims = queries @ bank.astype(np.float32).astype(np.float64).T
    return -np.sort(-sims, axis=1)[:, k - 1]


def banks(rng):
    """(name, bank, queries): generic, ReLU-sparse with zero rows, near-duplicates
    (every neighbour within the screen's error band), and exact ties."""
    d = 48
    generic = unit(rng.normal(size=(3000, d)))
    relu = np.maximum(rng.normal(size=(3000, d)), 0)
    relu[::97] = 0.0
    centre = rng.normal(size=d)
    near = unit(centre + 1e-6 * rng.normal(size=(3000, d)))
    ties = unit(np.repeat(rng.normal(size=(30, d)), 100, axis=0))
    q_near = unit(centre + 1e-6 * rng.normal(size=(20, d)))
    yield "generic", generic, unit(rng.normal(size=(50, d)))
    yield "relu", unit(relu), unit(np.maximum(rng.normal(size=(50, d)), 0))
    yield "near-duplicates", near, q_near
    yield "ties", ties, unit(rng.normal(size=(50, d)))


@pytest.mark.parametrize("k", [1, 7, 200, 3000])
@pytest.mark.parametrize("block_entries", [50 * 64, 1 << 24])
def test_kth_inner_product_equals_float64_brute_force(k, block_entries):
    rng = np.random.default_rng(k)
    for name, bank, queries in banks(rng):
        got = search(queries, bank, k, block_entries=block_entries)
        want = brute_force(queries, bank, k)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15, err_msg=name)


def test_the_recomputation_is_what_makes_it_exact():
    """On near-duplicates the float32 screen alone is off by more than float64 allows,
    and within the documented bound."""
    rng = np.random.default_rng(0)
    _, bank, queries = [b for b in banks(rng) if b[0] == "near-duplicates"][0]
    screened = search(queries, bank, 10, exact=False)
    want = brute_force(queries, bank, 10)
    assert np.max(np.abs(screened - want)) > 1e-9
    assert np.max(np.abs(screened - want)) <= screening_error_bound(bank.shape[1])
    np.testing.assert_allclose(search(queries, bank, 10), want, rtol=0, atol=1e-15)


def test_zero_queries_and_bad_k():
    bank = unit(np.random.default_rng(1).normal(size=(100, 8)))
    assert search(np.zeros((3, 8)), bank, 5).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="k=101 must be between 1 and the bank's 100 rows"):
        search(np.zeros((1, 8)), bank, 101)


def test_the_scans_read_the_bank_in_bounded_blocks():
    """However few the queries, each block of bank rows holds at most ``block_entries``
    values: the float32 screen's (in multiples of GROUP rows) and the float64 scan's of
    queries whose band overflows."""
    from opnp.nearest import GROUP, _plain_float64_scan

    rng = np.random.default_rng(3)
    bank, queries = unit(rng.normal(size=(1000, 16))), unit(rng.normal(size=(2, 16)))
    requested = []

    def exact_rows(idx):
        requested.append(len(idx))
        return bank[idx]

    got = _plain_float64_scan(queries, 50, len(bank), exact_rows, block_entries=16 * 100)
    assert max(requested) == 100 and sum(requested) == len(bank)
    want = -np.sort(-(queries @ bank.T), axis=1)[:, 49]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    screened = []

    def screen_rows(start, stop):
        screened.append(stop - start)
        return bank[start:stop].astype(np.float32)

    got = kth_largest_inner_product(
        queries, 50, len(bank), screen_rows, exact_rows, block_entries=16 * 2 * GROUP
    )
    assert max(screened) == 2 * GROUP and sum(screened) == len(bank)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
