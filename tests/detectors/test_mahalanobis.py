from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import EmpiricalCovariance

from opnp.detectors import create_detector


def test_shared_covariance_hand_computed():
    train = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 1.0], [10.0, 3.0]])
    labels = np.array([0, 0, 1, 1])
    det = create_detector("mahalanobis").fit(train, labels)
    np.testing.assert_allclose(det.class_means, [[1.0, 0.0], [10.0, 2.0]])
    # centred: (-1,0), (1,0), (0,-1), (0,1) -> covariance diag(0.5, 0.5)
    np.testing.assert_allclose(det.covariance, np.diag([0.5, 0.5]))
    x = np.array([[1.0, 1.0]])  # distances^2 to means: 2*1 = 2 and 2*(81+1) = 164
    assert det.score(x)[0] == pytest.approx(-2.0)


def test_matches_sklearn_precision():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 5))
    labels = rng.integers(0, 3, 200)
    det = create_detector("mahalanobis").fit(train, labels)
    centred = train - det.class_means[labels]
    np.testing.assert_allclose(
        det.precision, EmpiricalCovariance().fit(centred).precision_, rtol=1e-8
    )
    x = rng.normal(size=(4, 5))
    ref = np.max(
        [-np.einsum("nd,de,ne->n", x - m, det.precision, x - m) for m in det.class_means], axis=0
    )
    np.testing.assert_allclose(det.score(x), ref, rtol=1e-10)
    with pytest.raises(ValueError, match="needs train_labels"):
        create_detector("mahalanobis").fit(train)
