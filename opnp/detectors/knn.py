"""Deep nearest neighbours (Sun et al., 2022) on L2-normalised features.

fit: the bank is the L2-normalised training features z = h / ||h|| (normalised in
float64, stored as float32; ``max_train`` keeps a seeded uniform subsample of that many
rows, ``seed`` default 0). The numpy scorer never holds the whole bank: it keeps a
reference to the training features (a memory map of the feature store stays one) and
normalises one bank block at a time while scanning, so memory is one block whatever the
training set (1.28M x 2048 float32 would be 10 GB); the values are the same as a stored
bank's. The torch scorer, the faiss index and ``to_module`` build the whole bank
(:attr:`KNN.train_bank`) on first use. score: -(Euclidean distance from the normalised test feature
to its ``k``-th nearest stored training feature), k default 50 (the KNN-OOD paper, Sun et al. 2022, uses 1000 on ImageNet).

Exact search: for unit vectors ||a - b||^2 = 2 - 2 a.b, so the k-th nearest neighbour is
the k-th largest inner product, found by :func:`opnp.nearest.kth_largest_inner_product`
(no approximate index): a float32 screen of the bank, block by block, then the float64
recomputation of the few candidates near the k-th; a zero feature vector is left at
zero (distance sqrt(2) to all).

Precision: 2 - 2 a.b cancels when the neighbours are close (a.b near 1): a float32 inner
product, rounded to ~6e-8, puts an error of ~6e-8 / d^2 on d^2, which is 1 % at a distance
d of 0.01 (features of a small random CNN are that close; ``to_module``'s float64 score
head then differed from ``score`` by 1.1 %). So the k-th inner product is the float64
one (the normalised test features times the float32 bank) and the distances are exact
to float64 rounding of the stored bank; the float32 screen only chooses which products
to recompute, within a proven error bound (:mod:`opnp.nearest`).
``compute_dtype="float32"`` returns the screen's own k-th value (distances then carry
float32 rounding, relative ~1e-7 / d^2).

``backend="faiss"`` (optional, ``pip install faiss-cpu``; the official KNN-OOD code uses
faiss) searches the same float32 bank with an exact flat inner-product index
(``faiss.IndexFlatIP``, no approximation), which is faster for large banks (1.28M
ImageNet training features); its inner products are float32 sums, so the scores equal
the numpy path's to float32 rounding (tests/detectors/test_knn_faiss.py). The default
(``backend=None``) is the numpy path.
"""

from __future__ import annotations

import functools

import numpy as np

from opnp._validation import iter_chunks, page_releaser
from opnp.detectors.base import Detector
from opnp.detectors.registry import register_detector
from opnp.nearest import bank_block_rows, kth_largest_inner_product


def _import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ValueError(
            "knn backend='faiss' needs faiss: pip install faiss-cpu (or opnp[faiss])"
        ) from err
    return faiss


