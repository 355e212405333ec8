"""A PyTorch classifier split at its *head*, the final ``nn.Linear``: its input is the
feature h (B, D) and its weight and bias are the FC layer of the paper.

By default the head is the last ``nn.Linear`` that runs in the forward pass, found with
forward hooks on the first batch (so torchvision, timm and custom models work without
knowing their attribute names); ``head="fc"`` names it. Errors: a named module that is
not an ``nn.Linear``, a head that runs more than once per forward pass (it would not be
one layer applied to one feature), a forward pass that runs no ``nn.Linear``, a head
whose input is not (B, D), an ``nn.Linear`` other than the head that produces the
model's output or runs after the head when the output is not the head's (scores would
ignore it). Inputs: a model on the 'meta' device is refused at construction; integer
images and NaN / infinite images or features are refused naming the row (in the whole
tensor or loader); floating images are cast to the model's dtype. :class:`ModelHead` is the base of
:class:`opnp.nets.model_api.ModelDetector`; torch is imported when one is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["ModelHead"]


class ModelHead:
    """``model`` (a classifier ``nn.Module``) split at its head (``head``: a module name,
    or None to find it on the first batch), run on batches of ``batch_size`` inputs.

    Attributes after the first batch: ``head_name``, ``weight`` (C, D) and ``bias`` (C,)
    (float64 copies of the head). The model runs in eval mode inside every call (its
    training flag is restored afterwards), without gradients.
    """

    def __init__(self, model, head: str | None = None, *, batch_size: int = 256, progress=True):
        import torch

        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if head is not None and not isinstance(head, str):
            raise ValueError(f"head must be a module name (str) or None, got {head!r}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
        if meta:
            raise ValueError(
                f"the model's tensors are on the 'meta' device (no data), e.g. {meta[0]!r}: "
                "materialise and load its weights first (model.to_empty(device='cpu'), then "
                "load_state_dict)"
            )
        self.model = model
        self.head_name = head
        self.batch_size = batch_size
        self.progress = progress
        self.weight = self.bias = None
        self._head = None
        self._output_is_head = None
        if head is not None:
            self._head = self._named_linear(head)

    # -- the head ---------------------------------------------------------------------
    @property
    def device(self):
        import torch

        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def _named_linear(self, name: str):
        import torch

        modules = dict(self.model.named_modules())
        if name not in modules:
            linears = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
            raise ValueError(
                f"head {name!r} is not a module of the model; its nn.Linear modules: {linears}"
            )
        module = modules[name]
        if not isinstance(module, torch.nn.Linear):
            raise ValueError(
                f"head {name!r} is a {type(module).__name__}, not an nn.Linear: OPNP prunes the "
                "final fully connected layer; name the nn.Linear that produces the logits"
            )
        return module

    def _hooked_forward(self, x, modules: Mapping[str, Any]):
        """The model's output on ``x`` (eval mode, no gradients) and ``(name, input,
        output)`` of every call of the ``modules`` (name -> module), in call order."""
        import torch

        calls: list[tuple[str, Any, Any]] = []

        def record(name):
            return lambda _m, inputs, output: calls.append((name, inputs[0], output))

        hooks = [module.register_forward_hook(record(name)) for name, module in modules.items()]
        try:
            with torch.no_grad(), _eval_mode(self.model):
                out = self.model(x)
        finally:
            for hook in hooks:
                hook.remove()
        return out, calls

    def _first_forward(self, x):
        """First batch: forward pass with hooks on every nn.Linear. The head is the named
        one, or the last nn.Linear that runs. Refused: no nn.Linear ran, the head ran more
        than once, or an nn.Linear that is not the head produces the model's output (it runs
        after the classifier: scores on the head's input would ignore it). Returns (model
        output, [(head input, head output)])."""
        import torch

        linears = {
            name: module
            for name, module in self.model.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
        out, calls = self._hooked_forward(x, linears)
        if not calls:
            raise ValueError(
                "no nn.Linear ran in the model's forward pass: OPNP needs the final fully "
                "connected layer; pass head= the name of the nn.Linear producing the logits"
            )
        name = self.head_name if self._head is not None else calls[-1][0]
        runs = [(h, f) for n, h, f in calls if n == name]
        if self._head is None and len(runs) > 1:
            raise ValueError(
                f"the last nn.Linear of the forward pass, {name!r}, runs {len(runs)} "
                "times per forward pass, so it is not a classifier head applied once to one "
                "feature; pass head= the name of the final classification layer"
            )
        if runs and isinstance(out, torch.Tensor) and not _same_tensor(out, runs[-1][1]):
            last_head_call = max(i for i, call in enumerate(calls) if call[0] == name)
            after = [n for n, _, _ in calls[last_head_call + 1 :]]
            producers = [n for n, _, f in calls if n != name and _same_tensor(out, f)]
            hint = f" ({producers[-1]!r} produces them)" if producers else ""
            if after:
                raise ValueError(
                    f"nn.Linear {after[-1]!r} runs after the head {name!r} and the model's "
                    "output is not the head's output: scores computed from the head's input "
                    "would ignore what runs after it; pass head= the nn.Linear whose output is "
                    f"the model's logits{hint}"
                )
            if producers:
                raise ValueError(
                    f"the model's output comes from nn.Linear {producers[-1]!r}, but nn.Linear "
                    f"{name!r} runs after it (the default head is the last nn.Linear that "
                    f"runs): pass head={producers[-1]!r} if it is the classifier"
                )
        self.head_name = name
        if self._head is None:
            self._head = self._named_linear(name)
        return out, runs

    def _set_head_arrays(self) -> None:
        w = self._head.weight.detach().cpu().double().numpy().copy()
        b = self._head.bias
        self.weight = w
        self.bias = np.zeros(w.shape[0]) if b is None else b.detach().cpu().double().numpy().copy()

    @property
    def input_dtype(self):
        """The floating dtype the model computes in (its first floating parameter's)."""
        import torch

        for tensor in self.model.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def _prepare_input(self, x, row0: int = 0, what: str = "input"):
        """``x`` on the model's device in its floating dtype (float64 images for a float32
        model, float32 for a float16 / bfloat16 one: cast); ValueError for integer images
        (their scale is unknown) and for NaN / infinite values, naming the first bad row
        (``row0`` + position: the row in the whole tensor or loader)."""
        import torch

        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a batch tensor (B, ...), got {type(x).__name__}")
        if not (x.is_floating_point() or x.is_complex()):
            raise ValueError(
                f"{what} has dtype {x.dtype}; the model takes floating-point inputs: convert "
                "and normalise them as for training (e.g. x.float() / 255 for uint8 images)"
            )
        if x.is_complex():
            raise ValueError(f"{what} has complex dtype {x.dtype}; expected real images")
        _check_finite_rows(x, row0, what)
        return x.to(device=self.device, dtype=self.input_dtype)

    def _forward(self, x, row0: int = 0, what: str = "input"):
        """(features h (B, D), head logits (B, C)) of one batch, as detached tensors.
        ``row0``: the row of ``x[0]`` in the caller's data (for error messages)."""
        x = self._prepare_input(x, row0, what)
        if self._output_is_head is None:
            out, seen = self._first_forward(x)
        else:
            out, calls = self._hooked_forward(x, {self.head_name: self._head})
            seen = [(h, f) for _, h, f in calls]
        if len(seen) != 1:
            raise ValueError(
                f"head {self.head_name!r} ran {len(seen)} times in one forward pass; it must "
                "run exactly once (pass head= the final classification layer)"
            )
        h, logits = seen[0]
        if h.ndim != 2:
            raise ValueError(
                f"the input of head {self.head_name!r} has shape {tuple(h.shape)}; OPNP needs one "
                "feature vector per sample (B, D) (pool tokens / feature maps before the head)"
            )
        _check_finite_rows(h, row0, f"the model's features (head input) of {what}")
        if self._output_is_head is None:
            self._output_is_head = _same_tensor(out, logits)
        if self.weight is None:
            self._set_head_arrays()
        return h.detach(), logits.detach()

    # -- data -------------------------------------------------------------------------
    def _batches(self, data, labels=None) -> Iterator[tuple[Any, Any]]:
        """(inputs, labels or None) batches of a tensor (split by ``batch_size``), a
        tensor with ``labels``, or an iterable of tensors / (inputs, labels, ...) tuples."""
        import torch

        if isinstance(data, torch.Tensor):
            if labels is not None and len(labels) != len(data):
                raise ValueError(f"labels has {len(labels)} entries but the inputs {len(data)}")
            for start in range(0, len(data), self.batch_size):
                y = None if labels is None else labels[start : start + self.batch_size]
                yield data[start : start + self.batch_size], y
            return
        if labels is not None:
            raise ValueError("labels= goes with a tensor of inputs; a loader yields its own labels")
        if isinstance(data, Mapping) or not isinstance(data, Iterable):
            raise ValueError(
                f"expected a tensor of inputs or an iterable of batches (a DataLoader), got "
                f"{type(data).__name__}"
            )
        for batch in data:
            if isinstance(batch, torch.Tensor):
                yield batch, None
            elif isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
                yield batch[0], (batch[1] if len(batch) > 1 else None)
            else:
                raise ValueError(
                    f"a batch must be a tensor or an (inputs, labels) tuple, got {type(batch).__name__}"
                )

    def _progress(self, iterable, data, desc: str):
        from tqdm.auto import tqdm

        total = None
        try:
            total = len(data) if not hasattr(data, "shape") else -(-len(data) // self.batch_size)
        except TypeError:
            pass
        return tqdm(iterable, total=total, desc=desc, disable=not self.progress, leave=False)

    def _rows(self, data, labels=None):
        """``(row of the first input, inputs, labels)`` of each batch of :meth:`_batches`."""
        row = 0
        for x, y in self._batches(data, labels):
            yield row, x, y
            row += len(x)

    def features(self, x) -> np.ndarray:
        """The head's input h (B, D) of a batch, as numpy (float32 for a bfloat16 model,
        which numpy lacks; the model's dtype otherwise)."""
        h, _ = self._forward(self._as_batch(x))
        return to_numpy(h)

    def predict(self, x):
        """Logits (B, C) of the unpruned head (a tensor on the model's device)."""
        _, logits = self._forward(self._as_batch(x))
        return logits

    def _as_batch(self, x):
        import torch

        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a batch tensor (B, ...), got {type(x).__name__}")
        return x

    def _all_features(self, data, desc: str) -> np.ndarray:
        parts = [
            to_numpy(self._forward(x, row, desc)[0])
            for row, x, _ in self._progress(self._rows(data), data, desc)
        ]
        if not parts:
            raise ValueError(f"{desc}: no batches")
        return np.concatenate(parts)


def to_numpy(t) -> np.ndarray:
    """A detached tensor as numpy on the CPU (bfloat16, which numpy lacks, as float32)."""
    import torch

    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.detach().cpu().numpy()


def _same_tensor(a, b) -> bool:
    """``a`` is the tensor ``b`` (or equal to it: same shape, same values)."""
    import torch

    return a is b or (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and torch.equal(a, b)
    )


def _check_finite_rows(t, row0: int, what: str) -> None:
    """ValueError naming ``what``, the count of rows with NaN / infinite values and the
    first one (``row0`` + its position)."""
    import torch

    if t.numel() == 0 or bool(torch.isfinite(t).all()):
        return
    bad = ~torch.isfinite(t).reshape(t.shape[0], -1).all(dim=1)
    rows = torch.nonzero(bad).flatten().tolist()
    raise ValueError(
        f"{what} has NaN or infinite values in {len(rows)} row(s), first at row {row0 + rows[0]}"
    )


class _eval_mode:
    """Context manager: the model in eval mode, its training flag restored afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
