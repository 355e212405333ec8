"""The kernels of :func:`opnp.grid.score_pruning_grid`: group contributions and the
traversals that turn them into every config's scores.

How it avoids one dense (N, D) x (D, C) product per config:

1. Every weight gets a *group*: the set of grid thresholds that prune it (for each
   distinct nonzero ``weight_low`` p, whether S < percentile(S, p); for each
   ``weight_high``, whether S > percentile(S, 100 - p)). Weights in one group are kept
   or pruned together by every config. Neurons get groups the same way. Nested
   percentiles make the number of groups small (about 1 + number of distinct nonzero
   percentages per axis), and each config keeps a union of groups.
2. Per chunk of rows, the logit contribution of every (weight group, neuron group) pair
   is one product Z[w, n] = H[:, cols(n)] @ (W * [group == w])[:, cols(n)]^T (dense, or
   sparse for groups with few weights), costing about as much as *one* full-layer
   product per weight group in total, for the whole grid.
3. Configs are visited in a serpentine order over (neuron cell, weight cell); the pruned
   logits of the next config are the current ones plus / minus the few group
   contributions whose kept-status changes (incremental update), then scored.
4. Energy and MSP never exponentiate per config: each row block exponentiates every
   group pair once, E[w, n] = exp((Z[w, n] - max_c Z[w, n]) / T), and the incremental
   update of step 3 becomes a product, exp(f'/T - shift) = exp(b/T - shift_b) *
   prod of the kept E[w, n] (multiply when a group is kept, divide when it is pruned),
   so a config costs one multiply (or divide) and one sum over (rows, C) instead of an
   add, a max, a subtract, an exp and a sum. Every partial product lies in
   [exp(-R), 1] with R the sum over the pairs (and the bias) of the row's
   (max - min) / T; rows blocks where R > 600 (where a product could leave float64's
   normal range) use the additive path of step 3 instead, so no product under- or
   overflows and each score keeps float64 relative accuracy (a few hundred roundings).
5. Energy needs only the sums over classes. When no weight group lies in both a low
   and a high tail (always, unless one config's low tail and another's high tail
   overlap), the kept weight groups of (wl, wh) are those of A(wl) (the middle group
   and the low-tail groups wl keeps) plus those of B(wh) (the high-tail groups wh
   keeps), so sum_c P_c = sum_c A(wl)_c B(wh)_c: per neuron cell, the few products
   A(wl) and B(wh) are built (each from a smaller one) and every (wl, wh) sum comes out
   of one batched matrix product, instead of a multiply and a sum per config.
   Row blocks are shared between ``n_threads`` threads (numpy releases the GIL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from opnp.grid_plan import GridPlan

# Largest total log-range (sum over group pairs and the bias of (max - min) / T of a
# row) for which a row block uses the multiplicative path: exp(-600) ~ 1e-261 stays far
# above float64's smallest normal number (~2e-308), and exp(600) below its largest.
MAX_LOG_RANGE = 600.0


def group_contributions(
    plan: GridPlan, h: np.ndarray, buffers: dict | None = None, pool=None
) -> dict[tuple[int, int], np.ndarray]:
    """Z[w, n] = h[:, cols(n)] @ (W * [group == w])[:, cols(n)]^T (rows, C) of every pair:
    two products per neuron group (its dense and its sparse weight groups).

    ``buffers`` (a dict kept by the caller across chunks) holds the (rows, k * C) output
    arrays, reused by every chunk of at most as many rows: fresh arrays of this size
    would be new memory maps whose pages the kernel faults in and zeroes per chunk
    (measured: a third of the time of this step). Every Z is C-contiguous (rows, C)
    row-major, as the row-wise passes that follow read it. With ``pool`` (an executor),
    the sparse products (single-threaded in scipy, GIL released) run on its threads
    while this thread runs the dense ones (BLAS threads): the same arithmetic."""
    out = {}
    rows, c = h.shape[0], plan.weight.shape[0]
    buffers = {} if buffers is None else buffers

    def buffer(kind: str, g_n: int, keys: list) -> np.ndarray:
        buf = buffers.get((kind, g_n))
        if buf is None or buf.shape[0] < rows:
            buf = buffers[(kind, g_n)] = np.empty((rows, len(keys) * c))
        for i, key in enumerate(keys):
            out[key] = buf[:rows, i * c : (i + 1) * c]
        return buf[:rows]

    def sparse_product(zb, csr, h_nt):  # (k * C, rows) from scipy, stored row-major
        np.copyto(zb, (csr @ h_nt).T)

    ht = np.ascontiguousarray(h.T)  # (D, rows): a neuron group's columns are rows here
    jobs = []
    for g_n, cols in enumerate(plan.neuron_cols):
        dense_keys, dense, sparse_keys, csr = plan.stacks[g_n]
        h_nt = ht[cols]
        if sparse_keys:
            args = (buffer("sparse", g_n, sparse_keys), csr, h_nt)
            if pool is None:
                sparse_product(*args)
            else:
                jobs.append(pool.submit(sparse_product, *args))
        if dense_keys:
            np.matmul(h_nt.T, dense, out=buffer("dense", g_n, dense_keys))
    for job in jobs:
        job.result()
    return out


def _neuron_cells(plan, nkept, keep, drop):
    """Walk the plan's neuron cells in order (module docstring, step 3). Before yielding a
    cell's weight cells, call ``keep(g_w, key)`` for every (weight group, neuron group)
    pair whose neuron group becomes kept and ``drop(g_w, key)`` for every pair whose group
    becomes pruned, so the caller's per-weight-group state (a sum of contributions, or a
    product of exponentials) follows the cell. Every traversal shares this walk."""
    kept_n = np.zeros(len(plan.neuron_cols), dtype=bool)
    for ncell, wcells in plan.order:
        new = nkept[ncell]
        for g_n in np.nonzero(new != kept_n)[0]:
            for g_w, key in plan.pairs_of_neuron[g_n]:
                (keep if new[g_n] else drop)(g_w, key)
        kept_n = new
        yield wcells


def traverse_additive(plan, z, wkept, nkept, score, t, g, logits, tmp, res, out, row0) -> None:
    """Visit every config of ``plan`` on one block of rows, updating the logits
    incrementally, and write the scores to ``out[:, row0 : row0 + rows]``."""
    rows = len(logits)
    g[:] = 0.0  # G_w = sum of Z[w, n] over the kept neuron groups

    def keep(g_w, key):
        g[g_w] += z[key]

    def drop(g_w, key):
        g[g_w] -= z[key]

    for wcells in _neuron_cells(plan, nkept, keep, drop):
        kept_w = None
        for wcell, idx in wcells:
            neww = wkept[wcell]
            if kept_w is None:  # first weight cell of this neuron cell: from scratch
                logits[:] = plan.bias
                for g_w in np.nonzero(neww)[0]:
                    logits += g[g_w]
            else:
                for g_w in np.nonzero(neww != kept_w)[0]:
                    if neww[g_w]:
                        logits += g[g_w]
                    else:
                        logits -= g[g_w]
            kept_w = neww
            _score_into(logits, score, t, tmp, res)
            for i in idx:
                out[i, row0 : row0 + rows] = res


def exponentiate_pairs(plan, z, t, buf) -> tuple[dict, dict] | None:
    """One row block: E[w, n] = exp((Z[w, n] - max_c Z) / T) of every pair, written
    to ``buf`` (n_pairs, rows, C) (row-major, whatever the layout of ``z``). Returns
    ({pair: E}, {pair: the shifts max_c Z / T (rows,)}), or None when a row's total
    log-range exceeds :data:`MAX_LOG_RANGE`. One pass per pair (its range, then its
    exponentials while it is in the cache; each is <= 1, so none overflows); the range
    check comes after all of them, so a block that fails it (rare: the additive path
    follows) wastes its exponentials."""
    shifts = {}
    total = np.full(next(iter(z.values())).shape[0], plan.bias_range)
    e = {}
    for i, (key, zz) in enumerate(z.items()):
        hi = zz.max(axis=1)
        total += hi - zz.min(axis=1)
        ei = buf[i]
        np.subtract(zz, hi[:, None], out=ei)
        if t != 1.0:
            ei /= t
            hi /= t
        shifts[key] = hi
        e[key] = np.exp(ei, out=ei)
    if total.max() / t > MAX_LOG_RANGE:
        return None
    return e, shifts


def _product_updates(f, f_shift, z, shifts):
    """``keep`` / ``drop`` of :func:`_neuron_cells` for the exponential domain: multiply
    (divide) F_w by E[w, n] and add (subtract) its shift."""

    def keep(g_w, key):
        f[g_w] *= z[key]
        f_shift[g_w] += shifts[key]

    def drop(g_w, key):
        f[g_w] /= z[key]
        f_shift[g_w] -= shifts[key]

    return keep, drop


def traverse_products(plan, z, shifts, wkept, nkept, score, t, bias_exp, f, p, out, row0) -> None:
    """:func:`traverse_additive` in the exponential domain (module docstring, step 4): ``z``
    holds E[w, n] = exp(Z[w, n] / T - shift[w, n]); F_w = prod of E[w, n] over the kept
    neuron groups, P = exp(b / T - shift_b) * prod of the kept F_w = exp(f' / T - shift)
    with the shifts tracked per row; energy = T (log sum_c P + shift), MSP = max P / sum P.
    ``bias_exp``: (exp((b - max b) / T), max b / T).
    """
    rows = p.shape[0]
    f[:] = 1.0
    f_shift = np.zeros((f.shape[0], rows))
    keep, drop = _product_updates(f, f_shift, z, shifts)
    for wcells in _neuron_cells(plan, nkept, keep, drop):
        kept_w = None
        for wcell, idx in wcells:
            neww = wkept[wcell]
            if kept_w is None:  # first weight cell of this neuron cell: from scratch
                p[:] = bias_exp[0]
                shift = np.full(rows, bias_exp[1])
                for g_w in np.nonzero(neww)[0]:
                    p *= f[g_w]
                    shift += f_shift[g_w]
            else:
                for g_w in np.nonzero(neww != kept_w)[0]:
                    if neww[g_w]:
                        p *= f[g_w]
                        shift += f_shift[g_w]
                    else:
                        p /= f[g_w]
                        shift -= f_shift[g_w]
            kept_w = neww
            total = p.sum(axis=1)
            if score == "energy":
                res = t * (np.log(total) + shift)
            else:  # msp = max_c exp(f'_c / T) / sum_c exp(f'_c / T)
                res = p.max(axis=1) / total
            for i in idx:
                out[i, row0 : row0 + rows] = res


def traverse_separable(plan, z, shifts, nkept, t, bias_exp, f, a, b, out, row0) -> None:
    """Energy of every config of a separable plan (module docstring, step 5) on one row
    block: per neuron cell, F_w as in :func:`traverse_products`, then A(wl) = exp(b / T) *
    prod of F over A's groups and B(wh) likewise (``a``: (rows, n_wl, C), ``b``:
    (rows, n_wh, C)), and sum_c A(wl)_c B(wh)_c for all (wl, wh) at once as one batched
    matrix product."""
    rows = f.shape[1]
    f[:] = 1.0
    f_shift = np.zeros((f.shape[0], rows))
    bt = b.transpose(0, 2, 1)
    a_sets, b_sets = plan.a_sets.astype(np.float64), plan.b_sets.astype(np.float64)
    keep, drop = _product_updates(f, f_shift, z, shifts)
    for wcells in _neuron_cells(plan, nkept, keep, drop):
        for buf, chain, start in ((a, plan.a_chain, bias_exp[0]), (b, plan.b_chain, 1.0)):
            for i, j, groups in chain:
                dst = buf[:, i]
                if len(groups) == 0:
                    dst[:] = start if j < 0 else buf[:, j]
                    continue
                np.multiply(start if j < 0 else buf[:, j], f[groups[0]], out=dst)
                for g_w in groups[1:]:
                    dst *= f[g_w]
        sums = np.matmul(a, bt)  # (rows, n_wl, n_wh)
        shift_a = a_sets @ f_shift + bias_exp[1]  # (n_wl, rows)
        shift_b = b_sets @ f_shift
        # every (wl, wh) of the cell at once: (n_wl, n_wh, rows)
        res = t * (np.log(sums.transpose(1, 2, 0)) + shift_a[:, None] + shift_b[None])
        for (wl, wh), idx in wcells:
            cell = res[plan.a_index[wl], plan.b_index[wh]]
            for i in idx:
                out[i, row0 : row0 + rows] = cell


def _score_into(logits: np.ndarray, kind: str, temperature: float, tmp: np.ndarray, out):
    """Energy / MSP / max logit of each row, with preallocated scratch ``tmp``."""
    m = logits.max(axis=1)
    if kind == "maxlogit":
        out[:] = m
        return
    np.subtract(logits, m[:, None], out=tmp)
    if temperature != 1.0:
        tmp /= temperature
    np.exp(tmp, out=tmp)
    log_sum = np.log(tmp.sum(axis=1))
    if kind == "energy":
        out[:] = m + temperature * log_sum
    else:  # msp = exp(max/T - logsumexp(f/T)) = 1 / sum exp((f - max)/T)
        out[:] = np.exp(-log_sum)


def score_grid_torch(plan, h, score, t, react_threshold, chunk_size, out, device) -> np.ndarray:
    """:func:`score_pruning_grid` with torch on ``device``: per chunk, one product per
    neuron group (its dense and sparse weight groups as one dense matrix), then the
    additive traversal (step 3) with each config's scores kept on the device and copied
    to ``out`` once per chunk."""
    import torch

    from opnp.backend import as_tensor, device_chunks

    c = plan.weight.shape[0]
    mats = []
    for g_n, (dense_keys, dense, sparse_keys, csr) in enumerate(plan.stacks):
        parts = [m for m in (dense, None if csr is None else csr.toarray().T) if m is not None]
        cols = as_tensor(plan.neuron_cols[g_n], device, torch.int64)
        mats.append((dense_keys + sparse_keys, as_tensor(np.hstack(parts), device), cols))
    bias = as_tensor(plan.bias, device)
    wkept = {w: plan.weight_axis.kept(*w) for _, cells in plan.order for w, _ in cells}
    nkept = {ncell: plan.neuron_axis.kept(*ncell) for ncell, _ in plan.order}
    n_w = len(plan.weight_axis.codes)
    with torch.no_grad():
        for start, hc in device_chunks(h, chunk_size, "features", device):
            if react_threshold is not None:
                hc = hc.clamp(max=float(react_threshold))
            rows = len(hc)
            z = {}
            for keys, m, cols in mats:
                zz = hc[:, cols] @ m
                for i, key in enumerate(keys):
                    z[key] = zz[:, i * c : (i + 1) * c]
            res = torch.empty((len(plan.values), rows), dtype=torch.float64, device=device)
            g = torch.zeros((n_w, rows, c), dtype=torch.float64, device=device)
            logits = torch.empty((rows, c), dtype=torch.float64, device=device)

            def keep(g_w, key, g=g, z=z):
                g[g_w] += z[key]

            def drop(g_w, key, g=g, z=z):
                g[g_w] -= z[key]

            for wcells in _neuron_cells(plan, nkept, keep, drop):
                for wcell, idx in wcells:
                    logits.copy_(bias.expand(rows, c))
                    for g_w in np.nonzero(wkept[wcell])[0]:
                        logits += g[g_w]
                    if score == "maxlogit":
                        val = logits.max(dim=1).values
                    elif score == "energy":
                        val = t * torch.logsumexp(logits / t, dim=1)
                    else:
                        val = torch.softmax(logits / t, dim=1).max(dim=1).values
                    res[list(idx)] = val
            out[:, start : start + rows] = res.cpu().numpy()
    return out
