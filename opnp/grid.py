"""Exact, fast scoring of a grid of OPNP pruning configurations (validation search).

A config is a dict with any of ``weight_low``, ``weight_high``, ``neuron_low``,
``neuron_high`` (percent, default 0; other keys are ignored). For each config the
scores equal those of ``create_detector("opnp", ...)`` with the same masks
(:func:`opnp.pruning.pruning_masks`), to float64 rounding (tested to 1e-9 relative).

How: a plan of weight and neuron groups shared by the configs (:class:`GridPlan`) and
the kernels of :mod:`opnp.grid_kernels` (incremental, exponential-domain updates).

Memory: a few chunks of (rows, C) float64 per group pair, bounded by
``memory_budget`` and independent of N, plus the (n_configs, N) output (``out=`` may
be a memory-mapped array).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from opnp._validation import (
    check_choice,
    check_features,
    check_positive,
    iter_chunks,
)
from opnp.grid_kernels import (
    exponentiate_pairs,
    group_contributions,
    score_grid_torch,
    traverse_additive,
    traverse_products,
    traverse_separable,
)
from opnp.grid_plan import PERCENT_KEYS, GridPlan

SCORES = ("energy", "msp", "maxlogit")
# Bytes of one (rows, C) float64 array of the traversal (its row block); see score_pruning_grid.
BLOCK_BYTES = 512 * 1024


def default_threads() -> int:
    """Threads for the grid traversal: the BLAS thread limit in force
    (``threadpoolctl``; the workflow's jobs set it to the rule's threads), at most the
    CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_info

        blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # noqa: BLE001 - threadpoolctl is optional here
        blas = []
    return max(1, min(cpus, max(blas) if blas else cpus))


