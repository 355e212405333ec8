"""Detector hyperparameters shared by the model-API tests: values that make each method
do something on the tests' small random models."""

import opnp

PARAMS = {
    "knn": {"k": 5},
    "react": {"percentile": 80},
    "dice": {"percentile": 60},
    "dice+react": {"percentile": 60, "react_percentile": 85},
    "ash": {"percentile": 70},
    "line": {"p_w": 50, "p_a": 30, "clip": 1.0},
    "opp": {"weight_low": 20, "weight_high": 2},
    "onp": {"neuron_low": 10, "neuron_high": 10},
    "opnp": {"weight_low": 20, "weight_high": 2, "neuron_low": 10, "neuron_high": 10},
    "opnp+react": {"weight_low": 20, "neuron_high": 10, "react_percentile": 85},
    "opp+react": {"weight_low": 20, "weight_high": 2, "react_percentile": 85},
    "opnp+msp": {"weight_low": 20, "neuron_high": 10},
    "rpp": {"percentage": 20, "seed": 3},
    "rnp": {"percentage": 20, "seed": 3},
    "tpp": {"percentage": 20},
    "tnp": {"percentage": 20},
    "gradnorm": {"temperature": 2.0},
}
# the feature-level detectors (ODIN runs the network: tests of its own)
METHODS = [
    m for m in opnp.available_detectors() if m not in opnp.detectors.methods_where("needs_network")
]