def l2_normalise(h: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(h, axis=1, keepdims=True)
    return h / np.where(norms > 0, norms, 1.0)


@register_detector("knn")
class KNN(Detector):
    label = "KNN"
    fit_needs = ("features",)
    default_grid = {"k": [1, 5, 10, 50]}
    defaults = {"k": 50, "max_train": None, "seed": 0, "backend": None}
    needs_head = False
    needs_fit = True
    #: Entries of the (chunk, bank block) float32 similarity matrix of the numpy scorer:
    #: sets the bank block's rows.
    similarity_block = 1 << 24

    def _check_params(self) -> None:
        p = self._params
        for key in ("k",) + (("max_train",) if p["max_train"] is not None else ()):
            v = p[key]
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
            p[key] = int(v)
        p["seed"] = int(p["seed"])
        if p["backend"] not in (None, "numpy", "faiss"):
            raise ValueError(f"backend must be None, 'numpy' or 'faiss', got {p['backend']!r}")
        if p["backend"] == "numpy":
            p["backend"] = None  # the default: not recorded in params
        if p["backend"] == "faiss":
            _import_faiss()

    def _features(self, features, name: str = "features"):
        h = super()._features(features, name)
        if self._fitted and h.shape[1] != self._train.shape[1]:
            raise ValueError(
                f"{name} has {h.shape[1]} columns but the training features had "
                f"{self._train.shape[1]}"
            )
        return h

    def _fit(self, train_features, train_labels) -> None:
        n = train_features.shape[0]
        rows = np.arange(n)
        if self._params["max_train"] is not None and self._params["max_train"] < n:
            rng = np.random.default_rng(self._params["seed"])
            rows = np.sort(rng.choice(n, size=self._params["max_train"], replace=False))
        if self._params["k"] > len(rows):
            raise ValueError(f"k={self._params['k']} exceeds the {len(rows)} training features")
        # The numpy path keeps the training features as given (a memory map of the
        # feature store stays one) and normalises one bank block at a time when scoring:
        # memory is one block, not the whole bank (1.28M x 2048 float32 = 10 GB).
        self._train = train_features
        for cached in ("_norms", "_inverse_norms"):  # a re-fit's bank has its own norms
            self.__dict__.pop(cached, None)
        self._rows = None if len(rows) == n else rows
        self._n_bank = len(rows)
        self._bank = None
        self._index = None
        if self._params["backend"] == "faiss":
            faiss = _import_faiss()
            self._index = faiss.IndexFlatIP(train_features.shape[1])
            self._index.add(self.train_bank)

    def _bank_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the bank: the L2-normalised training features (float64
        normalisation, stored as float32), computed from the training features now unless
        the whole bank is held (:attr:`train_bank`)."""
        if self._bank is not None:
            return self._bank[start:stop]
        stop = min(stop, self._n_bank)
        if self._rows is None:
            h = self._train[start:stop]
        else:
            h = self._train[self._rows[start:stop]]
        return l2_normalise(np.asarray(h, np.float64)).astype(np.float32)

    @property
    def train_bank(self) -> np.ndarray:
        """The whole bank (N_train, D) float32, built on first use and then held (the
        torch scorer, the faiss index and ``to_module`` use it; the numpy scorer streams
        it block by block instead)."""
        self._check_fitted_bank()
        if self._bank is None:
            bank = np.empty((self._n_bank, self._train.shape[1]), dtype=np.float32)
            for start in range(0, self._n_bank, self.chunk_size):
                block = self._bank_rows(start, start + self.chunk_size)
                bank[start : start + len(block)] = block
            self._bank = bank
        return self._bank

    def _check_fitted_bank(self) -> None:
        if getattr(self, "_train", None) is None:
            raise ValueError(f"{self.name}: call fit(train_features) before using train_bank")

    def _expected_dim(self) -> int | None:
        return self._train.shape[1] if self._fitted else None

    def _score_chunk_torch(self, h):
        import torch

        k = self._params["k"]
        dtype = torch.float32 if self.compute_dtype == "float32" else torch.float64
        norms = h.norm(dim=1, keepdim=True)
        z = (h / torch.where(norms > 0, norms, torch.ones_like(norms))).to(dtype)
        bank = self._device_cache.get(("bank", str(h.device)))
        if bank is None:
            bank = torch.as_tensor(self.train_bank, device=h.device)
            self._device_cache[("bank", str(h.device))] = bank
        best = None
        block = bank_block_rows(self.similarity_block, len(z), z.shape[1])
        for start in range(0, bank.shape[0], block):
            sims = z @ bank[start : start + block].to(dtype).T
            cand = sims if best is None else torch.cat([best, sims], dim=1)
            best = torch.topk(cand, min(k, cand.shape[1]), dim=1).values
        kth = best.min(dim=1).values.double()
        return -torch.sqrt(torch.clamp(2.0 - 2.0 * kth, min=0.0))

    def _score_chunk(self, h: np.ndarray) -> np.ndarray:
        k = self._params["k"]
        z = l2_normalise(h)
        if self._index is not None:
            sims, _ = self._index.search(np.ascontiguousarray(z, dtype=np.float32), k)
            kth = sims[:, k - 1].astype(np.float64)
        else:
            kth = kth_largest_inner_product(
                z,
                k,
                self._n_bank,
                screen_rows=self._screen_rows,
                exact_rows=self._exact_bank_rows,
                block_entries=self.similarity_block,
                exact=self.compute_dtype != "float32",
            )
        return -np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))

    def _screen_rows(self, start: int, stop: int) -> np.ndarray:
        """Bank rows ``start:stop`` for the float32 screen (:mod:`opnp.nearest`): the
        training features in float32 times their float32 inverse norms, one pass over the
        block instead of the bank's float64 normalisation."""
        rows = slice(start, stop) if self._rows is None else self._rows[start:stop]
        block = self._train[rows].astype(np.float32)  # a copy, even of float32 features
        block *= self._inverse_norms[start:stop, None]
        self._release_rows(rows)
        return block

    def _release_rows(self, rows) -> None:
        """Drop the memory map's pages of the training rows just read from this process
        (:func:`opnp._validation.page_releaser`): a scan would otherwise keep the whole
        float16 store resident in its RSS (4.9 GiB at ImageNet scale)."""
        if isinstance(rows, slice):
            first, last = rows.start, rows.stop
        elif len(rows):
            first, last = int(rows.min()), int(rows.max()) + 1
        else:
            return
        page_releaser(self._train)(first, last)

    def _exact_bank_rows(self, indices: np.ndarray) -> np.ndarray:
        """Bank rows ``indices`` (sorted, unique) in float64: exactly the stored bank's
        values (:meth:`_bank_rows`)."""
        if self._bank is not None:
            return self._bank[indices].astype(np.float64)
        rows = indices if self._rows is None else self._rows[indices]
        norms = self._norms[indices]
        h = np.asarray(self._train[rows], dtype=np.float64)
        self._release_rows(rows)
        h /= np.where(norms > 0, norms, 1.0)[:, None]  # = l2_normalise(h), its norms cached
        return h.astype(np.float32).astype(np.float64)

    @functools.cached_property
    def _norms(self) -> np.ndarray:
        """||h|| of every bank row in float64, computed as :func:`l2_normalise` does (the
        same bits), one pass over the training features on first use."""
        out = np.empty(self._n_bank, dtype=np.float64)
        chunks = iter_chunks(self._train, 65536, "train_features", np.float64, self._rows)
        for start, h in chunks:  # iter_chunks drops a memory map's pages after each chunk
            out[start : start + len(h)] = np.linalg.norm(h, axis=1)
        return out

    @functools.cached_property
    def _inverse_norms(self) -> np.ndarray:
        """1 / ||h|| of every bank row as float32 (0 for a zero row), for the screen."""
        norms = self._norms
        return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
