"""Registry and shared interface behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from opnp.detectors import available_detectors, create_detector

EXPECTED = {
    "msp", "maxlogit", "energy", "mahalanobis", "react", "dice", "ash", "knn", "gradnorm",
    "line", "opp", "onp", "opnp", "opnp+react", "opp+react", "opnp+msp", "dice+react", "rpp", "rnp",
    "tpp", "tnp",
}  # fmt: skip


def test_registry_lists_every_method():
    # ODIN is registered too, but runs the network: the tests below score features
    assert set(available_detectors()) == EXPECTED | {"odin"}


def test_odin_refuses_cached_features_and_checks_its_values():
    det = create_detector("odin", temperature=10)
    assert det.params == {"temperature": 10.0, "epsilon": 0.0014}
    with pytest.raises(ValueError, match="odin runs the network on the input images"):
        det.score(np.ones((2, 3)))
    with pytest.raises(ValueError, match="epsilon must be a nonnegative number"):
        create_detector("odin", epsilon=-1)


def test_each_method_is_described_by_its_class():
    """What the workflow and the tables read from the classes (one home per method)."""
    from opnp.detectors import detector_class, methods_where

    assert methods_where("uses_sensitivity") == [
        "onp", "opnp", "opnp+msp", "opnp+react", "opp", "opp+react"
    ]  # fmt: skip
    assert methods_where("seeded") == ["rnp", "rpp"]
    assert methods_where("needs_network") == ["odin"]
    assert methods_where("clips_at_react") == ["dice+react", "opnp+react", "opp+react"]
    assert methods_where("needs_labels") == ["line", "mahalanobis"]
    labels = {name: detector_class(name).label for name in available_detectors()}
    assert all(labels.values()) and len(set(labels.values())) == len(labels)
    for name in available_detectors():
        cls = detector_class(name)
        assert set(cls.default_grid) <= set(cls.defaults), name


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown detector name 'odinx'.*energy"):
        create_detector("odinx")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_detector_fits_scores_and_serialises(name):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 16)), rng.normal(size=4)
    train = np.maximum(rng.normal(size=(120, 16)), 0).astype(np.float32)
    labels = rng.integers(0, 4, 120)
    kwargs = {"k": 3} if name == "knn" else {}
    det = create_detector(name, weight=w, bias=b, **kwargs).fit(train, labels)
    scores = det.score(train[:10])
    assert scores.shape == (10,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    json.dumps(det.params)


def test_bad_hyperparameter_and_features():
    with pytest.raises(ValueError, match=r"react: unknown hyperparameter\(s\) \['p'\]"):
        create_detector("react", weight=np.ones((2, 3)), bias=np.zeros(2), p=3)
    det = create_detector("energy", weight=np.ones((2, 3)), bias=np.zeros(2))
    with pytest.raises(ValueError, match="features has 4 columns but the FC weight has 3"):
        det.score(np.ones((5, 4)))
    with pytest.raises(ValueError, match="features has 1 NaN"):
        det.score(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="energy needs the FC layer"):
        create_detector("energy")
    with pytest.raises(ValueError, match="call fit"):
        create_detector("dice", weight=np.ones((2, 3)), bias=np.zeros(2)).score(np.ones((1, 3)))
