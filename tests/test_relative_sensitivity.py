"""Fig. 9's relative OOD / ID sensitivity ratio (opnp.relative_sensitivity) on
constructed features: the exact per-image terms, the bootstrap interval and the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from opnp.relative_sensitivity import (
    random_set_ratios,
    relative_ratio,
    relative_verdict,
    set_terms,
)
from opnp.sensitivity import parameter_sensitivity

C, D, N = 10, 128, 300


def layer(rng):
    return rng.normal(size=(C, D)) / np.sqrt(D), 0.1 * rng.normal(size=C)


def features(rng, scale, n=N):
    return np.abs(rng.normal(size=(n, D))) * scale


def random_set(rng, fraction=0.25):
    members = np.zeros((C, D), dtype=bool)
    members.flat[rng.choice(C * D, int(fraction * C * D), replace=False)] = True
    return members


def test_set_terms_are_the_per_sample_sensitivity():
    rng = np.random.default_rng(0)
    w, b = layer(rng)
    h = features(rng, rng.uniform(0.5, 1.5, D), n=50)
    members = random_set(rng)
    terms = set_terms(h, w, b, members, chunk_size=16)  # several chunks
    np.testing.assert_allclose(terms["sensitivity"], parameter_sensitivity(h, w, b), rtol=1e-12)
    s = terms["sensitivity"]
    assert terms["set"].mean() / members.sum() == pytest.approx(s[members].mean(), rel=1e-12)
    assert terms["all"].mean() / s.size == pytest.approx(s.mean(), rel=1e-12)
    with pytest.raises(ValueError, match="holds no weight"):
        set_terms(h, w, b, np.zeros((C, D), dtype=bool))
    with pytest.raises(ValueError, match="bool array of the weight's shape"):
        set_terms(h, w, b, members[:, :5])


def test_interval_excludes_one_when_the_set_is_relatively_more_sensitive_on_ood():
    """OOD features are larger on 16 dimensions than ID features; the set is every weight
    reading those dimensions, so its OOD / ID ratio exceeds the layer's (population
    relative ratio about 1.6): the interval must lie above 1, and above the range of
    random sets of the same size."""
    rng = np.random.default_rng(0)
    w, b = layer(rng)
    scale = rng.uniform(0.5, 1.5, D)
    shift = np.ones(D)
    shifted = rng.choice(D, 16, replace=False)
    shift[shifted] = 3.0
    members = np.zeros((C, D), dtype=bool)
    members[:, shifted] = True
    id_terms = set_terms(features(rng, scale), w, b, members)
    ood_terms = set_terms(features(rng, scale * shift), w, b, members)
    found = relative_ratio(id_terms, ood_terms, ood_name="x", n_resamples=1000, seed=0)
    low, high = found["relative_ratio_ci"]
    assert 1 < low <= found["relative_ratio"] <= high
    assert found["relative_ratio"] == pytest.approx(found["ratio"] / found["ratio_all"])
    assert len(found["relative_resamples"]) == 1000 and found["n_id"] == N
    randoms = random_set_ratios(
        id_terms["sensitivity"], ood_terms["sensitivity"], int(members.sum()), n_sets=200
    )
    random_range = tuple(np.percentile(randoms, [2.5, 97.5]))
    assert random_range[1] < found["relative_ratio"]
    direction, sentence = relative_verdict((low, high), found["relative_ratio"], random_range)
    assert direction == "more" and "more sensitive on OOD than the average weight" in sentence


def test_interval_covers_one_for_a_random_set_when_ood_is_distributed_like_id():
    """A random weight set on OOD images drawn from the ID distribution: the population
    relative ratio of any fixed set is exactly 1, so a 95 % interval covers 1 with
    probability about 0.95 per data set. Over 20 independent seeds we require >= 16
    covers: if the coverage were the nominal 95 %, fewer than 16 has probability
    P(Binomial(20, 0.05) >= 5) = 0.003, so the test does not fail by chance, while an
    interval that is too narrow (or a ratio that is biased) drops the count well below."""
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        w, b = layer(rng)
        scale = rng.uniform(0.5, 1.5, D)
        members = random_set(rng)
        id_terms = set_terms(features(rng, scale), w, b, members)
        ood_terms = set_terms(features(rng, scale), w, b, members)
        low, high = relative_ratio(id_terms, ood_terms, n_resamples=400, seed=seed)[
            "relative_ratio_ci"
        ]
        covered += low <= 1 <= high
    assert covered >= 16, covered


def test_a_random_set_is_within_the_random_sets_range_where_the_raw_ratio_is_not_one():
    """OOD features shifted by a per-dimension factor: the raw OOD / ID ratio of a random
    set is far from 1 (the old verdict would read it as Eq. 11 holding), its relative
    ratio is not (a random set is one more draw of the random sets, so it falls in their
    central 95 % range with probability 0.95; >= 16 of 20 seeds, as above), and the
    verdict says 'not distinguishable' where it does."""
    inside = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        w, b = layer(rng)
        scale = rng.uniform(0.5, 1.5, D)
        members = random_set(rng)
        id_terms = set_terms(features(rng, scale), w, b, members)
        ood_terms = set_terms(features(rng, 1.5 * scale * rng.uniform(0.7, 1.4, D)), w, b, members)
        found = relative_ratio(id_terms, ood_terms, n_resamples=200, seed=seed)
        assert found["ratio_ci"][0] > 1.2  # the raw ratio alone
        randoms = random_set_ratios(
            id_terms["sensitivity"],
            ood_terms["sensitivity"],
            int(members.sum()),
            n_sets=200,
            seed=seed,
        )
        random_range = tuple(np.percentile(randoms, [2.5, 97.5]))
        direction, sentence = relative_verdict(
            found["relative_ratio_ci"], found["relative_ratio"], random_range
        )
        if random_range[0] <= found["relative_ratio"] <= random_range[1]:
            inside += 1
            assert direction == "none" and "not distinguishable" in sentence
    assert inside >= 16, inside


def test_the_bootstrap_is_seeded_and_checks_its_input():
    rng = np.random.default_rng(1)
    terms = {"set": rng.uniform(1, 2, 40), "all": rng.uniform(5, 6, 40)}
    first = relative_ratio(terms, terms, n_resamples=50, seed=3)
    again = relative_ratio(terms, terms, n_resamples=50, seed=3)
    np.testing.assert_array_equal(first["relative_resamples"], again["relative_resamples"])
    assert first["relative_ratio"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in length"):
        relative_ratio({"set": terms["set"], "all": terms["all"][:5]}, terms)
    with pytest.raises(ValueError, match="not positive"):
        relative_ratio({"set": np.zeros(40), "all": terms["all"]}, terms)
    with pytest.raises(ValueError, match="n_resamples"):
        relative_ratio(terms, terms, n_resamples=0)
    with pytest.raises(ValueError, match="set_size"):
        random_set_ratios(np.ones((2, 2)), np.ones((2, 2)), 5, n_sets=3)


def test_verdict_wording():
    assert relative_verdict((1.05, 1.2), 1.12)[0] == "more"
    assert relative_verdict((0.8, 0.9), 0.85)[0] == "less"
    direction, sentence = relative_verdict((0.95, 1.1), 1.02)
    assert direction == "none" and "interval includes 1" in sentence
    direction, sentence = relative_verdict((1.01, 1.03), 1.02, random_range=(0.9, 1.1))
    assert direction == "none" and "random set of as many weights" in sentence
