"""Fig. 9's test of Eq. 11 with a baseline: is a weight set (the weights OPNP prunes) more
sensitive on OOD data than on ID data *relative to the average weight of the layer*?

The OOD / ID ratio of the mean sensitivity of a weight set alone says little: over all
FC weights it is already far from 1 (0.85-0.94 on the ImageNet-regime model), because
OOD features have other magnitudes than ID features. So the measure here is

    relative ratio = (mean_OOD S[set] / mean_ID S[set]) / (mean_OOD S[all] / mean_ID S[all])

with S the per-sample sensitivity of Eq. 6 recomputed on an image set,
S_cd = (1/N) sum_k p_c(x_k) |h_d(x_k)|. Both means are weighted means over the images:
mean S[set] = (1/N) sum_k a_k / |set| with a_k = sum_{(c,d) in set} p_c(x_k) |h_d(x_k)|,
and mean S[all] = (1/N) sum_k b_k / (C D) with b_k = sum_d |h_d(x_k)| (the softmax sums
to 1). One pass over the features gives the per-image a_k, b_k (:func:`set_terms`); a
bootstrap resample of the ID and OOD images is then four means of resampled vectors
(:func:`relative_ratio`), with the project's seeded resamples (:mod:`opnp.bootstrap`:
the ID stream and the OOD set's stream, the same images as every test interval).

A second baseline (:func:`random_set_ratios`): the relative ratio of random weight sets
of the same size on all images, i.e. how far from 1 a set chosen without regard to the
sensitivity lands by chance of which weights it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from opnp import bootstrap as _bootstrap
from opnp._validation import check_features, check_linear, check_positive, iter_chunks
from opnp.scores import softmax

#: Rows per chunk of :func:`set_terms` (memory O(chunk * (C + D)) besides S).
CHUNK_SIZE = 4096


def set_terms(
    features: Any,
    weight: Any,
    bias: Any,
    weight_set: Any,
    *,
    temperature: float = 1.0,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, np.ndarray]:
    """One pass over ``features`` (N, D) through the FC layer (``weight`` (C, D), ``bias``):

    - ``sensitivity``: S (C, D) float64, the per-sample sensitivity of Eq. 6 (as
      :func:`opnp.sensitivity.parameter_sensitivity` with ``reduction="per_sample"``);
    - ``set``: a_k (N,), the sum of p_c(x_k) |h_d(x_k)| over the weights of
      ``weight_set`` ((C, D) bool, True = in the set);
    - ``all``: b_k (N,), the same sum over every weight.

    So ``S[weight_set].mean() == set.mean() / weight_set.sum()`` and
    ``S.mean() == all.mean() / S.size``."""
    w64, b64 = check_linear(weight, bias)
    h = check_features(features, "features", dim=w64.shape[1])
    t = check_positive(temperature, "temperature")
    members = np.asarray(weight_set)
    if members.dtype != bool or members.shape != w64.shape:
        raise ValueError(
            f"weight_set must be a bool array of the weight's shape {w64.shape}, got "
            f"{members.dtype} {members.shape}"
        )
    if not members.any():
        raise ValueError("weight_set holds no weight")
    if h.shape[0] == 0:
        raise ValueError("features has no rows")
    mask_t = np.ascontiguousarray(members.T, dtype=np.float64)  # (D, C)
    wt = np.ascontiguousarray(w64.T)
    total = np.zeros(w64.shape, dtype=np.float64)
    a = np.empty(h.shape[0], dtype=np.float64)
    b = np.empty(h.shape[0], dtype=np.float64)
    for start, hc in iter_chunks(h, int(chunk_size), "features", dtype=np.float64):
        p = hc @ wt
        p += b64
        if t != 1.0:
            p /= t
        softmax(p, out=p)
        abs_h = np.abs(hc)
        total += p.T @ abs_h
        stop = start + len(hc)
        # a_k = sum_c p_kc sum_d M_cd |h_kd|: one (k, D) x (D, C) product per chunk
        a[start:stop] = np.einsum("kc,kc->k", p, abs_h @ mask_t)
        b[start:stop] = abs_h.sum(axis=1) * p.sum(axis=1)
    return {"sensitivity": total / h.shape[0], "set": a, "all": b}


def _ratio(set_id, all_id, set_ood, all_ood) -> np.ndarray:
    """Relative ratio from the (resampled) means; the set and layer sizes cancel."""
    return (set_ood / set_id) / (all_ood / all_id)


def relative_ratio(
    id_terms: Mapping[str, np.ndarray],
    ood_terms: Mapping[str, np.ndarray],
    *,
    ood_name: str = "",
    n_resamples: int = _bootstrap.DEFAULT_N_RESAMPLES,
    confidence: float = _bootstrap.DEFAULT_CONFIDENCE,
    seed: int = _bootstrap.DEFAULT_SEED,
) -> dict[str, Any]:
    """The weight set's OOD / ID sensitivity ratio, the same ratio over all weights, and
    their quotient (the relative ratio), with a seeded percentile bootstrap interval of
    each: resample ``n_id`` ID images and, separately, ``n_ood`` OOD images with
    replacement (:func:`opnp.bootstrap.resample_indices`, streams ``"id"`` and
    ``"ood:<ood_name>"``) and recompute every mean. ``id_terms`` / ``ood_terms``: the
    ``set`` and ``all`` vectors of :func:`set_terms`.

    Returns ``ratio``, ``ratio_all``, ``relative_ratio`` (point values on all images),
    ``<each>_ci`` ``(low, high)``, ``relative_resamples`` (float64 array) and the
    settings used."""
    settings = _bootstrap.check_settings(
        {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    )
    arrays = {}
    for side, terms in (("id", id_terms), ("ood", ood_terms)):
        for key in ("set", "all"):
            values = np.asarray(terms[key], dtype=np.float64)
            if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
                raise ValueError(f"{side} terms {key!r} must be a finite non-empty 1-D array")
            arrays[side, key] = values
        if len(arrays[side, "set"]) != len(arrays[side, "all"]):
            raise ValueError(f"{side} terms 'set' and 'all' differ in length")
    means = {k: float(v.mean()) for k, v in arrays.items()}
    if min(means.values()) <= 0:
        raise ValueError(f"a mean sensitivity is not positive: {means}; no ratio is defined")
    n_id, n_ood = len(arrays["id", "set"]), len(arrays["ood", "set"])
    streams = {"id": _bootstrap.ID_STREAM, "ood": _bootstrap.ood_stream(ood_name)}
    sizes = {"id": n_id, "ood": n_ood}
    block = _bootstrap.block_size(n_id, n_ood)
    resampled = {k: np.empty(settings["n_resamples"]) for k in arrays}
    for start in range(0, settings["n_resamples"], block):
        rows = range(start, min(start + block, settings["n_resamples"]))
        for side in ("id", "ood"):
            idx = _bootstrap.resample_indices(
                sizes[side], rows, seed=settings["seed"], stream=streams[side]
            )
            for key in ("set", "all"):
                resampled[side, key][rows.start : rows.stop] = arrays[side, key][idx].mean(axis=1)
    out: dict[str, Any] = {
        "ratio": means["ood", "set"] / means["id", "set"],
        "ratio_all": means["ood", "all"] / means["id", "all"],
        "relative_ratio": _ratio(
            means["id", "set"], means["id", "all"], means["ood", "set"], means["ood", "all"]
        ),
    }
    draws = {
        "ratio": resampled["ood", "set"] / resampled["id", "set"],
        "ratio_all": resampled["ood", "all"] / resampled["id", "all"],
        "relative_ratio": _ratio(
            resampled["id", "set"],
            resampled["id", "all"],
            resampled["ood", "set"],
            resampled["ood", "all"],
        ),
    }
    for key, values in draws.items():
        out[f"{key}_ci"] = _bootstrap.percentile_interval(values, settings["confidence"])
    out["relative_resamples"] = draws["relative_ratio"]
    out.update(settings)
    out["n_id"], out["n_ood"] = n_id, n_ood
    return out


def random_set_ratios(
    id_sensitivity: Any,
    ood_sensitivity: Any,
    set_size: int,
    *,
    n_sets: int,
    seed: int = 0,
) -> np.ndarray:
    """Relative ratios (as :func:`relative_ratio`, on all images) of ``n_sets`` random
    weight sets of ``set_size`` weights each, drawn without replacement by a generator
    seeded with ``seed``: how far from 1 a set lands by chance alone. ``id_sensitivity``,
    ``ood_sensitivity``: S (C, D) on the ID and OOD images (:func:`set_terms`)."""
    s_id = np.asarray(id_sensitivity, dtype=np.float64).ravel()
    s_ood = np.asarray(ood_sensitivity, dtype=np.float64).ravel()
    if s_id.shape != s_ood.shape:
        raise ValueError(f"sensitivities differ in shape: {s_id.shape} vs {s_ood.shape}")
    if not 0 < int(set_size) <= s_id.size:
        raise ValueError(f"set_size must be in 1..{s_id.size}, got {set_size!r}")
    if isinstance(n_sets, bool) or int(n_sets) < 1:
        raise ValueError(f"n_sets must be a positive integer, got {n_sets!r}")
    ratio_all = s_ood.sum() / s_id.sum()
    rng = np.random.default_rng(seed)
    out = np.empty(int(n_sets))
    for i in range(int(n_sets)):
        pick = rng.choice(s_id.size, size=int(set_size), replace=False)
        out[i] = (s_ood[pick].sum() / s_id[pick].sum()) / ratio_all
    return out


def relative_verdict(
    interval: tuple[float, float],
    value: float,
    random_range: tuple[float, float] | None = None,
) -> tuple[str, str]:
    """``(direction, sentence)`` for a weight set's relative ratio ``value`` with bootstrap
    interval ``interval`` and, where given, the central range of random weight sets of
    the same size (:func:`random_set_ratios`). The direction is ``"more"`` / ``"less"``
    only when the interval excludes 1 (not image noise) *and* ``value`` lies outside the
    random sets' range (not the chance of which weights a set holds: the image bootstrap
    alone does not cover that); otherwise ``"none"``."""
    low, high = (float(x) for x in interval)
    if low > 1:
        direction = "more"
    elif high < 1:
        direction = "less"
    else:
        return "none", ("not distinguishable from the average weight (the interval includes 1)")
    if random_range is not None and random_range[0] <= value <= random_range[1]:
        return "none", (
            "not distinguishable from a random set of as many weights (the interval "
            f"excludes 1, but the ratio lies within the random sets' range "
            f"[{random_range[0]:.3g}, {random_range[1]:.3g}])"
        )
    beyond = "" if random_range is None else ", and beyond the random sets' range"
    return direction, (
        f"relatively {direction} sensitive on OOD than the average weight (the interval "
        f"excludes 1{beyond})"
    )


__all__ = [
    "CHUNK_SIZE",
    "random_set_ratios",
    "relative_ratio",
    "relative_verdict",
    "set_terms",
]
