"""Training frameworks that wrap the optimiser: find gameopt's optimiser and the framework's loss scaler.

PyTorch Lightning (``LightningOptimizer``), Lightning Fabric and Hugging Face
accelerate (``AcceleratedOptimizer``) hand the training step a wrapper around the
optimiser built by the user, and their own ``backward`` calls differentiate one loss.
A game needs one loss per player, so :func:`backward` finds the gameopt optimiser
inside the wrapper and calls its ``backward``. Under fp16 mixed precision the
framework's ``torch.amp.GradScaler`` unscales ``p.grad`` in ``step``; :func:`backward`
therefore scales the losses with that same scaler and tells gameopt about it, so the
consensus term stays consistent (see ``ConsensusOptimizer.backward(scaler=)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from .errors import GameInputError
from .game_optimizer import GameOptimizer
from .gradients import detached

_F = TypeVar("_F", bound=Callable[..., Any])

#: Wrappers deeper than this are taken to be a cycle.
_MAX_DEPTH = 16


def _inner(obj: Any) -> Any:
    """The optimiser that ``obj`` forwards to, or None when ``obj`` wraps nothing."""
    attrs = getattr(obj, "__dict__", {})
    # Lightning and Fabric, accelerate, then gameopt's own LookaheadMinmax (which wraps a game optimiser)
    for name in ("_optimizer", "optimizer", "inner"):
        inner = attrs.get(name)
        if inner is not None and inner is not obj:
            return inner
    if isinstance(obj, GameOptimizer):  # the optimiser itself (a wrapper has one of the above)
        return None
    try:
        inner = getattr(obj, "optimizer", None)  # a wrapper that exposes it as a property
    except Exception:  # noqa: BLE001 - a broken property is not a wrapper we know
        return None
    return inner if inner is not obj else None


def _chain(opt: Any) -> list[Any]:
    """``opt``, the optimiser it wraps, that one's, ... down to one that wraps nothing."""
    chain = [opt]
    while len(chain) <= _MAX_DEPTH:
        inner = _inner(chain[-1])
        if inner is None or any(inner is seen for seen in chain):
            return chain
        chain.append(inner)
    return chain


def _describe(chain: list[Any]) -> str:
    return " -> ".join(type(obj).__name__ for obj in chain)


def find_game_optimizer(opt: Any) -> GameOptimizer | None:
    """The gameopt optimiser inside ``opt`` (or ``opt`` itself when it is one), or None.

    Follows wrappers through ``._optimizer`` (Lightning's ``LightningOptimizer``,
    Fabric's optimiser), ``.optimizer`` (accelerate's ``AcceleratedOptimizer``, or
    any wrapper exposing it) and ``.inner`` (:class:`~gameopt.LookaheadMinmax`),
    outermost first.
    """
    inner = _chain(opt)[-1]
    return inner if isinstance(inner, GameOptimizer) else None


def game_optimizer(opt: Any) -> GameOptimizer:
    """Like :func:`find_game_optimizer`, but raises when there is none.

    Raises:
        GameInputError: no gameopt optimiser inside ``opt``; the message names the chain found.
    """
    game = find_game_optimizer(opt)
    if game is not None:
        return game
    chain = _chain(opt)
    raise GameInputError(
        f"gameopt.backward needs a gameopt optimiser or a framework's wrapper around one, "
        f"but found {_describe(chain)}, with no gameopt optimiser inside. Build one, e.g. "
        "gameopt.ConsensusOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), lr=...), "
        "and give that to the framework (return it from configure_optimizers, or pass it to "
        "accelerator.prepare)"
    )


def loss_scaler(opt: Any) -> Any:
    """The framework's ``torch.amp.GradScaler`` that will unscale ``p.grad`` in ``opt.step()``, or None.

    accelerate keeps it on the ``AcceleratedOptimizer`` (``.scaler``, set when
    ``mixed_precision="fp16"`` on a GPU); Lightning and Fabric on the precision plugin of
    the wrapper's strategy (``precision="16-mixed"``). bf16 and fp32 use no scaler.
    """
    for obj in _chain(opt)[:-1]:
        attrs = getattr(obj, "__dict__", {})
        scaler = attrs.get("scaler")
        if scaler is not None:
            return scaler
        strategy = attrs.get("_strategy")
        if strategy is None:
            continue
        for name in ("precision_plugin", "precision"):  # Lightning's Trainer, Fabric
            plugin = getattr(strategy, name, None)
            scaler = getattr(plugin, "scaler", None)
            if scaler is not None:
                return scaler
    return None


def _check_accumulation(opt: Any) -> None:
    """Refuse accelerate's gradient accumulation: the consensus term does not add up over micro-batches."""
    for obj in _chain(opt)[:-1]:
        state = getattr(obj, "__dict__", {}).get("gradient_state")
        steps = getattr(state, "num_steps", 1)
        if isinstance(steps, int) and steps > 1:
            raise GameInputError(
                f"gameopt.backward does not support gradient accumulation "
                f"(Accelerator(gradient_accumulation_steps={steps})): the consensus term "
                "1/2||v||^2 of a batch is not the sum of its micro-batches' terms. Use "
                "gradient_accumulation_steps=1 with a larger batch"
            )


