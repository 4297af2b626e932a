"""Gradients of a game: each player's loss w.r.t. that player's own parameters.

The stacked result is the game's gradient field ``v = (grad_theta l_G, grad_phi l_D)``.
Helpers here check the losses, detect zero-sum games (one backward pass instead
of two) and turn autograd's double-backward failures into actionable errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import GameInputError

_DOUBLE_BACKWARD_MARKERS = (
    "double backward",
    "differentiate twice",
    "once_differentiable",
    "derivative for",
)
_COMPILED_MARKERS = ("aot_autograd", "donated buffer")


def check_loss(loss: object, player: str, name: str, per_example: bool) -> torch.Tensor:
    """Validate one player's loss: a floating-point tensor that requires grad, of the right shape.

    Args:
        loss: the value the user passed.
        player: the player whose loss it is (for messages).
        name: the loss's name in messages (``"gen_loss"``).
        per_example: expect shape ``(B,)`` with ``B >= 2`` (``unbiased=True``) instead of a scalar.

    Returns:
        ``loss``, unchanged.

    Raises:
        GameInputError: not a tensor, the wrong shape, no graph, or not floating point.
    """
    if not isinstance(loss, torch.Tensor):
        raise GameInputError(f"{name} (loss of player '{player}') must be a tensor, got {type(loss).__name__}")
    if per_example:
        if loss.dim() != 1 or loss.shape[0] < 2:
            raise GameInputError(
                f"{name} must hold one loss per example, shape (B,) with B >= 2, when "
                f"unbiased=True; got shape {tuple(loss.shape)}. Pass the per-example "
                "losses without averaging them"
            )
    elif loss.numel() != 1:
        raise GameInputError(
            f"{name} must be a scalar, got shape {tuple(loss.shape)}; reduce it, e.g. "
            "loss.mean() (or pass per-example losses with unbiased=True)"
        )
    if not loss.requires_grad:
        raise GameInputError(
            f"{name} does not depend on any parameter of player '{player}' (it does not "
            "require grad: was it computed under torch.no_grad() or from detached "
            "tensors?). Each player's loss must be computed from that player's parameters"
        )
    if not loss.dtype.is_floating_point and not loss.dtype.is_complex:
        raise GameInputError(f"{name} must be a floating-point tensor, got {loss.dtype}")
    return loss


def detached(losses: object) -> object:
    """What ``step(closure)`` returns: the closure's losses without their graph.

    A tensor or a sequence of tensors comes back detached (``float(loss)`` then neither
    warns nor keeps the graph alive); anything else (None) unchanged.
    """
    if isinstance(losses, torch.Tensor):
        return losses.detach()
    if isinstance(losses, (list, tuple)):
        return tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in losses)
    return losses


def check_trainable(params: Sequence[Sequence[torch.Tensor]], players: Sequence[str]) -> None:
    """Refuse a parameter whose ``requires_grad`` was turned off after the optimiser was built.

    Args:
        params: each player's parameters, in the order of ``players``.
        players: the players' names (for messages).

    Raises:
        GameInputError: naming the player, the parameter's position and shape, and the fix.
    """
    for player, ps in zip(players, params):
        for i, p in enumerate(ps):
            if not p.requires_grad:
                raise GameInputError(
                    f"player '{player}': parameter {i} (tensor of shape {tuple(p.shape)}) has "
                    "requires_grad=False, set after the optimiser was built; gameopt differentiates "
                    "every parameter of its players. Set p.requires_grad_(True) again, or to freeze it "
                    "build the optimiser without it (a param group with lr=0 keeps it in place)"
                )


def all_finite(tensors: Sequence[torch.Tensor], n_squared: int = 0) -> torch.Tensor:
    """Whether every element of every tensor is finite, as a 0-d bool tensor (no host sync).

    One fused reduction (``torch._foreach_norm`` with ``ord=inf``, which propagates
    NaN) over all tensors: elementwise, so fp16 tensors whose L2 norm would exceed
    65504 but whose entries are finite count as finite. Zero-size tensors (a zero-width
    layer) hold nothing to check and are left out: the infinity norm has no value on them.

    Args:
        tensors: the tensors to check.
        n_squared: the first ``n_squared`` tensors' elementwise squares must be finite too, in
            their own dtype (gradients that Adam or RMSprop square into a second moment); the
            same reduction answers it (the square of each tensor's largest magnitude).
    """
    tensors = list(tensors)
    keep = [i for i, t in enumerate(tensors) if t.numel()]
    if not keep:
        return torch.tensor(True, device=tensors[0].device if tensors else None)
    maxima = list(torch._foreach_norm([tensors[i] for i in keep], ord=math.inf))
    squared = [m for i, m in zip(keep, maxima) if i < n_squared]
    if squared:
        maxima += torch._foreach_mul(squared, squared)  # Inf where g*g overflows
    device = maxima[0].device
    if any(m.device != device for m in maxima):
        maxima = [m.to(device) for m in maxima]
    return torch.stack(maxima).isfinite().all()


def is_negation_of(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` was computed as ``-b`` (so the two losses share one backward pass)."""
    fn = a.grad_fn
    if fn is None or type(fn).__name__ != "NegBackward0" or b.grad_fn is None:
        return False
    nxt = fn.next_functions
    return len(nxt) == 1 and nxt[0][0] is b.grad_fn


def grad_scaler_factor(loss: torch.Tensor) -> float | None:
    """The scale ``s`` when ``loss`` was computed as ``scaler.scale(x) = x * s``, else None.

    Recognises the product ``torch.amp.GradScaler.scale`` builds: a multiplication
    by a one-element float32 tensor that needs no gradient and holds a power of two
    >= 2. Reads that value from the device (one sync): call it once, not every step.
    """
    fn = loss.grad_fn
    if fn is None or type(fn).__name__ != "MulBackward0":
        return None
    try:
        other = fn._saved_other
    except (AttributeError, RuntimeError):
        return None
    if not isinstance(other, torch.Tensor) or other.numel() != 1 or other.dtype != torch.float32:
        return None
    if other.requires_grad:
        return None
    value = float(other)
    mantissa, _ = math.frexp(value)
    return value if mantissa == 0.5 and value >= 2 else None


def find_once_differentiable(outputs: Sequence[torch.Tensor]) -> str | None:
    """Name of a node in the graph of ``outputs`` that cannot be differentiated again.

    ``@once_differentiable`` backward functions detach their outputs when a graph
    is requested, so autograd would silently drop their second-order terms; the
    marker they leave is a ``DelayedError`` node. Walking the graph costs Python
    time proportional to its size, so callers do it once, not every step.
    """
    seen: set[object] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        name = type(fn).__name__
        if name in ("Error", "DelayedError") or "DelayedError" in name:
            return name
        stack.extend(f for f, _ in fn.next_functions if f is not None)
    return None


def reaches_any(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> bool:
    """Whether ``loss``'s graph reaches any of ``params`` (a graph walk: call it rarely)."""
    targets = {id(p) for p in params}
    seen: set[object] = set()
    stack = [loss.grad_fn] if loss.grad_fn is not None else []
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None and id(var) in targets:
            return True
        stack.extend(f for f, _ in fn.next_functions if f is not None)
    return False


@contextmanager
def explain_double_backward(enabled: bool) -> Iterator[None]:
    """Re-raise autograd errors about missing second derivatives with the fix to apply.

    Players wrapped in ``torch.compile`` fail here too: AOTAutograd's compiled
    backward cannot be differentiated again ("does not support double backward"
    with ``backend="aot_eager"``, or the "donated buffers" check first with
    inductor; turning that check off only brings back the first message).

    Args:
        enabled: whether second derivatives are being taken; when False, errors pass unchanged.

    Raises:
        RuntimeError: the original double-backward error, re-raised with the fix to apply.
    """
    try:
        yield
    except RuntimeError as err:
        msg = str(err)
        low = msg.lower()
        compiled = any(m in low for m in _COMPILED_MARKERS)
        if not enabled or not (compiled or any(m in low for m in _DOUBLE_BACKWARD_MARKERS)):
            raise
        if compiled:
            fix = (
                "The players were compiled with torch.compile, whose compiled backward (AOTAutograd) "
                "cannot be differentiated again, whatever the backend or "
                "torch._functorch.config.donated_buffer says. Pass the uncompiled modules and let "
                "gameopt compile the whole step: ConsensusOptimizer(..., compile=True) with "
                "opt.step(closure), closure() returning (gen_loss, disc_loss); it compiles the "
                "forward pass, both backward passes and the vector-Jacobian product together. "
                "Compiled players do work with gamma=0 (SimultaneousOptimizer) and with "
                "gameopt.AlternatingOptimizer, which need first derivatives only"
            )
        else:
            fix = (
                "Ways around it: for attention, run the forward pass inside "
                "torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH); for cuDNN "
                "RNNs, disable cuDNN (torch.backends.cudnn.flags(enabled=False)); for a custom "
                "autograd.Function, make its backward differentiable (no @once_differentiable); "
                "for torch.compile'd players, pass them uncompiled and use "
                "ConsensusOptimizer(compile=True) with step(closure); or train without the "
                "regulariser (gamma=0) or with gameopt.AlternatingOptimizer, which need first "
                "derivatives only"
            )
        raise RuntimeError(
            "consensus optimisation needs second derivatives (double backward), but an "
            f"operation in the players' losses does not support them:\n  {msg}\n{fix}"
        ) from err


def player_gradients(
    losses: Sequence[torch.Tensor],
    params: Sequence[Sequence[torch.Tensor]],
    players: Sequence[str],
    loss_names: Sequence[str],
    *,
    create_graph: bool,
    per_example: bool = False,
) -> list[list[torch.Tensor | None]]:
    """``grad(losses[i], params[i])`` for every player ``i`` (None where unused).

    With ``per_example`` the losses have shape (B,) and each gradient gets a
    leading batch dimension (one gradient per example, via a batched backward).
    Two-player zero-sum games (one loss the negation of the other) take a single
    backward pass.

    Args:
        losses: one loss per player, scalars (or ``(B,)`` with ``per_example``).
        params: each player's parameters, in the order of ``losses``.
        players: the players' names (for messages).
        loss_names: the losses' names (for messages).
        create_graph: keep the graph of the gradients (needed for second derivatives).
        per_example: per-example losses and gradients (default False).

    Returns:
        ``grads[i][j]``: gradient of ``losses[i]`` w.r.t. ``params[i][j]`` (shape of the
        parameter, with a leading ``B`` under ``per_example``), None where unused.

    Raises:
        GameInputError: per-example batch sizes differ, a loss reaches no parameter of
            its player, or a parameter no longer requires grad.
        RuntimeError: second derivatives are unsupported (see :func:`explain_double_backward`).
    """
    n = len(losses)
    check_trainable(params, players)
    extra: dict[str, object] = {}
    if per_example:
        batch = losses[0].shape[0]
        if any(loss.shape[0] != batch for loss in losses):
            raise GameInputError(
                "per-example losses must all have the same batch size, got "
                + ", ".join(f"{nm}: {tuple(l.shape)}" for nm, l in zip(loss_names, losses))
            )
        extra = {"is_grads_batched": True}

    def seeds(loss: torch.Tensor) -> torch.Tensor | None:
        if per_example:
            return torch.eye(loss.shape[0], dtype=loss.dtype, device=loss.device)
        return None

    grads: list[list[torch.Tensor | None]] = []
    with explain_double_backward(create_graph):
        if n == 2 and (is_negation_of(losses[1], losses[0]) or is_negation_of(losses[0], losses[1])):
            first = 0 if is_negation_of(losses[1], losses[0]) else 1
            both = list(params[0]) + list(params[1])
            g = torch.autograd.grad(
                losses[first], both, grad_outputs=seeds(losses[first]),
                create_graph=create_graph, allow_unused=True, **extra,
            )
            g0, g1 = list(g[: len(params[0])]), list(g[len(params[0]):])
            flip = g1 if first == 0 else g0
            flip[:] = [None if t is None else -t for t in flip]
            grads = [g0, g1]
        else:
            for i, (loss, ps) in enumerate(zip(losses, params)):
                g = torch.autograd.grad(
                    loss, list(ps), grad_outputs=seeds(loss), create_graph=create_graph,
                    retain_graph=create_graph or i < n - 1, allow_unused=True, **extra,
                )
                grads.append(list(g))
    for player, name, g in zip(players, loss_names, grads):
        if all(t is None for t in g):
            raise GameInputError(
                f"{name} does not depend on any parameter of player '{player}'; each "
                "player's loss must be computed from that player's parameters (check "
                "that the players are not swapped and that nothing is detached)"
            )
        for t in g:
            if t is not None and t.layout != torch.strided:
                raise GameInputError(
                    f"player '{player}' produced a sparse gradient; gameopt needs dense "
                    "gradients: build embeddings with sparse=False"
                )
    return grads
