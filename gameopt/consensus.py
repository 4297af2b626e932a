"""Consensus optimisation (Mescheder, Nowozin, Geiger, "The Numerics of GANs", 2017).

Each player's gradient gets ``gamma * grad(1/2 ||v||^2)`` added, where ``v`` is the
game's gradient field (every player's gradient of its own loss). The correction
``v'(x)^T v(x)`` is one vector-Jacobian product of ``v`` with itself, taken through
the graph of the first backward pass; nothing is recomputed.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from .errors import GameInputError
from .distributed import all_reduce_mean
from .frameworks import through_wrappers
from .game_optimizer import GameOptimizer, SharedState, shared, transient
from .gradients import (
    check_loss,
    detached,
    explain_double_backward,
    find_once_differentiable,
    grad_scaler_factor,
    player_gradients,
    reaches_any,
)
from .players import DISCRIMINATOR, GENERATOR, ParamsLike, game_players

__all__ = ["ConsensusOptimizer", "ConsensusStats", "SimultaneousOptimizer"]

Losses = Sequence[torch.Tensor]
_ACCUMULATE_IN_FLOAT32 = (torch.float16, torch.bfloat16, torch.float32)


class ConsensusStats:
    """Statistics of the last :meth:`ConsensusOptimizer.backward`, as tensors (reading them syncs).

    ``grad_sq_norm[player]`` is ``||v_player||^2``; ``consensus_loss`` is
    ``L = 1/2 ||v||^2`` (both for the plain mini-batch estimate ``v_B``);
    ``reg_grad_norm`` is ``||grad L||`` over the regularised parameters, before
    multiplying by gamma; ``finite`` says whether all of them were finite. All are
    of the unscaled gradients (with ``scaler=``, accumulated in float64 and unscaled there, so a
    huge scale does not overflow them), accumulated in float32 otherwise. Only the
    per-tensor norms are computed during ``backward``; these reductions run when
    you access them. They describe the last ``backward``; whether ``step`` skips is
    decided on what it applies (see :meth:`GameOptimizer._apply_base_step`).

    Built by :meth:`ConsensusOptimizer.backward`, not by users.

    Args:
        players: the players' names, in order.
        norms: float32, shape ``(n_v + n_reg,)``: the L2 norm of every gradient tensor of ``v``
            (players in order), then of every tensor of ``grad L``.
        n_v: how many of ``norms`` belong to ``v``.
        bounds: per player, the end (exclusive) of its entries in the ``v`` part and in
            the ``grad L`` part.
        finite: 0-d bool tensor, whether all of ``norms`` are finite.
    """

    def __init__(
        self, players: tuple[str, ...], norms: torch.Tensor, n_v: int,
        bounds: list[tuple[int, int]], finite: torch.Tensor,
    ) -> None:
        self._players = players
        self._norms = norms  # float32: the v norms of every tensor, then the grad L norms
        self._n_v = n_v
        self._bounds = bounds
        self.finite = finite

    @property
    def grad_sq_norm(self) -> dict[str, torch.Tensor]:
        """``{player: ||v_player||^2}``, 0-d float32 tensors."""
        return self._per_player(self._norms[: self._n_v].square(), 0)

    def _per_player(self, sq: torch.Tensor, part: int) -> dict[str, torch.Tensor]:
        """Sum ``sq`` (one part of the norms, squared) per player; ``part`` 0 is ``v``, 1 is ``grad L``."""
        out, start = {}, 0
        for player, bounds in zip(self._players, self._bounds):
            out[player] = sq[start:bounds[part]].sum()
            start = bounds[part]
        return out

    @property
    def consensus_loss(self) -> torch.Tensor:
        """``L = 1/2 ||v||^2`` over all players, a 0-d float32 tensor."""
        return 0.5 * self._norms[: self._n_v].square().sum()

    @property
    def reg_grad_norm(self) -> torch.Tensor:
        """``||grad L||`` over the regularised parameters (before ``gamma``), a 0-d float32 tensor."""
        return torch.linalg.vector_norm(self._norms[self._n_v:])

    @property
    def reg_grad_sq_norm(self) -> dict[str, torch.Tensor]:
        """``{player: ||grad_player L||^2}`` (before ``gamma``; 0 for a player the regulariser
        skips, the generator under ``smoothing``), 0-d float32 tensors. ``gamma * sqrt(this) /
        sqrt(grad_sq_norm)`` says how many times the regulariser outweighs the game in a player's
        gradient: when it is in the hundreds, the players minimise ``||v||^2`` instead of playing
        (see the consensus page's pitfalls)."""
        return self._per_player(self._norms[self._n_v:].square(), 1)

    def finite_per_player(self) -> list[bool]:
        """Which players' new gradients (v and grad L) are finite (syncs)."""
        ok = torch.isfinite(self._norms).tolist()
        out, start_v, start_r = [], 0, self._n_v
        for end_v, end_r in self._bounds:
            out.append(all(ok[start_v:end_v]) and all(ok[start_r: self._n_v + end_r]))
            start_v, start_r = end_v, self._n_v + end_r
        return out


@dataclasses.dataclass
class ConsensusState(SharedState):
    """:class:`SharedState` plus the consensus settings and the last backward's records."""

    smoothing: bool = False
    unbiased: bool = False
    stats: ConsensusStats | None = None
    loss_scale: torch.Tensor | None = None  # the GradScaler's scale of the last backward (None: unscaled)
    graph_checked: bool = False  # the one-time graph checks ran
    compiled_core: Callable[..., Any] | None = transient(None)
    every: int = 1  # lazy regularisation: the correction at every every-th gradient computation
    lazy_calls: int = 0  # gradient computations so far (backward calls), for ``every``
    reg_factor: float = transient(1.0)  # the multiplier of gamma in the current computation
    fresh: bool = transient(False)  # backward() wrote p.grad since the last step()


class ConsensusOptimizer(GameOptimizer):
    """Consensus optimisation over any torch optimiser.

    Usage (each player minimises its own loss; zero-sum: ``disc_loss = -gen_loss``)::

        opt = ConsensusOptimizer(torch.optim.RMSprop, G.parameters(), D.parameters(),
                                 gamma=10.0, lr=1e-4)
        opt.zero_grad()
        opt.backward(gen_loss, disc_loss)   # p.grad += v_p + gamma * (v'^T v)_p
        opt.step()                          # the base optimiser applies p.grad

    or ``opt.step(closure)`` with ``closure()`` returning ``(gen_loss, disc_loss)``,
    or returning None when it has put the gradients in ``p.grad`` itself (as
    PyTorch Lightning's closure does after ``opt.backward``).

    **fp16 loss scaling:** losses scaled by a ``torch.amp.GradScaler`` must be passed
    with ``backward(..., scaler=scaler)``. Without it the regulariser comes out
    ``s`` times too large (``s`` = the scale, 65536 by default): gameopt warns once
    when a loss looks like ``scaler.scale(loss)`` and no scaler was given.

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` subclass (SGD, Adam, RMSprop, ...);
            ``base_kwargs`` are passed to it.
        gen_params, disc_params: the players' parameters, as tensors or param-group
            dicts (per-player lr, betas, weight decay, gamma, ...).
        gamma: consensus weight (>= 0), the default of every group's ``"gamma"``
            (default 1). ``gamma=0`` is exactly the base optimiser's simultaneous step
            (SimGA). The default is measured on MNIST with Adam (lr 2e-4; three seeds,
            strict metrics, docs/benchmarks.md "Consensus gamma"): gamma 0.3 and 1 drew
            the best digits and could not be told apart, 3 was worse and the paper's 10
            drew noise. The regulariser scales with the squared gradient, so tune it for
            other losses and players; the paper's 10 belongs with RMSProp at lr 1e-4 on
            its 8-Gaussian and CIFAR-10 settings, so pass ``gamma=10.0`` there.
        smoothing: the paper's "smoothing optimiser": the regulariser is added to the
            discriminator's gradient only.
        every: lazy regularisation (as StyleGAN2 does for R1): the correction is computed
            at the first gradient computation (``backward`` or ``step(closure)``) and every
            ``every``-th one after, multiplied by ``every`` so its average weight stays
            gamma; the others are plain simultaneous steps (first derivatives only). With
            ``every=k`` a step costs on average about ``(cost_consensus + (k-1) cost_plain) / k``.
            The count is checkpointed. ``every=1`` (default) regularises every step.
        unbiased: subtract the mini-batch bias of ``1/2||v_B||^2`` (supplement of the
            paper): ``backward`` then takes per-example losses of shape (B,), whose
            means are the players' losses. Costly: per-example gradients are held with
            their graph (memory and time about B times a plain step).
        compile: compile the gradient computation of ``step(closure)`` (the closure's
            forward pass, both backward passes and the vector-Jacobian product) into
            one graph with ``torch.compile``. The first ``step(closure)`` runs eagerly
            (it validates the losses and the graph); later ones run compiled. Needs a
            closure that torch.compile can trace with ``fullgraph=True``; the first
            compiled step takes tens of seconds. ``backward()`` always runs eagerly.
            Not combinable with ``unbiased``.
        distributed: data-parallel training under ``torch.distributed``, with plain or
            DDP-wrapped modules (gameopt does the reductions; DDP's own hooks only fire
            on ``.backward()``): each rank passes the losses of its own equal-sized
            share of the batch; gameopt all-reduces v (the ranks' mean) and then each
            rank's ``J_r^T v`` (mean), which is exactly the full-batch consensus step,
            at one extra all-reduce of parameter size. Every rank ends with the same
            gradient, so a NaN on one rank makes every rank skip the step together.
        process_group: the group to reduce over (default: the world).
        nonfinite: what ``step`` does when a gradient it would apply (any ``p.grad``,
            including stale or hand-written ones) or a learning rate has a NaN/Inf:
            ``"skip"`` (default: skip the base step, warn, count in ``skipped_steps``),
            ``"raise"`` (``FloatingPointError``), or ``"ignore"`` (no check, no host
            sync). Step post-hooks run only on steps that moved the parameters.
        players: instead of ``gen_params``/``disc_params``, an ordered mapping
            ``{name: params}`` of any number of players; ``backward`` then takes one
            loss per player in that order.

    Raises:
        GameInputError: ``gamma`` (or a group's ``"gamma"``) not a finite number >= 0, ``every``
            not an integer >= 1, ``distributed`` with ``compile`` or ``unbiased``, ``compile``
            with ``unbiased``, or bad players/base optimiser.
        RuntimeError: ``compile=True`` on a torch whose ``torch.compile`` cannot trace
            ``autograd.grad``.
    """

    _shared_type = ConsensusState
    smoothing = shared("The regulariser goes to the non-generator players only (the paper's smoothing optimiser).")
    unbiased = shared("The mini-batch bias of 1/2||v_B||^2 is removed (per-example losses).")
    stats = shared("Statistics of the last ``backward`` (:class:`ConsensusStats`; None before the first).")


    def __init__(
        self,
        base_optimizer: type[Optimizer],
        gen_params: ParamsLike | None = None,
        disc_params: ParamsLike | None = None,
        gamma: float = 1.0,
        *,
        smoothing: bool = False,
        unbiased: bool = False,
        every: int = 1,
        compile: bool = False,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "skip",
        players: Mapping[str, ParamsLike] | None = None,
        **base_kwargs: Any,
    ) -> None:
        players = game_players(gen_params, disc_params, players)
        _check_gamma(gamma, "gamma")
        _check_every(every, "every")
        if distributed and (compile or unbiased):
            raise GameInputError("distributed=True does not support compile=True or unbiased=True yet")
        if compile and unbiased:
            raise GameInputError("compile=True does not support unbiased=True; use one or the other")
        if compile and not hasattr(getattr(torch, "_dynamo", None) and torch._dynamo.config, "trace_autograd_ops"):
            raise RuntimeError(
                f"compile=True needs torch.compile to trace autograd.grad "
                f"(torch._dynamo.config.trace_autograd_ops), which torch {torch.__version__} "
                "lacks; upgrade torch or use compile=False"
            )
        self._group_options = {"gamma": float(gamma)}
        super().__init__(base_optimizer, players, nonfinite=nonfinite, distributed=distributed,
                         process_group=process_group, **base_kwargs)
        for group in self.param_groups:
            _check_gamma(group["gamma"], f"gamma of a '{group['player']}' param group")
        self.smoothing = bool(smoothing)
        self.unbiased = bool(unbiased)
        self.compile = bool(compile)
        self._shared.every = every

    @property
    def regularized_players(self) -> tuple[str, ...]:
        """Players whose gradient receives ``gamma * grad L`` (all but the generator when smoothing)."""
        if self.smoothing:
            return tuple(p for p in self.players if p != GENERATOR)
        return self.players

    def _loss_names(self) -> list[str]:
        if self.players == (GENERATOR, DISCRIMINATOR):
            return ["gen_loss", "disc_loss"]
        return [f"loss of player '{p}'" for p in self.players]

    @through_wrappers
    def backward(self, *losses: torch.Tensor, scaler: Any = None) -> ConsensusStats:
        """Accumulate the consensus-corrected gradient into ``p.grad`` (like ``loss.backward()``).

        Takes one loss per player, in player order: ``backward(gen_loss, disc_loss)``.
        Nothing is written to ``p.grad`` unless every check passes.

        ``scaler``: the ``torch.amp.GradScaler`` whose ``scale()`` the losses went through
        (fp16 mixed precision). The gradients are then ``s v`` and, if nothing were done,
        the regulariser's ``s^2 v'^T v``; gameopt seeds the second pass with ``v`` unscaled,
        so ``p.grad = s (v + gamma v'^T v)`` is consistently scaled and ``scaler.step(opt)``
        unscales it, checks it for inf/NaN and skips the step on overflow as usual.
        Forgetting ``scaler=`` with scaled losses makes the regulariser ``s`` times too
        large; gameopt warns once when a loss looks like ``scaler.scale(loss)``.

        Called on a framework's wrapper (Lightning's ``opt = self.optimizers()``), it acts
        like :func:`gameopt.backward`: on the real optimiser, with the framework's fp16
        ``GradScaler`` applied to the losses when there is one.

        Args:
            *losses: one loss per player; scalars, or shape ``(B,)`` with ``unbiased=True``.
            scaler: see above (default None: the losses are not scaled).

        Returns:
            :class:`ConsensusStats` of this backward (also in ``opt.stats``).

        Raises:
            GameInputError: the wrong number of losses, a bad loss (not a floating tensor with
                a graph, wrong shape, reaching none of its player's parameters), or a
                ``scaler`` that is not a ``GradScaler``.
            RuntimeError: an operation in the losses has no second derivative (the message
                names the fix).
        """
        if len(losses) != len(self.players):
            raise GameInputError(
                f"backward expects {len(self.players)} losses (one per player: "
                f"{list(self.players)}), got {len(losses)}"
            )
        names = self._loss_names()
        losses = tuple(
            check_loss(loss, player, name, self.unbiased)
            for loss, player, name in zip(losses, self.players, names)
        )
        scale = None
        if scaler is not None:
            if not (hasattr(scaler, "get_scale") and hasattr(scaler, "unscale_")):
                raise GameInputError(
                    f"scaler must be the torch.amp.GradScaler that scaled the losses, got {type(scaler).__name__}"
                )
            if scaler.is_enabled():  # the scale as a device tensor: reading it would sync
                get_async = getattr(scaler, "_get_scale_async", None)
                scale = get_async() if get_async is not None else torch.tensor(float(scaler.get_scale()))
        self._shared.loss_scale = scale
        with torch.enable_grad():
            return self._backward(losses, names, scaled=scaler is not None)

    def _reg_params(self) -> list[torch.Tensor]:
        """Parameters that receive gamma * grad L: groups of regularised players with gamma != 0."""
        regularized = set(self.regularized_players)
        for group in self.param_groups:
            _check_gamma(group["gamma"], f"gamma of a '{group['player']}' param group")
        return [
            p for g in self.param_groups if g["player"] in regularized and g["gamma"] != 0
            for p in g["params"]
        ]

    @property
    def every(self) -> int:
        """Lazy regularisation period (1: the correction at every step)."""
        return self._shared.every

    def _lazy_turn(self, advance: bool = True) -> float:
        """The multiplier of gamma for the next gradient computation (``every`` or 0); advances the count."""
        shared_state = self._shared
        factor = float(shared_state.every) if shared_state.lazy_calls % shared_state.every == 0 else 0.0
        if advance:
            shared_state.lazy_calls += 1
            shared_state.reg_factor = factor
        return factor

    def _backward(self, losses: Losses, names: list[str], scaled: bool) -> ConsensusStats:
        reg_params = self._reg_params() if self._lazy_turn(advance=False) else []
        params = [self.player_params(p) for p in self.players]
        if reg_params and not self._shared.graph_checked:
            self._warn_isolated_losses(losses, names, params)
            if not scaled:
                _warn_scaled_losses(losses, names)
        v, reg = self._gradients(losses, names, params, reg_params)
        if reg_params:
            self._shared.graph_checked = True
        self._lazy_turn()   # counted only once the gradients exist: a failed backward is not a turn
        return self._apply(v, reg, params)

    def _warn_isolated_losses(
        self, losses: Losses, names: list[str], params: list[list[torch.Tensor]]
    ) -> None:
        """Warn (once) when a loss reaches no other player's parameters, e.g. ``D(fake.detach())``.

        The consensus term needs how each player's gradient changes with the other
        players' parameters; a detached input hides that dependence from autograd.
        """
        if self.smoothing or len(self.players) < 2:
            return
        for i, (loss, name, player) in enumerate(zip(losses, names, self.players)):
            others = [p for j, ps in enumerate(params) if j != i for p in ps]
            if not reaches_any(loss, others):
                warnings.warn(
                    f"gameopt: {name} does not depend on the other players' parameters, so "
                    f"the consensus term misses how player '{player}''s gradient changes with "
                    "them. If this is a GAN, do not detach the generated samples in the "
                    "discriminator's loss (D(fake), not D(fake.detach())): gameopt differentiates "
                    "each loss only with respect to its own player, so detaching is not needed",
                    RuntimeWarning, stacklevel=4,
                )

    def _gradients(
        self, losses: Losses, names: list[str], params: list[list[torch.Tensor]],
        reg_params: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor | None], dict[int, torch.Tensor]]:
        """The game's gradient field v (detached, per parameter) and grad L (keyed by id(param))."""
        grads = player_gradients(
            losses, params, self.players, names,
            create_graph=bool(reg_params), per_example=self.unbiased,
        )
        flat_grads = [t for g in grads for t in g]

        if self.unbiased:
            batch = losses[0].shape[0]
            v = [None if t is None else t.detach().mean(0) for t in flat_grads]
        else:
            v = [None if t is None else t.detach() for t in flat_grads]
        if self.distributed:
            # same layout on every rank: a parameter unused here may be used elsewhere
            flat_params = [p for ps in params for p in ps]
            v = all_reduce_mean(
                [torch.zeros_like(p) if t is None else t for p, t in zip(flat_params, v)], self.process_group
            )

        reg: dict[int, torch.Tensor] = {}
        if reg_params:
            keep = [i for i, t in enumerate(flat_grads) if t is not None and t.requires_grad]
            outs = [flat_grads[i] for i in keep]
            if self.unbiased:
                # d/dv_i of the U-statistic (||sum v_i||^2 - sum ||v_i||^2) / (2B(B-1)).
                seeds = [(v[i] - flat_grads[i].detach() / batch) / (batch - 1) for i in keep]
            else:
                seeds = [v[i] for i in keep]
            scale = self._shared.loss_scale
            if scale is not None:  # losses scaled by s: seed with v, not s v, so grad L comes out s-scaled like v
                seeds = [t / scale.to(t.device) for t in seeds]
            if outs and not self._shared.graph_checked:
                culprit = find_once_differentiable(outs)
                if culprit is not None:
                    with explain_double_backward(True):
                        raise RuntimeError(
                            f"trying to differentiate twice a function that was marked with "
                            f"@once_differentiable ({culprit}): its second derivatives would be "
                            "silently dropped"
                        )
            r: Sequence[torch.Tensor | None] = [None] * len(reg_params)
            if outs:
                with explain_double_backward(True):
                    r = torch.autograd.grad(outs, reg_params, grad_outputs=seeds, allow_unused=True)
            if self.distributed:  # every rank joins the reduction, whatever its graph
                r = all_reduce_mean(
                    [torch.zeros_like(p) if t is None else t for p, t in zip(reg_params, r)],
                    self.process_group,
                )
            reg = {id(p): t for p, t in zip(reg_params, r) if t is not None}
        return v, reg

    def _apply(
        self, v: list[torch.Tensor | None], reg: dict[int, torch.Tensor],
        params: list[list[torch.Tensor]],
    ) -> ConsensusStats:
        """Record statistics, then accumulate ``v + gamma * grad L`` into ``p.grad``."""
        groups = self.param_groups
        regularized = set(self.regularized_players)
        flat_params = [p for ps in params for p in ps]
        # One fused norm call for every tensor; the per-player reductions are left to
        # ConsensusStats, computed only if read.
        v_parts: list[torch.Tensor] = []
        r_parts: list[torch.Tensor] = []
        bounds: list[tuple[int, int]] = []
        offset = 0
        for ps in params:
            v_parts += [t for t in v[offset: offset + len(ps)] if t is not None]
            r_parts += [reg[id(p)] for p in ps if id(p) in reg]
            bounds.append((len(v_parts), len(r_parts)))
            offset += len(ps)
        parts = v_parts + r_parts
        scale = self._shared.loss_scale
        # fp16 norms overflow at 65504; scaled gradients (s up to 2^127) can overflow float32's
        # norms too, so with a scaler they are accumulated in float64 and unscaled there
        wide = torch.float64 if scale is not None and parts and parts[0].device.type != "mps" else torch.float32
        if all(t.dtype in _ACCUMULATE_IN_FLOAT32 for t in parts):
            norm = torch.stack(torch._foreach_norm(parts, dtype=wide))
        else:
            norm = torch.stack([n.to(wide) for n in torch._foreach_norm(parts)])
        if scale is not None:  # statistics of the unscaled gradients
            norm = (norm / scale.to(device=norm.device, dtype=wide)).float()
        finite = torch.isfinite(norm).all()
        self._shared.stats = ConsensusStats(self.players, norm, len(v_parts), bounds, finite)

        index = {id(p): i for i, p in enumerate(flat_params)}
        finals: list[torch.Tensor | None] = list(v)
        for group in groups:
            if group["player"] not in regularized or group["gamma"] == 0:
                continue
            gamma = float(group["gamma"]) * self._shared.reg_factor
            pairs = [(index[id(p)], reg[id(p)]) for p in group["params"] if id(p) in reg]
            with_v = [(i, r) for i, r in pairs if finals[i] is not None]
            if with_v:
                torch._foreach_add_([finals[i] for i, _ in with_v], [r for _, r in with_v], alpha=gamma)
            for i, r in pairs:
                if finals[i] is None:
                    finals[i] = r * gamma

        fresh = [(p, g) for p, g in zip(flat_params, finals) if g is not None]
        existing = [(p, g) for p, g in fresh if p.grad is not None]
        if existing:
            torch._foreach_add_([p.grad for p, _ in existing], [g for _, g in existing])
        for p, g in fresh:
            if p.grad is None:
                p.grad = g
        self._shared.fresh = True
        return self._shared.stats

    def step(self, closure: Callable[[], Losses | None] | None = None) -> Losses | None:  # type: ignore[override]
        """Apply the gradients in ``p.grad`` with the base optimiser.

        ``closure`` (optional) is evaluated with gradients enabled. If it returns one
        loss per player, ``p.grad`` is reset and recomputed from them (:meth:`backward`);
        if it returns None, it has put the gradients in ``p.grad`` itself (PyTorch
        Lightning's closures do). Then the base optimiser applies ``p.grad`` under the
        ``nonfinite`` policy (:meth:`GameOptimizer._apply_base_step`): a NaN/Inf
        anywhere in what would be applied skips the step (default) and warns.

        Returns:
            The closure's losses (None without a closure or when it returned None).

        Raises:
            GameInputError: the closure returned something other than losses or None.
            FloatingPointError: with ``nonfinite="raise"``, on a NaN/Inf.
        """
        losses = None if closure is None else self._closure_gradients(closure)
        if not self._shared.fresh:
            self._warn_foreign_gradients()
        self._shared.fresh = False
        self._apply_base_step()
        return detached(losses)  # type: ignore[return-value]

    def _warn_foreign_gradients(self) -> None:
        """Warn when ``p.grad`` holds gradients that no :meth:`backward` wrote since the last step."""
        if not any(p.grad is not None for g in self.param_groups for p in g["params"]):
            return
        losses = "gen_loss, disc_loss" if len(self.players) == 2 else "*losses"
        warnings.warn(
            f"gameopt: {type(self).__name__}.step() found gradients in p.grad but no "
            f"opt.backward({losses}) since the last step: they are applied as they are, "
            "without gameopt's gradients (each player's gradient of its own loss, plus the "
            "consensus term when gamma > 0). A plain loss.backward() computes neither: call "
            f"opt.zero_grad(); opt.backward({losses}); opt.step(), or opt.step(closure) with "
            "closure() returning the losses",
            RuntimeWarning, stacklevel=3,
        )

    def _closure_gradients(self, closure: Callable[[], Losses | None]) -> Losses | None:
        """Evaluate ``closure`` and, when it returns losses, put their consensus gradient in ``p.grad``."""
        core = self._shared.compiled_core
        reg_params = self._reg_params() if core is not None and self._lazy_turn(advance=False) else []
        if reg_params:  # compile=True after the first (eager) step; needs losses from the closure
            params = [self.player_params(p) for p in self.players]
            with torch.enable_grad(), torch._dynamo.config.patch(trace_autograd_ops=True):
                losses, v, r = core(closure, params, reg_params)
            self.zero_grad(set_to_none=True)
            self._shared.loss_scale = None
            self._lazy_turn()
            reg = {id(p): t for p, t in zip(reg_params, r) if t is not None}
            self._apply(v, reg, params)
            return tuple(losses)
        with torch.enable_grad():
            losses = closure()
        if losses is None:
            return None
        if isinstance(losses, (torch.Tensor, str, bytes)) or not isinstance(losses, Sequence):
            raise GameInputError(
                "the closure must return a tuple of losses, one per player "
                f"({list(self.players)}), e.g. (gen_loss, disc_loss), or None when it has "
                f"already put the gradients in p.grad; got {type(losses).__name__}"
            )
        with self._grads_restored_on_error():
            self.zero_grad(set_to_none=True)
            self.backward(*losses)
        if self.compile and core is None:
            self._shared.compiled_core = torch.compile(_consensus_core, fullgraph=True)
        return losses

    def monitor_stats(self) -> dict[str, Any]:
        """``||v_player||^2``, ``1/2||v||^2``, ``||v'^T v||``, lrs and skipped steps (tensors; no sync)."""
        out = super().monitor_stats()
        stats = self.stats
        if stats is not None:
            for player, value in stats.grad_sq_norm.items():
                out[f"grad_sq_norm/{player}"] = value
            out["consensus_loss"] = stats.consensus_loss
            out["reg_grad_norm"] = stats.reg_grad_norm
        return out

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra.update(smoothing=self.smoothing, unbiased=self.unbiased, every=self._shared.every,
                     lazy_calls=self._shared.lazy_calls)
        return extra

    def _check_extra_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        settings = super()._check_extra_state(extra)
        for key in ("smoothing", "unbiased"):
            value = extra.get(key, getattr(self, key))
            if not isinstance(value, bool):
                raise GameInputError(f"the checkpoint's '{key}' must be True or False, got {value!r}")
            settings[key] = value
        if settings["unbiased"] and (self.compile or self.distributed):
            raise GameInputError(
                "the checkpoint was written with unbiased=True, which this optimiser "
                "(compile=True or distributed=True) does not support"
            )
        every = extra.get("every", self._shared.every)
        _check_every(every, "the checkpoint's 'every'")
        calls = extra.get("lazy_calls", 0)
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise GameInputError(f"the checkpoint's 'lazy_calls' must be an integer >= 0, got {calls!r}")
        settings.update(every=every, lazy_calls=calls)
        return settings

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint (see :meth:`GameOptimizer.load_state_dict`); warn when it changes a setting.

        As torch.optim does for hyper-parameters, the checkpoint's ``every``, ``smoothing`` and
        ``unbiased`` replace the constructor's; a ``UserWarning`` names each one that changed.

        Args:
            state_dict: what :meth:`state_dict` returned.

        Raises:
            GameInputError: the checkpoint does not fit this optimiser (nothing changes).
        """
        before = {"every": self.every, "smoothing": self.smoothing, "unbiased": self.unbiased}
        super().load_state_dict(state_dict)
        changed = [f"{k}={getattr(self, k)!r} where the constructor gave {k}={v!r}"
                   for k, v in before.items() if getattr(self, k) != v]
        if changed:
            warnings.warn(
                f"gameopt: the checkpoint sets {'; '.join(changed)}. The checkpoint's settings win, as "
                "torch.optim's load_state_dict does for hyper-parameters; build the optimiser with the "
                "checkpoint's settings to silence this",
                UserWarning, stacklevel=2,
            )

    def _check_group(self, index: int, group: dict[str, Any]) -> None:
        _check_gamma(group.get("gamma"), f"the checkpoint's gamma of param group {index}")


def _consensus_core(
    closure: Callable[[], Losses], params: list[list[torch.Tensor]], reg_params: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Losses, v and grad L for ``step(closure)``; the function ``compile=True`` compiles."""
    losses = closure()
    flat: list[torch.Tensor | None] = []
    for loss, ps in zip(losses, params):
        flat.extend(torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True))
    outs = [t for t in flat if t is not None and t.requires_grad]
    r: list[torch.Tensor | None] = [None] * len(reg_params)
    if outs:
        r = list(torch.autograd.grad(outs, reg_params, grad_outputs=[t.detach() for t in outs], allow_unused=True))
    return [loss.detach() for loss in losses], [None if t is None else t.detach() for t in flat], r


