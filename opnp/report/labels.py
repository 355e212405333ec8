"""Names and labels that more than one table or figure of :mod:`opnp.report` uses."""

from __future__ import annotations

from opnp.detectors import available_detectors, detector_class
from opnp.pruning import PERCENTAGE_NAMES

#: Metric column -> (label shown in tables, which direction is better).
METRICS: dict[str, tuple[str, str]] = {
    "fpr95": ("FPR95", "lower"),
    "auroc": ("AUROC", "higher"),
    "aupr_in": ("AUPR-In", "higher"),
    "aupr_out": ("AUPR-Out", "higher"),
    "id_accuracy": ("ID Acc", "higher"),
}


#: Method name (registry / ``method`` column) -> label in the paper's tables: each
#: detector class declares its own (:attr:`opnp.detectors.base.Detector.label`).
METHOD_LABELS: dict[str, str] = {name: detector_class(name).label for name in available_detectors()}


#: The four OPNP pruning percentages (:data:`opnp.pruning.PERCENTAGE_NAMES`) in the order
#: the paper's Table 3 and Fig. 3 show them: the weights, then the neurons, each with its
#: high-sensitivity side first (weight_high, weight_low, neuron_high, neuron_low).
PERCENTAGE_ORDER: tuple[str, ...] = tuple(
    sorted(
        PERCENTAGE_NAMES,
        key=lambda name: (not name.startswith("weight_"), not name.endswith("_high")),
    )
)

#: Label of the mean over OOD sets (a column of the main tables, a row of Table 4).
AVERAGE = "Average"
#: ``variant`` of the rows without pruning (Tables 3, 7, 8).
NO_PRUNING = "none"
