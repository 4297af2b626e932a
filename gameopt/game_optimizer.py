"""GameOptimizer: a torch.optim.Optimizer that wraps a base optimiser for a game.

The wrapper and the base optimiser share one ``param_groups`` list and one
``state`` dict, so everything that works on a torch optimiser works here
unmodified: ``torch.optim.lr_scheduler`` schedulers, ``add_param_group``,
step hooks, gradient clipping between ``backward`` and ``step``, and
``state_dict()`` / ``load_state_dict()``.

Three rules hold for every subclass:

- Everything that changes while training (counters, statistics, checkpointed
  settings) lives in one :class:`SharedState` object that methods mutate and never
  rebind, so a framework wrapper that forwards attribute reads to the optimiser
  (PyTorch Lightning's ``LightningOptimizer``) sees and changes the same state.
- Parameters move only through :meth:`GameOptimizer._apply_base_step`, which checks
  exactly what the base optimiser is about to apply (every ``p.grad`` and ``lr``)
  for NaN/Inf and applies the ``nonfinite`` policy.
- Step hooks: pre-hooks run once per ``step`` call, before that check (they may edit
  ``p.grad``); post-hooks run once, and only when parameters moved (a skipped step
  is not a step, as with ``torch.amp.GradScaler``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.optim import Optimizer

from . import checkpoints
from .distributed import check_distributed
from .errors import GameInputError
from .gradients import all_finite
from .players import ParamsLike, check_shared_storage, player_param_groups
from .step_hooks import hooked_step, unhooked_step

__all__ = ["GameOptimizer", "SharedState", "shared", "transient", "check_nonfinite", "NONFINITE_POLICIES"]

NONFINITE_POLICIES = ("skip", "raise", "ignore")


def transient(default: Any = None) -> Any:
    """A :class:`SharedState` field that copies and pickles leave out (reset to ``default``)."""
    return dataclasses.field(default=default, metadata={"transient": True})


@dataclasses.dataclass
class SharedState:
    """The mutable state of a gameopt optimiser, in one object.

    Methods mutate its fields and never rebind the object; the public attributes
    that expose them (``skipped_steps``, ``nonfinite``, ...) are :class:`shared`
    descriptors. A wrapper whose ``__getattr__`` forwards reads to the optimiser
    therefore reaches this object, and a method run with the wrapper as ``self``
    changes the optimiser's state, not the wrapper's. Subclasses extend it through
    ``GameOptimizer._shared_type``; :func:`transient` fields are not copied.

    Args:
        nonfinite: the NaN/Inf policy (``"skip"``, ``"raise"`` or ``"ignore"``; default ``"skip"``).
        skipped_steps: steps skipped for NaN/Inf so far (default 0).
        last_step_skipped: whether the latest ``step`` left a player unmoved (default False).
        moved: whether the running ``step`` moved any parameter (transient).
        in_step: whether a ``step`` is running, so a subclass calling its parent's ``step``
            runs hooks once (transient).
    """

    nonfinite: str = "skip"
    skipped_steps: int = 0
    last_step_skipped: bool = False
    moved: bool = transient(False)  # whether the current step() moved any parameter
    in_step: bool = transient(False)  # a step() is running (a subclass calling its parent's)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for f in dataclasses.fields(self):
            if f.metadata.get("transient"):
                state[f.name] = f.default
        return state


class shared:  # noqa: N801 (used like property)
    """A public optimiser attribute stored in the optimiser's :class:`SharedState`.

    Args:
        doc: the attribute's docstring (shown by ``help`` and the API reference).
    """

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj._shared, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj._shared, self.name, value)


class GameOptimizer(Optimizer):
    """Base class of gameopt's optimisers: players over a wrapped torch optimiser.

    Subclasses compute gradients for all players (``backward`` or a closure) and
    move the parameters with :meth:`_apply_base_step`, the one place that checks
    what the base optimiser will apply and runs it. A new step rule (extragradient,
    optimistic, ...) is a subclass whose ``step`` writes the gradients to ``p.grad``
    and calls ``self._apply_base_step(players)``; hooks, the NaN/Inf policy,
    copies and checkpoints then work as for the built-in optimisers. Per-group
    options that gameopt adds (such as consensus ``gamma``) live in the param
    groups next to ``lr``.

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` subclass; ``base_kwargs`` go to it.
        players: ordered mapping ``{name: params}`` (tensors or param-group dicts).
        nonfinite: what a step does when a gradient it would apply, or a learning rate,
            is NaN/Inf: ``"skip"`` (warn, count in ``skipped_steps``, leave parameters
            and base state untouched), ``"raise"`` (``FloatingPointError``) or
            ``"ignore"`` (no check and no host sync).
        distributed, process_group: see the subclasses.

    Raises:
        GameInputError: bad base optimiser, players or policy.
    """

    #: gameopt's own per-group options and their defaults (set by subclasses).
    _group_options: dict[str, Any] = {}
    #: Whether ``step`` must call the closure itself (several times, or between players' updates).
    _step_evaluates_closure: bool = False
    #: Builds a framework wrapper class's ``step`` (set by :mod:`gameopt.frameworks`, a layer above).
    _framework_step: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
    #: The class of the shared state (subclasses extend :class:`SharedState`).
    _shared_type: type[SharedState] = SharedState

    nonfinite = shared("The NaN/Inf policy of ``step``: 'skip', 'raise' or 'ignore'.")
    skipped_steps = shared("Number of steps skipped because a gradient or learning rate was NaN/Inf.")
    last_step_skipped = shared("Whether the most recent ``step`` left a player unmoved for NaN/Inf.")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A framework's wrapper class built over a gameopt optimiser gets gameopt's closure handling.

        Lightning and Fabric wrap an optimiser in a class derived from both their wrapper and
        the optimiser's class, whose ``step`` is theirs. Their fp16 plugin calls ``closure()``
        itself and then unscales ``p.grad``: the losses it returns would never reach gameopt.
        On such a class ``step(closure)`` evaluates the closure first and runs gameopt's
        ``backward`` on its losses (scaled by the framework's ``GradScaler`` when there is
        one), then the framework's ``step`` applies the gradients.
        """
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        first_game = next(i for i, k in enumerate(mro) if i > 0 and issubclass(k, GameOptimizer))
        owner = next((i for i, k in enumerate(mro) if "step" in vars(k)), None)
        wrap = GameOptimizer._framework_step   # installed by gameopt.frameworks
        if wrap is not None and owner is not None and owner < first_game and not issubclass(mro[owner], GameOptimizer):
            cls.step = wrap(mro[owner].step)  # type: ignore[method-assign]

    def __init__(
        self,
        base_optimizer: type[Optimizer],
        players: Mapping[str, ParamsLike],
        *,
        nonfinite: str = "skip",
        distributed: bool = False,
        process_group: Any = None,
        **base_kwargs: Any,
    ) -> None:
        check_distributed(type(self).__name__, distributed)
        if isinstance(base_optimizer, Optimizer):
            raise GameInputError(
                "base_optimizer must be an optimiser class such as torch.optim.Adam, "
                f"not an instance ({type(base_optimizer).__name__}); gameopt builds it "
                "from the players' parameters and the keyword arguments you pass"
            )
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise GameInputError(
                f"base_optimizer must be a subclass of torch.optim.Optimizer "
                f"(e.g. torch.optim.Adam), got {base_optimizer!r}"
            )
        if issubclass(base_optimizer, GameOptimizer):
            raise GameInputError(
                "base_optimizer must be a plain torch optimiser, not a gameopt optimiser"
            )
        check_nonfinite(nonfinite)
        self._shared = self._shared_type(nonfinite=nonfinite)
        #: The gameopt class that built this optimiser, recorded in checkpoints.
        self._kind = type(self).__name__
        self._owner: dict[int, str] = {}
        groups = player_param_groups(players, self._owner)
        check_shared_storage(groups)
        for group in groups:
            for key, value in self._group_options.items():
                group.setdefault(key, value)
        self.players: tuple[str, ...] = tuple(players)
        #: Whether gradients are averaged over the ranks of ``process_group`` (torch.distributed).
        self.distributed = bool(distributed)
        self.process_group = process_group
        self.base_optimizer: Optimizer = base_optimizer(groups, **base_kwargs)
        self.base_optimizer.defaults.update(self._group_options)
        # Optimizer.__init__ installs the hook machinery; our properties route its
        # param_groups/state assignments to the base optimiser, and our
        # add_param_group re-registers the (already validated) groups there.
        self._initialising = True
        super().__init__(list(self.base_optimizer.param_groups), self.base_optimizer.defaults)
        self._initialising = False

    # --- sharing with the base optimiser -------------------------------------------------
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimiser's param groups (the same list): one or more per player, each with ``"player"``."""
        return self.base_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base_optimizer.param_groups = value

    @property  # type: ignore[override]
    def state(self) -> Any:
        """The base optimiser's per-parameter state (the same dict; Adam's moments, ...)."""
        return self.base_optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.base_optimizer.state = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        """The base optimiser's defaults plus gameopt's per-group options (``gamma``, ...)."""
        return self.base_optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base_optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group to the base optimiser (as ``torch.optim.Optimizer.add_param_group``).

        Args:
            param_group: ``{"params": ..., "player": name, **options}``; ``player`` must be one
                of ``players``; missing gameopt options get their defaults.

        Raises:
            GameInputError: no or unknown ``player``, a parameter another group already holds, or
                one that shares memory with another player's.
        """
        if getattr(self, "_initialising", False):
            self.base_optimizer.add_param_group(param_group)
            return
        player = param_group.get("player")
        if player not in self.players:
            raise GameInputError(
                f"add_param_group: the group must carry 'player' set to one of "
                f"{list(self.players)}, got {player!r}"
            )
        owner = dict(self._owner)
        (group,) = player_param_groups({player: [dict(param_group)]}, owner)
        check_shared_storage(list(self.param_groups) + [group])
        for key, value in self._group_options.items():
            group.setdefault(key, value)
        self.base_optimizer.add_param_group(group)
        self._owner.update(owner)

    def player_params(self, player: str) -> list[torch.Tensor]:
        """All parameters of ``player``, in param-group order."""
        return [p for g in self.param_groups if g["player"] == player for p in g["params"]]

    # --- stepping ------------------------------------------------------------------------
    #: torch.optim wraps ``step`` with this at construction: see :mod:`gameopt.step_hooks`.
    profile_hook_step = staticmethod(hooked_step)

    def _apply_base_step(
        self, players: Sequence[str] | None = None,
        then: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]] | None = None,
    ) -> bool:
        """Let the base optimiser apply ``p.grad`` of ``players`` (default: all), if it is finite.

        The one place where a gameopt optimiser moves parameters; every ``step``
        calls it after writing the gradients. With ``nonfinite != "ignore"`` it first
        checks exactly what the base step will apply: every ``p.grad`` of the groups
        of ``players`` (so the caller sets other players' ``p.grad`` to None when
        they must not move) and those groups' ``lr``, elementwise, and, for a base
        optimiser that keeps a running average of ``g*g`` (Adam, AdamW, NAdam, RAdam,
        RMSprop, Adagrad, Adadelta), that every ``g*g`` is finite in the parameter's
        dtype (else its second moment turns Inf and the parameters stop moving for
        good). One fused reduction with one host read (all-reduced under
        ``distributed=True``, so all ranks decide alike). Then the policy: ``"skip"``
        warns and counts, ``"raise"`` raises ``FloatingPointError``; either way nothing
        moves and the base optimiser's state is untouched.

        Args:
            players: the players whose groups step (default: all).
            then: a step rule's own move after the base step (the optimistic correction):
                called with the parameters as they were before the base step (copies, in
                param-group order) and returns the tensors it produced, which join the check
                (made once, after ``then``). When the check fails, the parameters and the base
                optimiser's state are put back as they were.

        Returns:
            Whether the parameters moved.
        """
        stepping = self.players if players is None else tuple(players)
        groups = [g for g in self.param_groups if g["player"] in stepping]
        checking = self.nonfinite != "ignore"
        if then is None:
            if checking and not self._applied_is_finite(groups):
                self._refuse_step(groups)
                return False
            unhooked_step(self.base_optimizer)
            self._shared.moved = True
            return True
        params = [p for g in groups for p in g["params"]]
        saved = self._save_base(params, with_state=checking)   # the state copy only to undo a refused step
        unhooked_step(self.base_optimizer)
        produced = list(then(saved[0]))
        if checking and not self._applied_is_finite(groups, produced):
            self._restore_base(params, saved)
            self._refuse_step(groups, produced)
            return False
        self._shared.moved = True
        return True

    @contextlib.contextmanager
    def _grads_restored_on_error(self) -> Iterator[None]:
        """Put every ``p.grad`` back as it was when the block raises (a closure's bad losses)."""
        params = [p for g in self.param_groups for p in g["params"]]
        grads = [p.grad for p in params]
        try:
            yield
        except BaseException:
            for p, g in zip(params, grads):
                p.grad = g
            raise

    def _save_base(
        self, params: list[torch.Tensor], with_state: bool = True
    ) -> tuple[list[torch.Tensor], dict[Any, dict[str, Any]]]:
        """Copies of ``params`` and (``with_state``) of their base optimiser state, for :meth:`_restore_base`."""
        with torch.no_grad():
            values = [p.detach().clone() for p in params]
        state = {
            p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self.state[p].items()}
            for p in params if with_state and p in self.state
        }
        return values, state

    def _restore_base(
        self, params: list[torch.Tensor], saved: tuple[list[torch.Tensor], dict[Any, dict[str, Any]]]
    ) -> None:
        """Put ``params`` and their base optimiser state back as :meth:`_save_base` found them."""
        values, state = saved
        with torch.no_grad():
            torch._foreach_copy_(params, values)
        for p in params:
            if p in state:
                self.state[p] = state[p]
            else:
                self.state.pop(p, None)

    def _squared_by_base(self) -> bool:
        return isinstance(self.base_optimizer, _SECOND_MOMENT)

    def _applied_is_finite(self, groups: list[dict[str, Any]], extra: Sequence[torch.Tensor] = ()) -> bool:
        """Whether every ``p.grad`` and ``lr`` of ``groups`` (and ``extra``) is finite, and every
        ``g*g`` a second-moment base would form: one host read."""
        lrs = [g["lr"] for g in groups if "lr" in g]
        if any(_is_number(lr) and not math.isfinite(lr) for lr in lrs):
            return False
        grads = [p.grad for g in groups for p in g["params"] if p.grad is not None]
        tensors = list(grads) + [lr for lr in lrs if isinstance(lr, torch.Tensor)] + list(extra)
        if not tensors:
            return True
        flag = all_finite(tensors, len(grads) if self._squared_by_base() else 0)
        if self.distributed:
            bad = (~flag).to(torch.float32).reshape(1)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=self.process_group)
            return not bool(bad)
        return bool(flag)

    def _refuse_step(self, groups: list[dict[str, Any]], extra: Sequence[torch.Tensor] = ()) -> None:
        """Raise or warn (and count) for a non-finite step; runs only when one was found."""
        bad_grad, bad_square, bad_lr = [], [], []
        squared = self._squared_by_base()
        for g in groups:
            grads = [p.grad for p in g["params"] if p.grad is not None]
            if grads and not bool(all_finite(grads)):
                if g["player"] not in bad_grad:
                    bad_grad.append(g["player"])
            elif grads and squared and not bool(all_finite(grads, len(grads))) and g["player"] not in bad_square:
                bad_square.append(g["player"])
            lr = g.get("lr")
            if (_is_number(lr) and not math.isfinite(lr)) or (
                isinstance(lr, torch.Tensor) and not bool(all_finite([lr]))
            ):
                bad_lr.append(f"{g['player']} (lr={float(lr)})")
        what = []
        if bad_grad:
            what.append(f"non-finite (NaN or Inf) gradient for player(s) {bad_grad}")
        if bad_square:
            what.append(
                f"gradient of player(s) {bad_square} whose square overflows its dtype: "
                f"{type(self.base_optimizer).__name__}'s running average of g*g would become Inf "
                "and the parameters would stop moving"
            )
        if bad_lr:
            what.append(f"non-finite learning rate for {', '.join(bad_lr)} (check the LR schedule)")
        if not what and extra and not bool(all_finite(extra)):
            what.append("the update would put non-finite (NaN or Inf) values into the parameters "
                        "(the learning rate is too large for them)")
        if not what:  # only another rank saw it
            what.append("non-finite (NaN or Inf) gradient on another rank")
        self._shared.last_step_skipped = True
        fix = ("Lower the learning rate or gamma, or check the losses for log(0) / overflow; "
               "a stale NaN in p.grad stays until zero_grad()")
        if self.nonfinite == "raise":
            raise FloatingPointError(
                f"{'; '.join(what)}: no parameter was moved and the base optimiser's state is "
                f"untouched (nonfinite='raise'). {fix}"
            )
        self._shared.skipped_steps += 1
        warnings.warn(
            f"gameopt: {'; '.join(what)}; the step was skipped and the base optimiser's state "
            f"left untouched. {fix}",
            RuntimeWarning, stacklevel=5,
        )

    # --- checkpoints ---------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        """gameopt's settings in a checkpoint; subclasses add theirs."""
        return {
            "class": self._kind,
            "base_class": type(self.base_optimizer).__qualname__,
            "players": list(self.players),
            "nonfinite": self.nonfinite,
            "skipped_steps": self.skipped_steps,
        }

    def _check_extra_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Validate a checkpoint's ``"gameopt"`` entry; return the settings to load.

        Raises GameInputError naming the bad entry. Subclasses check their own keys
        and call this. Nothing may change here.
        """
        nonfinite = extra.get("nonfinite", self.nonfinite)
        check_nonfinite(nonfinite, "the checkpoint's 'nonfinite'")
        skipped = extra.get("skipped_steps", 0)
        if not (isinstance(skipped, int) and not isinstance(skipped, bool) and skipped >= 0):
            raise GameInputError(f"the checkpoint's 'skipped_steps' must be an integer >= 0, got {skipped!r}")
        return {"nonfinite": nonfinite, "skipped_steps": skipped}

    def _check_group(self, index: int, group: dict[str, Any]) -> None:
        """Validate gameopt's options in a checkpoint's param group (subclasses: e.g. gamma)."""

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state dict plus gameopt's settings under ``"gameopt"``."""
        sd = super().state_dict()
        sd["gameopt"] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`state_dict`: all of it, or nothing.

        Everything is validated before anything changes: the gameopt class and the
        base optimiser's class recorded in the checkpoint (checkpoints written before
        they were recorded are checked by their contents), players, param groups
        (player, size, keys, numeric hyper-parameters), per-parameter state (keys,
        shapes and kinds as this base optimiser makes them, finite values) and
        gameopt's settings.

        Raises:
            GameInputError: the checkpoint does not fit this optimiser; it names the
                mismatch. The optimiser is then unchanged.
        """
        sd = dict(state_dict) if isinstance(state_dict, Mapping) else state_dict
        if not isinstance(sd, dict):
            raise GameInputError(f"load_state_dict expects a dict from state_dict(), got {type(state_dict).__name__}")
        extra = sd.pop("gameopt", None)
        if extra is None:
            raise GameInputError(
                "this state dict has no 'gameopt' entry: it was not written by a gameopt "
                "optimiser. To load a plain torch optimiser's state use "
                "opt.base_optimizer.load_state_dict(...)"
            )
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, sd)
            if result is not None:
                sd = result
        settings = checkpoints.check_checkpoint(self, sd, extra)
        base = self.base_optimizer
        before = (base.state, base.param_groups, dataclasses.replace(self._shared))
        try:
            base.load_state_dict(sd)
            for key, value in settings.items():
                setattr(self._shared, key, value)
        except BaseException:
            base.state, base.param_groups = before[0], before[1]
            for f in dataclasses.fields(before[2]):
                setattr(self._shared, f.name, getattr(before[2], f.name))
            raise
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    # --- copies and pickles --------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Settings, the base optimiser (defaults, state, groups) and the shared state.

        Like torch.optim, hooks are not copied, nor are methods patched onto the
        instance (an LR scheduler's ``step`` wrapper, which refers to the original
        optimiser) or compiled functions; the copy rebuilds them.
        """
        return {
            key: value for key, value in self.__dict__.items()
            if not (key in _NOT_COPIED or key.endswith("_hooks") or _is_function(value))
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if not isinstance(state.get("_shared"), SharedState):  # pickled before SharedState existed
            shared_state = self._shared_type()
            for f in dataclasses.fields(shared_state):
                if f.name in state and not f.metadata.get("transient"):
                    setattr(shared_state, f.name, state.pop(f.name))
            state["_shared"] = shared_state
        state.setdefault("_kind", type(self).__name__)
        super().__setstate__(state)  # fresh hook dicts, torch's step patching
        # ids change on copy: rebuild the owner map from the (copied) groups
        self._owner = {id(p): g["player"] for g in self.param_groups for p in g["params"]}

    def __repr__(self) -> str:
        inner = repr(self.base_optimizer).replace("\n", "\n    ")
        return f"{type(self).__name__}(players={list(self.players)}, base={inner})"

    def monitor_stats(self) -> dict[str, Any]:
        """Statistics of the last step for :class:`gameopt.Monitor` (tensors; no host sync)."""
        out: dict[str, Any] = {"skipped_steps": self.skipped_steps}
        for group_index, group in enumerate(self.param_groups):
            out[f"lr/{group['player']}/{group_index}"] = group["lr"] if "lr" in group else None
        return out


#: Base optimisers that keep a running average of g*g in the parameter's dtype.
_SECOND_MOMENT = (
    torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam,
    torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta,
)

_NOT_COPIED = frozenset({"step", "_opt_called", "_owner", "_zero_grad_profile_name"})


def _is_function(value: Any) -> bool:
    return isinstance(value, (types.FunctionType, types.MethodType, functools.partial))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_nonfinite(value: Any, what: str = "nonfinite") -> None:
    """Check a NaN/Inf policy.

    Args:
        value: the policy given; one of :data:`NONFINITE_POLICIES`.
        what: the argument's name in the error message.

    Raises:
        GameInputError: ``value`` is not ``"skip"``, ``"raise"`` or ``"ignore"``.
    """
    if not (isinstance(value, str) and value in NONFINITE_POLICIES):
        raise GameInputError(f"{what} must be 'skip', 'raise' or 'ignore', got {value!r}")