class SimultaneousOptimizer(ConsensusOptimizer):
    """Simultaneous gradient steps (SimGA): every player steps on its own gradient at once.

    The same API as :class:`ConsensusOptimizer` with ``gamma=0``: no second
    derivatives are computed, so a step costs what plain training costs.
    ``distributed=True`` averages v over the ranks (one all-reduce).

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` subclass; ``**base_kwargs`` go to it.
        gen_params, disc_params: the two players' parameters (tensors or param-group dicts).
        distributed: average v over the ranks of ``process_group`` (default False).
        process_group: the torch.distributed group (default: the world).
        nonfinite: NaN/Inf policy, ``"skip"`` (default), ``"raise"`` or ``"ignore"``.
        players: ordered ``{name: params}`` instead of ``gen_params``/``disc_params``.
    """

    def __init__(
        self,
        base_optimizer: type[Optimizer],
        gen_params: ParamsLike | None = None,
        disc_params: ParamsLike | None = None,
        *,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "skip",
        players: Mapping[str, ParamsLike] | None = None,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(
            base_optimizer, gen_params, disc_params, gamma=0.0, distributed=distributed,
            process_group=process_group, nonfinite=nonfinite, players=players, **base_kwargs,
        )


def _warn_scaled_losses(losses: Losses, names: list[str]) -> None:
    """Warn when a loss looks like ``scaler.scale(loss)`` but ``backward`` got no ``scaler=``."""
    for loss, name in zip(losses, names):
        factor = grad_scaler_factor(loss)
        if factor is not None:
            warnings.warn(
                f"gameopt: {name} looks scaled by a torch.amp.GradScaler (times {factor:g}) but "
                "backward() got no scaler=: the consensus regulariser gamma v'^T v then comes out "
                f"{factor:g} times too large. Pass backward(..., scaler=scaler)",
                RuntimeWarning, stacklevel=5,
            )
            return


def _check_every(every: Any, what: str) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise GameInputError(
            f"{what} must be an integer >= 1 (regularise at every every-th step; 1 = always), got {every!r}"
        )


def _check_gamma(gamma: Any, what: str) -> None:
    if isinstance(gamma, torch.Tensor):
        raise GameInputError(f"{what} must be a Python number, not a tensor")
    if not isinstance(gamma, (int, float)) or math.isnan(gamma) or gamma < 0 or math.isinf(gamma):
        raise GameInputError(
            f"{what} must be a finite number >= 0 (the consensus weight; 0 gives plain "
            f"simultaneous steps), got {gamma!r}"
        )
