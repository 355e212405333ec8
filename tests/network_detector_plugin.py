"""A toy second network-level detector, registered only where a test imports this module
(directly, or through ``OPNP_DETECTOR_PLUGINS=network_detector_plugin`` for a workflow
run): temperature-scaled MSP of the inputs moved by ``shift`` standard deviations of the
input normalisation. Nothing in the rules, opnp.nets.model_api or opnp.nets.export names
it: ``needs_network`` alone decides how it runs (tests/detectors/test_network_methods.py)."""

from __future__ import annotations

import numpy as np

from opnp._validation import check_positive
from opnp.detectors import register_detector
from opnp.detectors.base import NetworkDetector

NAME = "shifted_msp"


@register_detector(NAME)
class ShiftedMSP(NetworkDetector):
    """max_c softmax(f(x + shift * std) / T)."""

    label = "Shifted MSP"
    defaults = {"temperature": 1.0, "shift": 0.0}
    default_grid = {"temperature": [1.0, 2.0], "shift": [0.0, 0.5]}

    def _check_params(self) -> None:
        self._params["temperature"] = check_positive(self._params["temperature"], "temperature")
        self._params["shift"] = float(self._params["shift"])

    def score_batch(self, model, inputs, std=1.0) -> np.ndarray:
        import torch

        std_t = torch.as_tensor(std, dtype=inputs.dtype, device=inputs.device).reshape(
            (1, -1) + (1,) * (inputs.ndim - 2)
        )
        with torch.no_grad():
            logits = model(inputs + self._params["shift"] * std_t)
            probs = torch.softmax(logits / self._params["temperature"], dim=1)
        return probs.max(dim=1).values.double().cpu().numpy()
