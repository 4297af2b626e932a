"""Recognise a two-player zero-sum game from its two losses."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..gradients import is_negation_of


def _scaled_input(loss: Tensor) -> object | None:
    """The graph node ``loss`` multiplies by a constant (a GradScaler's ``scale``), else None."""
    fn = loss.grad_fn
    if fn is None or type(fn).__name__ != "MulBackward0":
        return None
    nxt = fn.next_functions
    if len(nxt) != 2 or nxt[1][0] is not None:
        return None
    return nxt[0][0]


def _is_negated(neg: object, of: object) -> bool:
    if neg is None or of is None or type(neg).__name__ != "NegBackward0":
        return False
    nxt = neg.next_functions  # type: ignore[attr-defined]
    return len(nxt) == 1 and nxt[0][0] is of


def negated_in_graph(gen_loss: Tensor, disc_loss: Tensor) -> bool:
    """Whether the graph shows ``disc_loss = -gen_loss`` (or the reverse).

    One loss computed as the negation of the other, possibly with both multiplied by a
    constant afterwards (``GradScaler.scale``). No host sync.
    """
    if is_negation_of(disc_loss, gen_loss) or is_negation_of(gen_loss, disc_loss):
        return True
    a, b = _scaled_input(gen_loss), _scaled_input(disc_loss)
    return _is_negated(b, a) or _is_negated(a, b)


def negated_in_value(gen_loss: Tensor, disc_loss: Tensor) -> tuple[bool, float]:
    """Whether ``gen_loss + disc_loss`` is zero up to rounding, and the sum (one host sync).

    For losses whose graphs do not show the negation (``(-x).mean()`` and ``x.mean()``
    computed separately). Necessary for a zero-sum game, not sufficient; a game whose
    losses sum to zero at every step but differ as functions is not detected. A NaN or
    infinite loss passes: the step is then non-finite and the ``nonfinite`` policy applies.
    """
    with torch.no_grad():
        a, b = gen_loss.detach().double(), disc_loss.detach().double()
        total = float(a + b)
        size = float(torch.maximum(a.abs(), b.abs()))
    if not (math.isfinite(total) and math.isfinite(size)):
        return True, total
    eps = torch.finfo(gen_loss.dtype).eps
    return abs(total) <= 16 * eps * size, total