def score_pruning_grid(
    features: Any,
    weight: Any,
    bias: Any,
    param_sensitivity: Any,
    neuron_sensitivity: Any,
    configs: Sequence[Mapping[str, Any]],
    score: str = "energy",
    temperature: float = 1.0,
    react_threshold: float | None = None,
    chunk_size: int | None = None,
    memory_budget: int = 512 * 2**20,
    out: np.ndarray | None = None,
    plan: GridPlan | None = None,
    n_threads: int | None = None,
    device: Any = None,
    threshold_scope: str = "matrix",
) -> np.ndarray:
    """Scores (n_configs, N) float64 of the OPNP-pruned layer for every config.

    ``score``: "energy" (T logsumexp(f'/T), the OPNP score), "msp" (opnp+msp) or
    "maxlogit". ``react_threshold``: clip the features at this value first (opnp+react;
    sensitivities stay those of the unclipped features, as the caller passes them).
    ``chunk_size`` (rows per chunk) defaults to what fits ``memory_budget`` bytes of
    group contributions. ``out``: optional preallocated (n_configs, N) array.
    ``plan``: a :class:`GridPlan` of the same arguments, to reuse across feature sets.
    ``threshold_scope``: the weight thresholds' scope (:class:`GridPlan`; when no plan).
    ``n_threads``: threads sharing the per-config traversal (default
    :func:`default_threads`); the scores do not depend on it. ``device`` (e.g.
    ``"cuda"``; :mod:`opnp.backend`): score with torch there (float64, the additive
    traversal of step 3 with a log-sum-exp per config, which a GPU does fast); a CUDA
    tensor as ``features`` scores on its device without ``device=``. Equal to the numpy
    path to 1e-9 relative (tested on CPU torch).
    """
    from opnp.backend import check_tensor_features, is_tensor, torch_device

    check_choice(score, "score", SCORES)
    t = check_positive(temperature, "temperature")
    if plan is None:
        plan = GridPlan(
            weight, bias, param_sensitivity, neuron_sensitivity, configs, threshold_scope
        )
    dev = torch_device(features, device)
    if dev is not None and is_tensor(features):
        h = check_tensor_features(features, "features", dim=plan.weight.shape[1])
    else:
        h = check_features(features, "features", dim=plan.weight.shape[1])
    n, c = h.shape[0], plan.weight.shape[0]
    n_configs = len(plan.values)
    if out is None:
        out = np.empty((n_configs, n), dtype=np.float64)
    elif out.shape != (n_configs, n):
        raise ValueError(f"out must have shape {(n_configs, n)}, got {out.shape}")
    if chunk_size is None:
        per_row = (plan.n_pairs + len(plan.weight_axis.codes) + 3) * c * 8
        chunk_size = int(min(8192, max(64, memory_budget // per_row)))
    if dev is not None:
        return score_grid_torch(plan, h, score, t, react_threshold, int(chunk_size), out, dev)
    threads = default_threads() if n_threads is None else int(n_threads)
    if threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    _score_on_cpu(plan, h, score, t, react_threshold, int(chunk_size), threads, out)
    return out


def _score_on_cpu(
    plan: GridPlan,
    h: np.ndarray,
    score: str,
    t: float,
    react_threshold: float | None,
    chunk_size: int,
    threads: int,
    out: np.ndarray,
) -> None:
    """Fill ``out`` (n_configs, N): per chunk of rows the group contributions, then the
    traversal of every config on row blocks shared between ``threads`` threads."""
    c, n_wgroups = plan.weight.shape[0], len(plan.weight_axis.codes)
    wkept = {w: plan.weight_axis.kept(*w) for _, cells in plan.order for w, _ in cells}
    nkept = {ncell: plan.neuron_axis.kept(*ncell) for ncell, _ in plan.order}
    bias_exp = (np.exp((plan.bias - plan.bias.max()) / t), plan.bias.max() / t)
    # The traversal runs on blocks of ``block_rows`` rows so that the (rows, C) arrays it
    # updates stay in the CPU cache; the products above use the whole chunk.
    block_rows = max(1, min(chunk_size, BLOCK_BYTES // (8 * c)))
    separable = score == "energy" and plan.separable
    n_a, n_b = (len(plan.a_chain), len(plan.b_chain)) if separable else (0, 0)
    # Scratch per thread: group sums / products (n_wgroups, rows, C), logits, tmp, res,
    # and the A / B products of the separable energy path.
    scratch = [
        (
            np.empty((n_wgroups, block_rows, c)),
            np.empty((block_rows, c)),
            np.empty((block_rows, c)),
            np.empty(block_rows),
            np.empty((block_rows, n_a, c)),
            np.empty((block_rows, n_b, c)),
            np.empty((0 if score == "maxlogit" else plan.n_pairs, block_rows, c)),
        )
        for _ in range(threads)
    ]

    def run_blocks(k: int, z: dict, start: int, n_rows: int) -> None:
        g, logits, tmp, res, a, b, ebuf = scratch[k]
        for b0 in range(k * block_rows, n_rows, threads * block_rows):
            rows = min(block_rows, n_rows - b0)
            zb = {key: v[b0 : b0 + rows] for key, v in z.items()}
            exps = None if score == "maxlogit" else exponentiate_pairs(plan, zb, t, ebuf[:, :rows])
            if exps is None:  # additive path (max logit, or a row with a wide range)
                traverse_additive(
                    plan, zb, wkept, nkept, score, t,
                    g[:, :rows], logits[:rows], tmp[:rows], res[:rows],
                    out, start + b0,
                )  # fmt: skip
            elif separable:
                traverse_separable(
                    plan, *exps, nkept, t, bias_exp,
                    g[:, :rows], a[:rows], b[:rows], out, start + b0,
                )  # fmt: skip
            else:
                traverse_products(
                    plan, *exps, wkept, nkept, score, t, bias_exp,
                    g[:, :rows], logits[:rows], out, start + b0,
                )  # fmt: skip

    buffers: dict = {}  # the contributions' output arrays, reused by every chunk
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start, hc in iter_chunks(h, chunk_size, "features", dtype=np.float64):
            if react_threshold is not None:
                hc = np.minimum(hc, float(react_threshold))
            z = group_contributions(plan, hc, buffers, pool)
            jobs = [pool.submit(run_blocks, k, z, start, len(hc)) for k in range(threads)]
            for job in jobs:
                job.result()


def evaluate_pruning_grid(
    id_features: Any,
    ood_features: Mapping[str, Any] | Any,
    weight: Any,
    bias: Any,
    param_sensitivity: Any,
    neuron_sensitivity: Any,
    configs: Sequence[Mapping[str, Any]],
    score: str = "energy",
    temperature: float = 1.0,
    react_threshold: float | None = None,
    convention: str = "paper",
    chunk_size: int | None = None,
    device: Any = None,
    threshold_scope: str = "matrix",
) -> list[dict]:
    """Metrics of every config on every OOD set: one dict per (config, OOD set) with the
    config's four percentages, ``ood_set`` and ``fpr95, auroc, aupr_in, aupr_out``
    (fractions in [0, 1], :func:`opnp.metrics.evaluate`). A single OOD array is named
    "ood". ``device``, ``threshold_scope``: as in :func:`score_pruning_grid`."""
    from opnp.metrics import evaluate

    if not isinstance(ood_features, Mapping):
        ood_features = {"ood": ood_features}
    plan = GridPlan(weight, bias, param_sensitivity, neuron_sensitivity, configs, threshold_scope)
    kw = dict(
        score=score,
        temperature=temperature,
        react_threshold=react_threshold,
        chunk_size=chunk_size,
        plan=plan,
        device=device,
    )
    id_scores = score_pruning_grid(id_features, None, None, None, None, configs, **kw)
    rows = []
    for name, feats in ood_features.items():
        ood_scores = score_pruning_grid(feats, None, None, None, None, configs, **kw)
        for i, values in enumerate(plan.values):
            rows.append(
                {
                    **dict(zip(PERCENT_KEYS, values, strict=True)),
                    "ood_set": name,
                    **evaluate(id_scores[i], ood_scores[i], convention=convention),
                }
            )
    return rows
