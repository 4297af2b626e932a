"""How gameopt runs torch.optim's step hooks.

torch.optim wraps every optimiser's ``step`` in a function that runs the global and
instance pre-hooks, the step, then the post-hooks, whatever the step did. A gameopt
optimiser steps its base optimiser inside its own ``step``, so with torch's wrapper
on both, global hooks would run twice per step, and post-hooks would run on steps
the NaN/Inf policy skipped. gameopt's semantics instead:

- pre-hooks (global, then instance) run once per ``step`` call, before the NaN/Inf
  check, so a pre-hook that edits ``p.grad`` is checked like any gradient;
- post-hooks (instance, then global) run once, and only when parameters moved: a
  skipped step is not a step (as with ``torch.amp.GradScaler``), so e.g. an attached
  schedule does not advance on it;
- the base optimiser's step runs without torch's wrapper (its own instance hooks
  still run).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
import torch.optim.optimizer as _torch_optimizer
from torch.optim import Optimizer


def hooked_step(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a gameopt optimiser's ``step`` with the hook semantics above.

    A ``step`` that calls its parent class's ``step`` runs the hooks once (the
    outer call). Whether parameters moved is read from ``self._shared.moved``,
    which ``GameOptimizer._apply_base_step`` sets. torch.optim calls it as
    ``profile_hook_step`` when it builds the optimiser.

    Args:
        func: the unbound ``step(self, *args, **kwargs)`` to wrap.

    Returns:
        The wrapped ``step``; it raises ``RuntimeError`` when a pre-hook returns something
        other than None or ``(new_args, new_kwargs)``.
    """

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = self._shared
        if state.in_step:
            return func(self, *args, **kwargs)
        with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
            for hook in chain(
                _torch_optimizer._global_optimizer_pre_hooks.values(),
                self._optimizer_step_pre_hooks.values(),
            ):
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(
                            f"a step pre-hook must return None or (new_args, new_kwargs), got {result!r}"
                        )
                    args, kwargs = result
            state.in_step, state.moved, state.last_step_skipped = True, False, False
            try:
                out = func(self, *args, **kwargs)
            finally:
                state.in_step = False
            self._optimizer_step_code()
            if state.moved:
                for hook in chain(
                    self._optimizer_step_post_hooks.values(),
                    _torch_optimizer._global_optimizer_post_hooks.values(),
                ):
                    hook(self, args, kwargs)
        return out

    return wrapper


def unhooked_step(optimizer: Optimizer) -> None:
    """``optimizer.step()`` without torch's hook wrapper (the global hooks already ran).

    The optimiser's own instance hooks still run. A ``step`` patched onto the
    instance (e.g. by an LR scheduler built on it) is called as it is.
    """
    patched = vars(optimizer).get("step")
    step = type(optimizer).step
    raw = getattr(step, "__wrapped__", None) if getattr(step, "hooked", False) else None
    if patched is not None or raw is None:
        optimizer.step()
        return
    for hook in optimizer._optimizer_step_pre_hooks.values():
        hook(optimizer, (), {})
    raw(optimizer)
    optimizer._optimizer_step_code()
    for hook in optimizer._optimizer_step_post_hooks.values():
        hook(optimizer, (), {})
