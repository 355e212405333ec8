"""Table 7: the validation selection of an in-network row's pruning percentages
(opnp.pipeline.ablations.select_layer_setting), on constructed validation results."""

from __future__ import annotations

import pytest

from opnp.pipeline.ablations import select_layer_setting
from opnp.pipeline.results import params_json

BASELINE = 90.0


def candidate(weight_low, weight_high, fpr95, auroc, accuracy):
    params = {"weight_high": weight_high, "weight_low": weight_low}
    rows = [
        {"split": "val", "params": params_json(params), "ood_set": name, "fpr95": f, "auroc": a}
        # two OOD sets whose mean is (fpr95, auroc)
        for name, f, a in (("a", fpr95 - 1, auroc + 1), ("b", fpr95 + 1, auroc - 1))
    ]
    return {"params": params, "val_rows": rows, "val_id_accuracy": accuracy}


def test_the_unconstrained_best_that_breaks_accuracy_is_excluded():
    breaks = candidate(40, 1, fpr95=10, auroc=97, accuracy=60)  # best FPR95, -30 points
    keeps = candidate(10, 0, fpr95=20, auroc=95, accuracy=86)  # -4 points
    nothing = candidate(0, 0, fpr95=30, auroc=93, accuracy=BASELINE)
    options = [breaks, keeps, nothing]
    free = select_layer_setting(options, baseline_accuracy=BASELINE, max_accuracy_loss=None)
    assert free["params"] == breaks["params"] and free["eligible"] == [True] * 3
    limited = select_layer_setting(options, baseline_accuracy=BASELINE, max_accuracy_loss=5)
    assert limited["params"] == keeps["params"]
    assert limited["val_id_accuracy"] == 86 and not limited["none_eligible"]
    assert limited["eligible"] == [False, True, True]
    # the metric is the main selection's: by AUROC the same exclusion holds
    by_auroc = select_layer_setting(
        options, baseline_accuracy=BASELINE, max_accuracy_loss=5, metric="auroc"
    )
    assert by_auroc["params"] == keeps["params"]


def test_a_loss_of_exactly_the_limit_is_eligible():
    """3 of 60 images fewer correct is 5 points, but 100 * 8/60 - 100 * 5/60 is
    5.000000000000002 in float64: still within a 5-point limit."""
    baseline, pruned = 100.0 * (8 / 60), 100.0 * (5 / 60)
    assert baseline - pruned > 5  # the rounding this test is about
    at_limit = candidate(10, 0, fpr95=20, auroc=95, accuracy=pruned)
    chosen = select_layer_setting([at_limit], baseline_accuracy=baseline, max_accuracy_loss=5)
    assert chosen["eligible"] == [True] and chosen["params"] == at_limit["params"]


def test_none_eligible_falls_back_to_no_pruning():
    options = [
        candidate(40, 1, fpr95=10, auroc=97, accuracy=60),
        candidate(60, 1, fpr95=12, auroc=96, accuracy=70),
    ]
    chosen = select_layer_setting(options, baseline_accuracy=BASELINE, max_accuracy_loss=5)
    assert chosen["none_eligible"]
    assert chosen["params"] == {"weight_high": 0, "weight_low": 0}
    assert chosen["val_id_accuracy"] == BASELINE
    assert chosen["eligible"] == [False, False]


def test_bad_arguments():
    with pytest.raises(ValueError, match="no candidate"):
        select_layer_setting([], baseline_accuracy=BASELINE, max_accuracy_loss=5)
    with pytest.raises(ValueError, match="max_accuracy_loss must be >= 0"):
        select_layer_setting(
            [candidate(0, 0, 1, 99, BASELINE)], baseline_accuracy=BASELINE, max_accuracy_loss=-1
        )
