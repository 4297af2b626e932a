"""Count what a GPU training step would synchronise on, on any machine.

A host read of a device value (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``,
``.cpu()``, ``nonzero``) makes the CPU wait for the GPU; a blocking host-to-device copy
of a tensor built on the CPU does too (pageable memory), and so does building small
tensors on the host every step. :class:`SyncCounter` is a ``TorchDispatchMode`` that
counts these operations over a block of code. Its point is that it works without a
GPU: with the parameters and data on the ``meta`` device (shapes and dtypes only, no
values; autograd, double backward, ``torch.func`` and ``torch.optim`` run on it, and it
refuses to mix with host tensors as CUDA does), every host read is counted and answered
with a stand-in value, so one training iteration can be checked in a CPU-only test.

Stand-in values (``meta`` only; real devices give the real values): a boolean read is
True, except that of ``any(...)`` (False: nothing bad found) and of what is computed from
``any``/``all`` by negation, ``&`` and ``|``; a number is 1, a ``nonzero`` finds nothing,
a copy to the host is ones. gameopt phrases the checks it copies to the host in bulk so
that ones are the usual answers ("all finite", "converged", "accepted"), so the counted
path is the ordinary one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["SyncCounter", "SYNC_KINDS"]

#: The kinds of events counted, the keys of :attr:`SyncCounter.counts`.
SYNC_KINDS = ("item", "nonzero", "d2h", "h2d", "h2d_pinned", "host_tensor")

_aten = torch.ops.aten
_ITEM = {_aten._local_scalar_dense.default, _aten.item.default}
_DATA_DEPENDENT = {
    _aten.nonzero.default, _aten.masked_select.default, _aten._unique2.default,
    _aten.unique_dim.default, _aten.unique_consecutive.default, _aten.repeat_interleave.Tensor,
}
_LIFT = {_aten.lift_fresh.default, _aten.lift_fresh_copy.default}
_COPIES = {_aten._to_copy.default, _aten.copy_.default, _aten.to.device, _aten.to.dtype_layout}


def _device_of(x: Any) -> torch.device | None:
    return x.device if isinstance(x, torch.Tensor) else None


class SyncCounter(TorchDispatchMode):
    """Count host synchronisations and host-built tensors while the ``with`` block runs.

    Counted (:data:`SYNC_KINDS`), on tensors of a non-CPU device (``cuda``, ``meta``, ...):

    * ``item``: ``aten._local_scalar_dense`` / ``aten.item`` (``.item()``, ``bool()``,
      ``float()``, ``int()``, ``if tensor:``);
    * ``nonzero``: operations whose output shape depends on values (``nonzero``,
      ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``);
    * ``d2h``: copies from the device to the CPU (``.cpu()``, ``.tolist()``, ``.numpy()``);
    * ``h2d``: copies from unpinned CPU memory to the device (``torch.tensor(...).to(dev)``;
      ``non_blocking=True`` does not help there: CUDA waits for the stream before copying
      from pageable memory); ``h2d_pinned`` counts ``non_blocking`` copies from pinned memory;
    * ``host_tensor``: tensors created on the CPU (factory functions such as
      ``torch.tensor``, ``torch.arange``, ``torch.as_tensor`` of a number) while a device
      tensor exists in the block: they are what a step then copies to the device.

    :attr:`syncs` is ``item + nonzero + d2h + h2d``: the number of times the host waits.
    ``events`` keeps ``(kind, op name, Python stack summary)`` for each event when
    ``trace=True``, to find where a sync comes from.

    Args:
        trace: record a short Python stack for every event (slower; default False).

    Example::

        with SyncCounter() as c:
            loss.backward(); opt.step()
        assert c.syncs <= 1, c.report()
    """

    def __init__(self, trace: bool = False) -> None:
        super().__init__()
        self.trace = trace
        self.counts: Counter[str] = Counter({k: 0 for k in SYNC_KINDS})
        self.events: list[tuple[str, str, str]] = []

    @property
    def syncs(self) -> int:
        """Host waits: ``item + nonzero + d2h + h2d``."""
        c = self.counts
        return c["item"] + c["nonzero"] + c["d2h"] + c["h2d"]

    def report(self) -> str:
        """The counts, and with ``trace=True`` one line per event (for assertion messages)."""
        head = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return "\n".join([head] + [f"  {k} {op} at {where}" for k, op, where in self.events])

    def _record(self, kind: str, func: Any) -> None:
        self.counts[kind] += 1
        if self.trace:
            import traceback

            frames = [f for f in traceback.extract_stack()[:-3]
                      if "torch/" not in f.filename and "sync_budget" not in f.filename]
            where = " <- ".join(f"{f.filename.rsplit('/', 2)[-2:][-1]}:{f.lineno} {f.name}" for f in frames[-3:][::-1])
            self.events.append((kind, str(func), where))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105 (dispatch hook)
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        on_device = [t for t in tensors if t.device.type != "cpu"]
        if func in _ITEM and on_device:
            self._record("item", func)
            t = on_device[0]
            if t.device.type == "meta":
                known = getattr(t, "_gameopt_stand_in", None)
                return _stand_in_scalar(t.dtype) if known is None else known
        elif func in _DATA_DEPENDENT and on_device and kwargs.get("output_size") is None:
            self._record("nonzero", func)
            if on_device[0].device.type == "meta" and func is _aten.nonzero.default:
                return torch.empty((0, on_device[0].ndim), dtype=torch.long, device="meta")
        elif func in _COPIES:
            src = args[0] if args else None
            if func is _aten.copy_.default:
                dst_dev, src_dev = _device_of(args[0]), _device_of(args[1])
                non_blocking = bool(args[2]) if len(args) > 2 else bool(kwargs.get("non_blocking", False))
                if dst_dev is not None and src_dev is not None:
                    self._copy_kind(func, src_dev, dst_dev, non_blocking and _pinned(args[1]))
                    if dst_dev.type == "cpu" and src_dev.type == "meta":
                        args[0].fill_(1)
                        return args[0]
            else:
                dst = kwargs.get("device", args[1] if func is _aten.to.device and len(args) > 1 else None)
                if isinstance(src, torch.Tensor) and dst is not None:
                    dst_dev = torch.device(dst)
                    self._copy_kind(func, src.device, dst_dev,
                                    bool(kwargs.get("non_blocking", False)) and _pinned(src))
                    if dst_dev.type == "cpu" and src.device.type == "meta":
                        dtype = kwargs.get("dtype") or src.dtype
                        values = getattr(src, "_gameopt_stand_in_values", None)
                        if values is None and src.numel() == 1 and src.dtype == torch.bool:
                            values = [_known(src)]
                        if values is not None and len(values) == src.numel():
                            return torch.tensor(values, dtype=dtype).reshape(src.shape)
                        return torch.ones(src.shape, dtype=dtype)
        outs = func(*args, **kwargs)
        if on_device and on_device[0].device.type == "meta":
            _propagate_stand_in(func, args, outs)
        if func in _LIFT or (not tensors and func not in _COPIES):
            out_flat, _ = tree_flatten(outs)
            if any(isinstance(o, torch.Tensor) and o.device.type == "cpu" for o in out_flat):
                self._record("host_tensor", func)
        return outs

    def _copy_kind(self, func: Any, src: torch.device, dst: torch.device, pinned_async: bool) -> None:
        if src.type != "cpu" and dst.type == "cpu":
            self._record("d2h", func)
        elif src.type == "cpu" and dst.type != "cpu":
            self._record("h2d_pinned" if pinned_async else "h2d", func)


def _pinned(t: Any) -> bool:
    try:
        return isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.is_pinned()
    except RuntimeError:  # no accelerator: nothing can be pinned
        return False


_NEGATE = {_aten.logical_not.default, _aten.bitwise_not.default}
_AND = {_aten.logical_and.default, _aten.bitwise_and.Tensor, _aten.__and__.Tensor}
_OR = {_aten.logical_or.default, _aten.bitwise_or.Tensor, _aten.__or__.Tensor}


def _known(t: Any) -> bool:
    value = getattr(t, "_gameopt_stand_in", None)
    return True if value is None else value


def _propagate_stand_in(func: Any, args: tuple, out: Any) -> None:
    """Boolean stand-ins on ``meta`` that follow the usual answer: ``any`` of a check is False
    (nothing bad found), ``all`` True, and their negations, ands and ors follow."""
    if not (isinstance(out, torch.Tensor) and out.dtype == torch.bool):
        return
    name = func.overloadpacket
    if name is _aten.stack and out.ndim == 1:  # a vector of flags read at once
        try:
            out._gameopt_stand_in_values = [_known(t) for t in args[0]]
        except (AttributeError, RuntimeError):  # pragma: no cover
            pass
        return
    if out.numel() != 1:
        return
    if name is _aten.any:
        value = False
    elif name is _aten.all:
        value = True
    elif func in _NEGATE:
        value = not _known(args[0])
    elif func in _AND:
        value = _known(args[0]) and _known(args[1])
    elif func in _OR:
        value = _known(args[0]) or _known(args[1])
    else:
        return
    try:
        out._gameopt_stand_in = value
    except (AttributeError, RuntimeError):  # pragma: no cover - tensors take attributes
        pass


def _stand_in_scalar(dtype: torch.dtype) -> Any:
    if dtype == torch.bool:
        return True
    if dtype.is_floating_point or dtype.is_complex:
        return 1.0
    return 1
