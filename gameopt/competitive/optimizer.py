"""CompetitiveOptimizer: competitive gradient descent (CGD) and its adaptive form (ACGD).

Schafer & Anandkumar, "Competitive Gradient Descent", NeurIPS 2019; ACGD from
Schafer, Zheng & Anandkumar, "Implicit competitive regularization in GANs", ICML 2020.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..distributed import all_reduce_mean
from ..errors import GameInputError
from ..game_optimizer import GameOptimizer, SharedState, shared
from ..gradients import (
    _COMPILED_MARKERS,
    _DOUBLE_BACKWARD_MARKERS,
    check_loss,
    detached,
    find_once_differentiable,
    grad_scaler_factor,
)
from ..players import ParamsLike, game_players
from .nash import MixedHessian, NashStep, flatten, solve_nash_step, unflatten
from .step_sizes import AdaptiveStepSizes, ConstantStepSizes, per_param_vector
from .zero_sum import negated_in_graph, negated_in_value
from ..frameworks import through_wrappers

__all__ = ["CompetitiveOptimizer", "CompetitiveStats", "NashUpdate"]

Losses = Sequence[Tensor]


class NashUpdate(Optimizer):
    """The update CompetitiveOptimizer applies: ``p <- p - lr * p.grad`` for every group.

    CGD's step is not a base optimiser's rule applied to a gradient: the step sizes
    enter the Nash system itself. So ``backward`` writes ``p.grad = -step / lr`` (the
    *competitive gradient*, in gradient units) and this plain rule applies it, which
    keeps gameopt's machinery (clipping between ``backward`` and ``step``, the
    non-finite check, GradScaler's unscaling, schedulers writing ``lr``) unchanged.

    Args:
        params: parameters or param groups, as for any torch optimiser.
        lr: the default learning rate (CGD's step size ``eta``).
    """

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        """``p <- p - lr * p.grad`` for every parameter with a gradient (``closure`` is ignored)."""
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                torch._foreach_add_(ps, [p.grad for p in ps], alpha=-float(group["lr"]))


class CompetitiveStats:
    """Statistics of the last :meth:`CompetitiveOptimizer.backward` (tensors; reading syncs).

    Attributes:
        cg_iterations: conjugate-gradient iterations of the Nash solve (int64, 0-dim).
        cg_residual: its final relative residual (see ``gameopt.competitive.nash``).
        cg_converged: whether the residual met ``tol`` within ``max_iter`` iterations.
        grad_sq_norm: ``{player: ||grad_player f||^2}`` of the unscaled gradient.
        hessian_products: mixed Hessian-vector products computed (a host int, no sync).
        finite: whether both players' gradients and steps are finite.

    Built by :meth:`CompetitiveOptimizer.backward` from ``players`` (the two names), the Nash
    ``step`` (:class:`~gameopt.competitive.nash.NashStep`), the flat unscaled gradients
    ``g_theta`` and ``g_phi``, ``products`` and ``finite``.
    """

    def __init__(self, players: tuple[str, ...], step: NashStep, g_theta: Tensor, g_phi: Tensor,
                 products: int, finite: Tensor) -> None:
        self.cg_iterations = step.iterations
        self.cg_residual = step.residual
        self.cg_converged = step.converged
        self.grad_sq_norm = {players[0]: g_theta.square().sum(), players[1]: g_phi.square().sum()}
        self.hessian_products = products
        self.finite = finite


@dataclasses.dataclass
class CompetitiveState(SharedState):
    """:class:`SharedState` plus CGD's settings and the last backward's records."""

    adaptive: bool = False
    tol: float = 0.1
    max_iter: int = 10
    check_every: int | str | None = "auto"
    warm_start: bool = False
    stats: CompetitiveStats | None = None
    #: optimiser state the last backward computed, kept only if the step moves the parameters
    pending: dict[Tensor, dict[str, Tensor]] | None = None
    graph_checked: bool = False
    scale_checked: bool = False


class CompetitiveOptimizer(GameOptimizer):
    """Competitive gradient descent (CGD) and, with ``adaptive=True``, ACGD.

    A two-player zero-sum game: ``f = gen_loss = -disc_loss``; the generator (theta)
    minimises f, the discriminator (phi) maximises it (minimises ``disc_loss``). Each
    step is the Nash equilibrium of the local bilinear approximation of the game, each
    player regularised by its own step sizes ``eta``::

        d_theta = -eta_t (I + eta_t D_tp eta_p D_pt)^-1 (grad_theta f + D_tp eta_p grad_phi f)
        d_phi   =  eta_p (grad_phi f + D_pt d_theta)

    (``D_tp = d^2 f / dtheta dphi``; with one scalar ``eta`` this is methods.md section 5).
    The system is solved by conjugate gradient on mixed Hessian-vector products
    (double backward through the first gradient's graph), optionally warm-started from
    the previous step's solution (optimiser state, checkpointed). Cost per step: one
    backward with ``create_graph=True`` and ``1 + 2k`` Hessian-vector products for
    ``k`` CG iterations (``2 + 2k`` with the warm start).

    Step sizes: CGD uses each param group's ``lr`` (``eta = lr``). ACGD, as the cgds
    package, uses ``eta = lr * sqrt(1 - beta^t) / (sqrt(v) + eps)`` per coordinate, ``v``
    the moving average of ``(grad f)^2`` with the group's ``beta``.

    There is no ``base_optimizer``: the step sizes are part of the Nash system, so no
    torch optimiser's rule can be applied afterwards. ``backward`` writes the
    *competitive gradient* ``p.grad = -step / lr`` and the built-in :class:`NashUpdate`
    applies ``p -= lr * p.grad``. Param groups carry ``lr`` (and ``beta``, ``eps`` for
    ACGD) per player and group; schedulers change ``lr`` as usual (it is read in
    ``backward``). A group with ``lr = 0`` does not move and gets ``p.grad = 0``.

    Usage::

        opt = CompetitiveOptimizer(G.parameters(), D.parameters(), lr=1e-4, adaptive=True)
        opt.zero_grad()
        d_loss = F.softplus(-D(x)).mean() + F.softplus(D(G(z))).mean()
        opt.backward(-d_loss, d_loss)     # or opt.backward(f) with the one objective f
        opt.step()

    or ``opt.step(closure)`` with ``closure()`` returning ``(gen_loss, disc_loss)``, f, or
    None after calling ``opt.backward`` itself.

    Args:
        gen_params, disc_params: the players' parameters (tensors or param-group dicts).
        lr: step size, the default of every group's ``"lr"`` (> 0).
        adaptive: ACGD's per-coordinate step sizes instead of ``lr``.
        beta: ACGD's decay of the squared-gradient average, per group (in [0, 1)); the
            cgds package's default 0.99.
        eps: ACGD's denominator term, per group (> 0); cgds' default 1e-5. ``eta`` reaches
            ``lr / eps`` where the gradient vanishes, and the coupling term is not
            normalised, so Adam's 1e-8 makes steps and CG iterations blow up there.
        tol: CG stops when ``||r|| <= tol * min(||u||, ||c||)`` (in (0, 1)), which bounds
            each player's relative step error (in its step-size-scaled norm) by
            ``tol / (1 - tol)`` (see ``gameopt.competitive.nash``). The default 0.1 (each step
            within about 11%) took 1 iteration for CGD and about 2 for ACGD per step on the
            DCGAN-like players (README); lower it for exact solves (the tests use 1e-13 in
            float64).
        max_iter: CG budget per step (>= 1); a solve that hits it is used as it is and
            reported in ``stats.cg_converged``.
        check_every: the host reads CG's stopping flag every ``check_every`` iterations
            (one sync each). Between reads a device-side mask freezes a converged solve,
            so a larger value trades wasted products for fewer syncs (on a GPU); 1 never
            wastes a product; None never reads it (all ``max_iter`` iterations run, no
            sync). The default ``"auto"`` is 1 on the CPU (a read is free there) and None
            on other devices, so a CUDA step synchronises once (the ``nonfinite`` check).
        warm_start: start CG from the previous step's solution instead of 0, at one extra
            product per step. Off by default: on the games measured (bilinear, quadratic,
            the MLP and DCGAN-like GANs) consecutive systems differ about as much as they
            are ill-conditioned (a CGD step rotates strongly coupled directions by up to
            90 degrees), so it saved at most the one product it costs (README).
        distributed: data parallel under torch.distributed: the gradient and every
            Hessian-vector product are averaged over the ranks (one all-reduce each),
            which equals one process on the full batch.
        process_group: the group to reduce over (default: the world).
        nonfinite: ``"skip"``, ``"raise"`` or ``"ignore"`` a NaN/Inf step (see GameOptimizer).
        players: ``{name: params}`` with exactly two players (minimiser first) instead of
            ``gen_params``/``disc_params``.

    Raises:
        GameInputError: bad hyper-parameters, a number of players other than two,
            parameters on several devices or of complex dtype; in ``backward``, losses
            that are not ``disc_loss = -gen_loss`` (see :meth:`backward`).
    """

    _shared_type = CompetitiveState
    adaptive = shared("ACGD's per-coordinate step sizes (True) or CGD's lr (False); fixed at construction.")
    tol = shared("CG's relative residual tolerance (see ``gameopt.competitive.nash``).")
    max_iter = shared("CG's iteration budget per step.")
    check_every = shared("CG iterations between host reads of the stopping flag ('auto': 1 on the CPU, never elsewhere; None: never).")
    warm_start = shared("Whether CG starts from the previous step's solution.")
    stats = shared("Statistics of the last ``backward`` (:class:`CompetitiveStats`; None before the first).")

    def __init__(
        self,
        gen_params: ParamsLike | None = None,
        disc_params: ParamsLike | None = None,
        lr: float = 1e-3,
        *,
        adaptive: bool = False,
        beta: float = 0.99,
        eps: float = 1e-5,
        tol: float = 0.1,
        max_iter: int = 10,
        check_every: int | str | None = "auto",
        warm_start: bool = False,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "skip",
        players: Mapping[str, ParamsLike] | None = None,
    ) -> None:
        players = game_players(gen_params, disc_params, players)
        if len(players) != 2:
            raise GameInputError(
                f"CompetitiveOptimizer is defined for two-player zero-sum games; got {len(players)} "
                f"players {list(players)}. CGD's Nash step of the local bilinear game has no "
                "N-player form here: use ConsensusOptimizer or SimultaneousOptimizer for N players"
            )
        _check_number(lr, "lr", low=0.0, low_open=True)
        if adaptive:
            _check_number(beta, "beta", low=0.0, high=1.0)
            _check_number(eps, "eps", low=0.0, low_open=True)
        _check_number(tol, "tol", low=0.0, high=1.0, low_open=True)
        _check_count(max_iter, "max_iter")
        _check_every(check_every, "check_every")
        self._group_options = {"beta": float(beta), "eps": float(eps)} if adaptive else {}
        super().__init__(NashUpdate, players, nonfinite=nonfinite, distributed=distributed,
                         process_group=process_group, lr=float(lr))
        settings = self._shared
        settings.adaptive, settings.tol, settings.max_iter = bool(adaptive), float(tol), int(max_iter)
        settings.check_every, settings.warm_start = check_every, bool(warm_start)
        self._check_groups()
        params = [p for g in self.param_groups for p in g["params"]]
        if len({p.device for p in params}) > 1:
            raise GameInputError(
                "CompetitiveOptimizer needs every parameter on one device (the CG vectors are "
                f"flat); got {sorted({str(p.device) for p in params})}"
            )
        if any(not p.dtype.is_floating_point for p in params):
            raise GameInputError("CompetitiveOptimizer supports real floating-point parameters only")

    def _check_period(self, device: torch.device) -> int | None:
        """CG iterations between host reads on ``device`` (None: never read)."""
        if self.check_every == "auto":
            return 1 if device.type == "cpu" else None
        return self.check_every

    @property
    def _step_sizes(self) -> ConstantStepSizes | AdaptiveStepSizes:
        return AdaptiveStepSizes() if self.adaptive else ConstantStepSizes()

    # --- validation ------------------------------------------------------------------------
    def _check_groups(self) -> None:
        for group in self.param_groups:
            who = f"a '{group['player']}' param group"
            _check_number(group["lr"], f"lr of {who}", low=0.0)
            if self.adaptive:
                _check_number(group["beta"], f"beta of {who}", low=0.0, high=1.0)
                _check_number(group["eps"], f"eps of {who}", low=0.0, low_open=True)

    def _objective(self, gen_loss: Any, disc_loss: Any) -> Tensor:
        names = self._loss_names()
        if disc_loss is None:
            return check_loss(gen_loss, self.players[0], "f", per_example=False)
        gen_loss = check_loss(gen_loss, self.players[0], names[0], per_example=False)
        disc_loss = check_loss(disc_loss, self.players[1], names[1], per_example=False)
        if negated_in_graph(gen_loss, disc_loss):
            return gen_loss
        zero_sum, total = negated_in_value(gen_loss, disc_loss)
        if not zero_sum:
            raise GameInputError(
                f"CompetitiveOptimizer needs a zero-sum game, {names[1]} = -{names[0]}, but "
                f"{names[0]} + {names[1]} = {total:.6g}. Pass disc_loss = -gen_loss, or the one "
                f"objective f that '{self.players[0]}' minimises and '{self.players[1]}' maximises: "
                "opt.backward(f). For a non-zero-sum game (e.g. the non-saturating GAN loss) use "
                "ConsensusOptimizer or SimultaneousOptimizer"
            )
        return gen_loss

    def _loss_names(self) -> list[str]:
        if self.players == ("generator", "discriminator"):
            return ["gen_loss", "disc_loss"]
        return [f"loss of player '{p}'" for p in self.players]

    # --- the step ------------------------------------------------------------------------
    @through_wrappers
    def backward(self, gen_loss: Tensor, disc_loss: Tensor | None = None, *, scaler: Any = None
                 ) -> CompetitiveStats:
        """Solve the Nash step and write the competitive gradient ``-step / lr`` into ``p.grad``.

        Takes ``(gen_loss, disc_loss)`` with ``disc_loss = -gen_loss``, or the one
        objective ``f`` that the first player minimises and the second maximises; only
        ``gen_loss`` is differentiated. The zero-sum check is free when one loss is
        computed as the negation of the other (``disc_loss = -gen_loss``, also after
        ``GradScaler.scale``); otherwise it compares the values (one host sync): they must
        cancel up to rounding, or :class:`GameInputError` is raised.

        ``p.grad`` is overwritten, not accumulated: CGD is not linear in the gradient, so
        accumulate the loss over micro-batches instead. ``scaler``: the
        ``torch.amp.GradScaler`` whose ``scale()`` the losses went through; gradients and
        products are unscaled for the solve and ``p.grad`` is scaled back, so
        ``scaler.step(opt)`` works as usual. Without it the Nash system is solved for
        ``s f`` (a different step; gameopt warns once when a loss looks scaled). Nothing is
        written if a check fails; optimiser state (moments, warm start) changes only when
        :meth:`step` moves the parameters.
        """
        f = self._objective(gen_loss, disc_loss)
        scale = _scaler_scale(scaler)
        if scale is None and not self._shared.scale_checked:
            self._shared.scale_checked = True
            _warn_scaled_loss(f)
        self._check_groups()
        with torch.enable_grad():
            self._shared.stats = self._backward(f, scale)
        return self._shared.stats

    def _backward(self, f: Tensor, scale: Tensor | None) -> CompetitiveStats:
        player_t = [(p, g) for g in self.param_groups if g["player"] == self.players[0] for p in g["params"]]
        player_p = [(p, g) for g in self.param_groups if g["player"] == self.players[1] for p in g["params"]]
        theta, phi = [p for p, _ in player_t], [p for p, _ in player_p]
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in theta + phi) else torch.float32
        with _explain_double_backward():
            grads = torch.autograd.grad(f, theta + phi, create_graph=True, allow_unused=True)
        grad_t, grad_p = grads[: len(theta)], grads[len(theta):]
        self._check_gradients(grad_t, grad_p)
        reduce = None
        if self.distributed:
            def reduce(t: Tensor) -> Tensor:
                return all_reduce_mean([t], self.process_group)[0]
        g = flatten([None if t is None else t.detach() for t in grads], theta + phi, dtype)
        if scale is not None:
            g.div_(scale)
        if reduce is not None:
            g = reduce(g)
        n_theta = sum(p.numel() for p in theta)
        g_t, g_p = g[:n_theta], g[n_theta:]
        eta_t, pending = self._step_sizes(player_t, g_t, self.state)
        eta_p, pending_p = self._step_sizes(player_p, g_p, self.state)
        pending.update(pending_p)
        hessian = MixedHessian(grad_t, grad_p, theta, phi, dtype, scale, reduce)
        with _explain_double_backward():
            step = solve_nash_step(hessian, g_t, g_p, eta_t, eta_p, self._warm_start(theta, dtype),
                                   self.tol, self.max_iter, self._check_period(g.device))
        self._shared.graph_checked = True
        products = hessian.products
        del grads, grad_t, grad_p, hessian  # free the first gradient's graph
        if self.warm_start:
            for p, u in zip(theta, unflatten(step.solution, theta)):
                pending.setdefault(p, {})["cg_solution"] = u.to(p.dtype)
        finite = torch.isfinite(g).all() & torch.isfinite(step.step_theta).all() & torch.isfinite(step.step_phi).all()
        self._write_grads(player_t, step.step_theta, scale, finite)
        self._write_grads(player_p, step.step_phi, scale, finite)
        self._shared.pending = pending
        return CompetitiveStats(self.players, step, g_t, g_p, products, finite)

    def _check_gradients(self, grad_t: Sequence[Tensor | None], grad_p: Sequence[Tensor | None]) -> None:
        for player, gs in zip(self.players, (grad_t, grad_p)):
            if all(t is None for t in gs):
                raise GameInputError(
                    f"the objective does not depend on any parameter of player '{player}'; "
                    "check that nothing is detached (D(G(z)), not D(G(z).detach()))"
                )
            if any(t is not None and t.layout != torch.strided for t in gs):
                raise GameInputError(
                    f"player '{player}' produced a sparse gradient; gameopt needs dense gradients: "
                    "build embeddings with sparse=False"
                )
        if not self._shared.graph_checked:
            outs = [t for t in list(grad_t) + list(grad_p) if t is not None and t.requires_grad]
            culprit = find_once_differentiable(outs) if outs else None
            if culprit is not None:
                with _explain_double_backward():
                    raise RuntimeError(
                        f"trying to differentiate twice a function that was marked with "
                        f"@once_differentiable ({culprit}): its second derivatives would be silently dropped"
                    )

    def _warm_start(self, theta: list[Tensor], dtype: torch.dtype) -> Tensor | None:
        if not self.warm_start:
            return None
        saved = [self.state[p].get("cg_solution") if p in self.state else None for p in theta]
        if all(u is None for u in saved):
            return None
        return flatten(saved, theta, dtype)

    def _write_grads(self, player: list[tuple[Tensor, Mapping[str, Any]]], step: Tensor,
                     scale: Tensor | None, finite: Tensor) -> None:
        """``p.grad = -step / lr`` (0 where lr is 0); all NaN when the gradient or a step is not finite."""
        params = [p for p, _ in player]
        lr = per_param_vector([float(g["lr"]) for _, g in player], params, step)
        grad = torch.where(lr > 0, step / lr, torch.zeros_like(step)).neg_()
        # a solve stopped by a NaN leaves u = 0 and theta's step finite: mark it too
        grad = torch.where(finite, grad, torch.full_like(grad, math.nan))
        if scale is not None:
            grad.mul_(scale)
        for p, t in zip(params, unflatten(grad, params)):
            p.grad = t if t.dtype == p.dtype else t.to(p.dtype)

    def step(self, closure: Callable[[], Tensor | Losses | None] | None = None) -> Tensor | Losses | None:  # type: ignore[override]
        """Apply the competitive gradients (``p -= lr * p.grad``) and keep the new state.

        ``closure`` (optional, evaluated with gradients enabled) returns
        ``(gen_loss, disc_loss)`` or f, whose step :meth:`backward` then computes; or None
        when it called :meth:`backward` itself. The ``nonfinite`` policy checks exactly what
        is applied (:meth:`GameOptimizer._apply_base_step`); a skipped step leaves
        parameters and state (moments, warm start) untouched.

        Returns:
            The closure's losses (None without a closure or when it returned None).

        Raises:
            RuntimeError: no step was solved (no :meth:`backward` since the last step).
            GameInputError: the closure returned something else.
            FloatingPointError: with ``nonfinite="raise"``, on a NaN/Inf.
        """
        losses = None
        if closure is not None:
            with torch.enable_grad():
                losses = closure()
            if isinstance(losses, Tensor):
                self.backward(losses)
            elif isinstance(losses, Sequence) and not isinstance(losses, (str, bytes)) and len(losses) == 2:
                self.backward(*losses)
            elif losses is not None:
                raise GameInputError(
                    "the closure must return (gen_loss, disc_loss) with disc_loss = -gen_loss, "
                    "the one objective f, or None when it called opt.backward(...) itself; got "
                    f"{type(losses).__name__}"
                )
        pending = self._shared.pending
        if pending is None:
            raise RuntimeError(
                "CompetitiveOptimizer.step() needs the step solved first: call "
                "opt.backward(gen_loss, disc_loss) before opt.step(), or pass a closure"
            )
        self._shared.pending = None
        if self._apply_base_step():
            for p, new in pending.items():
                self.state[p].update(new)
        return detached(losses)  # type: ignore[return-value]

    # --- statistics and checkpoints ------------------------------------------------------
    def monitor_stats(self) -> dict[str, Any]:
        """CG iterations and residual, ``||grad f||^2`` per player, lrs, skipped steps (tensors)."""
        out = super().monitor_stats()
        stats = self.stats
        if stats is not None:
            out["cg_iterations"] = stats.cg_iterations
            out["cg_residual"] = stats.cg_residual
            for player, value in stats.grad_sq_norm.items():
                out[f"grad_sq_norm/{player}"] = value
        return out

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra.update(adaptive=self.adaptive, tol=self.tol, max_iter=self.max_iter,
                     check_every=self.check_every, warm_start=self.warm_start)
        return extra

    def _check_extra_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        settings = super()._check_extra_state(extra)
        adaptive = extra.get("adaptive", self.adaptive)
        if adaptive is not self.adaptive:
            raise GameInputError(
                f"the checkpoint was written with adaptive={adaptive!r}, this optimiser has "
                f"adaptive={self.adaptive}; CGD and ACGD keep different state"
            )
        tol = extra.get("tol", self.tol)
        _check_number(tol, "the checkpoint's 'tol'", low=0.0, high=1.0, low_open=True)
        _check_count(extra.get("max_iter", self.max_iter), "the checkpoint's 'max_iter'")
        _check_every(extra.get("check_every", self.check_every), "the checkpoint's 'check_every'")
        warm = extra.get("warm_start", self.warm_start)
        if not isinstance(warm, bool):
            raise GameInputError(f"the checkpoint's 'warm_start' must be True or False, got {warm!r}")
        settings.update(tol=float(tol), max_iter=extra.get("max_iter", self.max_iter),
                        check_every=extra.get("check_every", self.check_every), warm_start=warm)
        return settings

    def _check_group(self, index: int, group: dict[str, Any]) -> None:
        who = f"the checkpoint's param group {index}"
        _check_number(group.get("lr"), f"lr of {who}", low=0.0)
        if self.adaptive:
            _check_number(group.get("beta"), f"beta of {who}", low=0.0, high=1.0)
            _check_number(group.get("eps"), f"eps of {who}", low=0.0, low_open=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`state_dict`: all of it, or nothing.

        On top of :meth:`GameOptimizer.load_state_dict`'s checks, every parameter's state
        must hold exactly what this optimiser keeps: ``step`` and ``exp_avg_sq`` (ACGD),
        ``cg_solution`` (first player, warm start), parameter-shaped where they should be.

        Raises:
            GameInputError: the checkpoint is not one of this optimiser (kind, players, groups,
                per-parameter state); nothing is loaded then.
        """
        _check_competitive_state(self, state_dict)
        super().load_state_dict(state_dict)


def _check_competitive_state(opt: CompetitiveOptimizer, sd: Any) -> None:
    """The per-parameter state of a CompetitiveOptimizer checkpoint (GameInputError naming the entry)."""
    if not isinstance(sd, Mapping) or not isinstance(sd.get("state"), Mapping) \
            or not isinstance(sd.get("param_groups"), Sequence):
        return  # the base checks name what is malformed
    extra = sd.get("gameopt")
    if not isinstance(extra, Mapping) or extra.get("adaptive", opt.adaptive) is not opt.adaptive:
        return  # the base checks name what is missing or mismatched
    warm = extra.get("warm_start", opt.warm_start)
    first = opt.players[0]
    groups = sd["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
        not isinstance(theirs, Mapping) or theirs.get("player") != ours["player"]
        or not isinstance(theirs.get("params"), Sequence) or len(theirs["params"]) != len(ours["params"])
        for ours, theirs in zip(opt.param_groups, groups)
    ):
        return  # the base checks name the mismatched group
    where_of: dict[Any, tuple[Tensor, str]] = {}
    for ours, theirs in zip(opt.param_groups, groups):
        for pid, p in zip(theirs["params"], ours["params"]):
            where_of[pid] = (p, ours["player"])
    for pid, entry in sd["state"].items():
        if pid not in where_of or not isinstance(entry, Mapping):
            continue  # the base checks report it
        p, player = where_of[pid]
        allowed = {"step", "exp_avg_sq"} if opt.adaptive else set()
        if warm and player == first:
            allowed.add("cg_solution")
        where = f"the state of parameter {pid} (player '{player}', shape {tuple(p.shape)})"
        if not set(entry) <= allowed or (opt.adaptive and not {"step", "exp_avg_sq"} <= set(entry)):
            raise GameInputError(
                f"{where} has entries {sorted(entry)}; CompetitiveOptimizer(adaptive={opt.adaptive}, "
                f"warm_start={warm}) keeps {sorted(allowed)} there: the checkpoint was written by "
                "another optimiser"
            )
        for name in ("exp_avg_sq", "cg_solution"):
            value = entry.get(name)
            if value is not None and (not isinstance(value, Tensor) or value.shape != p.shape):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise GameInputError(
                    f"{where}, '{name}' has shape {shape}, the parameter {tuple(p.shape)}: the "
                    "checkpoint belongs to another model"
                )


def _scaler_scale(scaler: Any) -> Tensor | None:
    """The GradScaler's scale as a tensor (reading it would sync), or None when unscaled."""
    if scaler is None:
        return None
    if not (hasattr(scaler, "get_scale") and hasattr(scaler, "unscale_")):
        raise GameInputError(
            f"scaler must be the torch.amp.GradScaler that scaled the losses, got {type(scaler).__name__}"
        )
    if not scaler.is_enabled():
        return None
    get_async = getattr(scaler, "_get_scale_async", None)
    return get_async() if get_async is not None else torch.tensor(float(scaler.get_scale()))


def _warn_scaled_loss(f: Tensor) -> None:
    """Warn when ``f`` looks like ``scaler.scale(loss)`` but ``backward`` got no ``scaler=`` (one sync)."""
    factor = grad_scaler_factor(f)
    if factor is not None:
        warnings.warn(
            f"gameopt: the loss looks scaled by a torch.amp.GradScaler (times {factor:g}) but backward() "
            f"got no scaler=: CGD's step is not linear in the loss, so the Nash step of {factor:g} f is "
            "solved instead of f's. Pass backward(..., scaler=scaler)",
            RuntimeWarning, stacklevel=4,
        )


@contextmanager
def _explain_double_backward() -> Iterator[None]:
    """Re-raise autograd's missing-second-derivative errors with the ways around them."""
    try:
        yield
    except RuntimeError as err:
        msg = str(err)
        low = msg.lower()
        compiled = any(m in low for m in _COMPILED_MARKERS)
        if not (compiled or any(m in low for m in _DOUBLE_BACKWARD_MARKERS)):
            raise
        if compiled:
            fix = ("The players were compiled with torch.compile, whose compiled backward (AOTAutograd) "
                   "cannot be differentiated again: pass the uncompiled modules")
        else:
            fix = ("Ways around it: for attention, run the forward pass inside "
                   "torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH); for cuDNN RNNs, "
                   "disable cuDNN (torch.backends.cudnn.flags(enabled=False)); for a custom "
                   "autograd.Function, make its backward differentiable (no @once_differentiable)")
        raise RuntimeError(
            "competitive gradient descent needs second derivatives (double backward), but an "
            f"operation in the loss does not support them:\n  {msg}\n{fix}; or train with a "
            "first-order method (SimultaneousOptimizer, AlternatingOptimizer)"
        ) from err


def _check_number(value: Any, what: str, low: float | None = None, high: float | None = None,
                  low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high
    if not ok:
        bounds = ("(" if low_open else "[") + f"{low}, {high if high is not None else 'inf'})"
        raise GameInputError(f"{what} must be a finite Python number in {bounds}, got {value!r}")


def _check_every(value: Any, what: str) -> None:
    if value is None or value == "auto":
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GameInputError(f"{what} must be 'auto', None or an integer >= 1, got {value!r}")


def _check_count(value: Any, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GameInputError(f"{what} must be an integer >= 1, got {value!r}")
