"""Collectives gameopt uses under ``torch.distributed`` (data parallel over ranks).

The convention everywhere: every rank holds the same parameters, passes its own
equal-sized share of the batch, and the ranks' gradients are averaged. A term that
couples all samples of the batch (the primal-dual kernel density, the linear dual)
gathers the other ranks' samples with :func:`gather_rows`, whose backward sums the
ranks' gradients for each rank's own rows: rank r then holds the gradient, with
respect to its replica of the parameters, of the *sum* of all ranks' losses, and the
mean over ranks is the gradient of the mean loss, i.e. of the full-batch loss when
each rank's loss is the full-batch loss or a mean over its own share.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import GameInputError

__all__ = ["gather_rows", "check_same_shapes", "check_distributed", "all_reduce_mean"]


def check_distributed(what: str, distributed: bool) -> None:
    """Validate a ``distributed=`` flag at construction.

    Args:
        what: the object being built, as the messages should name it (``"ConsensusOptimizer"``).
        distributed: the flag. ``False`` while a process group with several ranks is running
            warns (a ``UserWarning`` naming ``distributed=True``): gameopt's gradients bypass
            ``DistributedDataParallel``'s hooks, so each rank would train on its own share alone.

    Raises:
        GameInputError: ``distributed=True`` without an initialised ``torch.distributed`` process
            group (call ``torch.distributed.init_process_group`` first, e.g. under ``torchrun``).
    """
    if not distributed:
        _warn_if_unreduced(what)
        return
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise GameInputError(
            f"{what} with distributed=True needs an initialised torch.distributed process group: call "
            "torch.distributed.init_process_group(...) first (e.g. under torchrun)"
        )


def all_reduce_mean(tensors: list[Tensor], group: Any = None) -> list[Tensor]:
    """Mean over the ranks of ``group`` of a list of tensors, in one flat all-reduce.

    Args:
        tensors: tensors of any shapes, one dtype and device; they are concatenated flat.
        group: the process group (default ``None``: the world).

    Returns:
        New tensors with the shapes of ``tensors``, holding the ranks' means (the inputs are not
        changed). Every rank of ``group`` must call it with the same shapes.
    """
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    flat.div_(dist.get_world_size(group))
    return [part.view_as(t) for part, t in zip(torch.split(flat, [t.numel() for t in tensors]), tensors)]


def _warn_if_unreduced(what: str) -> None:
    """Warn when several ranks run but ``distributed=False``: nothing would average or gather across them.

    gameopt computes gradients with ``torch.autograd.grad``, which does not fire the
    hooks through which ``DistributedDataParallel`` averages ``.backward()`` gradients,
    so a DDP-wrapped model alone would silently train each rank on its own share.
    """
    import warnings

    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        warnings.warn(
            f"{what}: torch.distributed runs {torch.distributed.get_world_size()} ranks but "
            "distributed=False, so each rank works on its own share of the batch alone (DistributedDataParallel "
            "does not average gradients that gameopt computes with torch.autograd.grad). Pass "
            "distributed=True for the full-batch step",
            stacklevel=4,
        )


def _world(group: Any) -> tuple[int, int]:
    import torch.distributed as dist

    return dist.get_rank(group), dist.get_world_size(group)


def _all_gather_cat(t: Tensor, group: Any) -> Tensor:
    import torch.distributed as dist

    _, world = _world(group)
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t, group=group)
    return torch.cat(parts)


def _reduce_scatter_rows(t: Tensor, group: Any) -> Tensor:
    """Sum over ranks of ``t`` (R * rows, ...), then this rank's block of rows.

    Done as an all-reduce and a slice: gloo has no reduce-scatter on the CPU, and the
    tensors here are sample-sized, not parameter-sized.
    """
    import torch.distributed as dist

    rank, world = _world(group)
    total = t.detach().clone().contiguous()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    rows = t.shape[0] // world
    return total[rank * rows:(rank + 1) * rows]


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0; backward: sum the ranks' gradients, keep this rank's rows."""

    @staticmethod
    def forward(ctx, t: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group = group
        return _all_gather_cat(t, group)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        # Through an autograd Function, so create_graph=True (double backward) works.
        return _ReduceScatterRows.apply(grad, ctx.group), None


class _ReduceScatterRows(torch.autograd.Function):
    """Adjoint of :class:`_GatherRows`: its backward is the all-gather."""

    @staticmethod
    def forward(ctx, t: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group = group
        return _reduce_scatter_rows(t, group)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _GatherRows.apply(grad, ctx.group), None


def check_same_shapes(tensors: dict[str, Tensor], group: Any = None) -> None:
    """Raise :class:`~gameopt.GameInputError` on every rank unless every rank passes tensors of the same shapes.

    One small all-gather of the shapes (every rank names the same tensors), so a
    mismatch is an error on all ranks at once instead of a hang in the next collective.
    The shapes travel on the tensors' device (NCCL only moves CUDA tensors).

    Args:
        tensors: ``{name: tensor}``, the same names in the same order on every rank; the names
            appear in the error message.
        group: the process group (default ``None``: the world).

    Raises:
        GameInputError: the shapes differ between ranks (the message names this rank's shapes and
            the fix: an equal share of the batch per rank), or a tensor has more than 8 dimensions.
    """
    import torch.distributed as dist

    _, world = _world(group)
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    device = next(iter(tensors.values())).device
    flat: list[int] = []
    for shape in shapes.values():  # fixed width (9 per shape), so one all-gather suffices
        if len(shape) > 8:
            raise GameInputError(f"tensors of more than 8 dimensions are not supported here, got {tuple(shape)}")
        flat += [len(shape), *shape, *([-1] * (8 - len(shape)))]
    mine = torch.tensor(flat, dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine, group=group)
    if any(not torch.equal(e, every[0]) for e in every):
        names = ", ".join(shapes)
        raise GameInputError(
            f"distributed=True needs the same shapes of {names} on every rank (an equal share of the "
            f"batch per rank); rank {dist.get_rank(group)} has {list(shapes.values())}. Split the batch "
            "evenly (e.g. DistributedSampler with drop_last=True)"
        )


def gather_rows(t: Tensor, group: Any = None) -> Tensor:
    """Concatenate every rank's ``t`` along dim 0 (rank order), keeping the autograd path.

    Gradients reach only this rank's rows, summed over the ranks' losses (the adjoint
    of the gather); double backward works. Every rank must pass the same shape (check
    with :func:`check_same_shapes` first, or the ranks may hang).

    Args:
        t: this rank's rows, shape ``(m, ...)``.
        group: the process group (default ``None``: the world).

    Returns:
        Shape ``(world_size * m, ...)``: rank 0's rows first.
    """
    if not t.requires_grad:
        return _all_gather_cat(t, group)
    return _GatherRows.apply(t, group)