def backward(opt: Any, *losses: torch.Tensor, **kwargs: Any) -> Any:
    """Call gameopt's ``backward(*losses)`` through a framework's optimiser wrapper.

    Use it where the framework would have you call its own backward::

        # accelerate, after G, D, opt = accelerator.prepare(G, D, opt)
        gameopt.backward(opt, gen_loss, disc_loss)
        opt.step()

        # Lightning, manual optimisation, inside training_step (opt.backward works too)
        opt = self.optimizers()
        gameopt.backward(opt, gen_loss, disc_loss)
        opt.step()

    Pass the losses unscaled, one per player in player order, as to the optimiser's own
    ``backward``. When the framework trains in fp16 with a ``GradScaler`` (Lightning
    ``precision="16-mixed"``, accelerate ``mixed_precision="fp16"``), the losses are scaled
    with that scaler and gameopt is given ``scaler=``, so ``p.grad`` holds the scaled
    ``v + gamma v'^T v`` the framework's ``step`` unscales (and skips on overflow).

    Args:
        opt: a gameopt optimiser, or a wrapper around one (see :func:`game_optimizer`).
        *losses: one scalar loss per player (shape ``(B,)`` with ``unbiased=True``).
        **kwargs: passed to the optimiser's ``backward``; ``scaler`` is not accepted here.

    Returns:
        What the optimiser's ``backward`` returns (``ConsensusStats`` for consensus).

    Raises:
        GameInputError: no gameopt optimiser inside ``opt``; ``scaler=`` given; accelerate's
            gradient accumulation is on. Bad losses raise what the optimiser's ``backward`` raises.
    """
    if "scaler" in kwargs:
        raise GameInputError(
            "gameopt.backward finds the framework's GradScaler itself and scales the losses "
            "with it: pass the losses unscaled and no scaler=. With a GradScaler of your own, "
            "call opt.backward(scaler.scale(gen_loss), scaler.scale(disc_loss), scaler=scaler)"
        )
    game = game_optimizer(opt)
    _check_accumulation(opt)
    scaler = loss_scaler(opt)
    if scaler is None:
        return game.backward(*losses, **kwargs)
    scaled = tuple(scaler.scale(loss) if isinstance(loss, torch.Tensor) else loss for loss in losses)
    return game.backward(*scaled, scaler=scaler, **kwargs)


def through_wrappers(method: _F) -> _F:
    """Make a gameopt optimiser's ``backward`` act on the real optimiser when called on a wrapper.

    Lightning's ``LightningOptimizer`` is a dynamic subclass of the optimiser's class, so
    ``opt.backward(...)`` inside ``training_step`` runs gameopt's ``backward`` with ``self``
    the wrapper. Decorated, that call goes through :func:`backward`: it finds the real
    optimiser and, under fp16, the framework's ``GradScaler``, so the losses are scaled the
    way the framework's ``step`` will unscale them. A call that passes ``scaler=`` itself is
    forwarded to the real optimiser unchanged.

    Args:
        method: the optimiser class's ``backward(self, *losses, **kwargs)``.

    Returns:
        The decorated method (same signature and docstring).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *losses: Any, **kwargs: Any) -> Any:
        real = find_game_optimizer(self)
        if real is None or real is self:
            return method(self, *losses, **kwargs)
        if kwargs.get("scaler") is not None:
            return method(real, *losses, **kwargs)
        kwargs.pop("scaler", None)
        return backward(self, *losses, **kwargs)

    return wrapper  # type: ignore[return-value]


def _wrap_framework_step(wrapped: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` for a framework's wrapper class over a gameopt optimiser (Lightning's, Fabric's).

    The framework's fp16 plugin calls ``closure()`` itself and then unscales ``p.grad``, so the
    losses the closure returns would never reach gameopt. This ``step`` evaluates the closure
    first and runs gameopt's ``backward`` on its losses (scaled by the framework's
    ``GradScaler`` when there is one), then lets the framework step on the gradients in
    ``p.grad``; it returns the losses detached. Optimisers that evaluate the closure themselves
    (AltGA, extragradient) get it unchanged, and a ``GameInputError`` under fp16 loss scaling.
    :class:`gameopt.GameOptimizer` applies it to such classes when they are created.

    Args:
        wrapped: the wrapper class's own ``step``.

    Returns:
        The ``step`` to put on the wrapper class.
    """

    @functools.wraps(wrapped)
    def step(self: Any, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        game = find_game_optimizer(self)
        if closure is None or game is None:
            return wrapped(self, closure, **kwargs) if closure is not None else wrapped(self, **kwargs)
        if game._step_evaluates_closure:
            if loss_scaler(self) is not None:
                raise GameInputError(
                    f"{type(game).__name__} evaluates the closure itself (again after each update), but "
                    "the framework's fp16 loss scaling (precision='16-mixed' with a GradScaler) calls the "
                    "closure before the optimiser can and then unscales gradients nobody scaled. Use "
                    "precision='bf16-mixed' or '32-true' for it, or a plain loop with step(closure, scaler=...) "
                    "where the optimiser supports it"
                )
            return wrapped(self, closure, **kwargs)
        with torch.enable_grad():
            losses = closure()
        if losses is not None:
            if isinstance(losses, torch.Tensor):
                losses = (losses,)
            elif isinstance(losses, (str, bytes)) or not isinstance(losses, Sequence):
                raise GameInputError(
                    "the closure must return a tuple of losses, one per player "
                    f"({list(game.players)}), e.g. (gen_loss, disc_loss), or None when it has "
                    f"already put the gradients in p.grad; got {type(losses).__name__}"
                )
            with game._grads_restored_on_error():
                game.zero_grad(set_to_none=True)
                backward(self, *losses)
        out = wrapped(self, **kwargs)   # the framework's own (empty) closure: p.grad is ready
        return out if losses is None else detached(losses)

    return step


GameOptimizer._framework_step = _wrap_framework_step
