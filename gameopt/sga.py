"""Symplectic gradient adjustment (Balduzzi, Racaniere, Martens, Foerster, Tuyls & Graepel,
"The Mechanics of n-Player Differentiable Games", ICML 2018; Letcher et al., JMLR 2019).

The adjusted field is ``xi + lam * A^T xi``, where xi = v is the game's gradient field, J its
Jacobian and ``A = (J - J^T) / 2`` the antisymmetric (rotational) part of J. ``A^T xi =
(J^T xi - J xi) / 2`` needs one vector-Jacobian product (``J^T xi``, what consensus computes)
and one Jacobian-vector product (``J xi``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from .distributed import all_reduce_mean
from .errors import GameInputError
from .field import Closure, FieldOptimizer, FieldState, Losses
from .game_optimizer import shared
from .gradients import check_trainable, detached, explain_double_backward, find_once_differentiable, is_negation_of
from .players import ParamsLike, game_players
from .frameworks import through_wrappers

__all__ = ["SGAOptimizer", "SGAStats"]


class SGAStats:
    """Statistics of the last :meth:`SGAOptimizer.backward`, as tensors (reading them syncs).

    ``grad_sq_norm[player]`` is ``||xi_player||^2``; ``adjustment_norm`` is ``||A^T xi||``
    (before multiplying by lam); ``sign`` is the alignment's sign of lam (1.0 when
    ``align=False``). Built by :meth:`SGAOptimizer.backward`.

    Args:
        players: the players' names, in order.
        sq: per player, ``||xi_player||^2`` as a 0-d tensor.
        adj_norm: ``||A^T xi||``, 0-d.
        sign: the sign applied to lam, 0-d (+1.0 or -1.0).
    """

    def __init__(self, players: tuple[str, ...], sq: list[torch.Tensor], adj_norm: torch.Tensor,
                 sign: torch.Tensor) -> None:
        self.grad_sq_norm = dict(zip(players, sq))
        self.adjustment_norm = adj_norm
        self.sign = sign


@dataclasses.dataclass
class SGAState(FieldState):
    """:class:`FieldState` plus SGA's settings and the last backward's records."""

    align: bool = True
    align_eps: float = 0.1
    stats: SGAStats | None = None
    graph_checked: bool = False   # the one-time graph check ran


class SGAOptimizer(FieldOptimizer):
    """Symplectic gradient adjustment over any torch optimiser, for any number of players.

    Usage (each player minimises its own loss; zero-sum: ``disc_loss = -gen_loss``)::

        opt = SGAOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), lam=1.0, lr=2e-4)
        opt.zero_grad()
        opt.backward(gen_loss, disc_loss)   # p.grad += xi + sign * lam * A^T xi
        opt.step()

    or ``opt.step(closure)``. Do not detach the generated samples in the discriminator's loss
    (the adjustment needs how D's gradient depends on G; gameopt differentiates each loss only
    for its own player).

    Alignment (``align=True``, Balduzzi et al. 2018, Algorithm 1 and the authors' reference
    code): with ``H = 1/2 ||xi||^2``, ``grad H = J^T xi`` and d the number of parameters, the
    sign of lam is ``sign(<xi, grad H> <A^T xi, grad H> / d + align_eps)`` with ``align_eps =
    0.1``: lam is made negative only when the adjustment points against the descent direction
    of H while xi points along it (near a potential game's saddle), so SGA is attracted to
    stable fixed points and repelled from unstable ones. The sign is a device tensor: no host
    sync. ``align=False`` keeps lam's sign.

    Computation: each loss's gradient w.r.t. *every* player's parameters, with its graph
    (``rows[i][j] = d l_i / d z_j``; one backward pass per loss, one for a zero-sum pair);
    ``xi`` is the diagonal blocks. ``J^T xi`` is one backward pass of the diagonal blocks seeded
    with xi (what consensus computes), and row i of ``J xi`` is the gradient w.r.t. player i's
    parameters of ``<rows[i], xi>``: one pass per player, so three second-order passes for two
    players. SGA therefore needs second derivatives only, like consensus. The double-backward
    trick (``J xi = d/dw <J^T w, xi>`` through the graph of ``J^T w``, two passes) was 9% cheaper
    on the DCGAN-like pair (``benchmarks/sga_jvp_cost/sga_jvp_cost.py``, 1 thread; equal on the MLP) but
    differentiates to third order, which torch does not support for transposed convolutions with
    ``output_padding`` (the stacked-MNIST generators); torch.func's forward-over-reverse ``jvp``
    was 22% slower. All agree to rounding. An SGA step costs 5-6x a plain step on the DCGAN pair
    (consensus: 3x).

    Bilinear game (``l_G = x^T A y``, ``l_D = -l_G``, SGD with step eta, per singular value
    sigma): J is antisymmetric, so the antisymmetric part is J itself and ``A^T xi = J^T xi``;
    the step is ``z <- (I - eta (J + lam J^T J)) z`` (consensus with gamma = lam) and contracts
    each singular direction by ``sqrt((1 - eta lam sigma^2)^2 + eta^2 sigma^2)``. Alignment keeps
    lam > 0 there: ``<xi, J^T xi> = 0`` for an antisymmetric J, so the sign is ``sign(eps) = +1``.

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` subclass; ``base_kwargs`` go to it.
        gen_params, disc_params: the players' parameters (tensors or param-group dicts; a group
            may set its own ``"lam"``).
        lam: adjustment weight (finite, >= 0), the default of every group's ``"lam"``; 0 gives
            the plain simultaneous step.
        align: apply the alignment rule to lam's sign.
        align_eps: the alignment's threshold epsilon (paper: 0.1), finite and >= 0.
        players: ``{name: params}`` for any number of players.
        distributed: average xi, ``J^T xi`` and ``J xi`` over the ranks (two all-reduces);
            equals one process on the full batch.
        process_group: the torch.distributed group (default: the world).
        nonfinite: ``"skip"`` (default), ``"raise"`` or ``"ignore"`` (see :class:`GameOptimizer`).

    Raises:
        GameInputError: a negative, infinite or non-number lam / align_eps; bad players or losses.
        RuntimeError: an operation in the losses without double-backward support (with the fix).
    """

    _shared_type = SGAState
    align = shared("Whether the alignment rule sets lam's sign.")
    align_eps = shared("The alignment's threshold epsilon.")
    stats = shared("Statistics of the last ``backward`` (:class:`SGAStats`; None before the first).")

    def __init__(
        self,
        base_optimizer: type[Optimizer],
        gen_params: ParamsLike | None = None,
        disc_params: ParamsLike | None = None,
        lam: float = 1.0,
        align: bool = True,
        *,
        align_eps: float = 0.1,
        players: Mapping[str, ParamsLike] | None = None,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "skip",
        **base_kwargs: Any,
    ) -> None:
        players = game_players(gen_params, disc_params, players)
        _check_nonneg(lam, "lam")
        _check_nonneg(align_eps, "align_eps")
        self._group_options = {"lam": float(lam)}
        super().__init__(base_optimizer, players, nonfinite=nonfinite, distributed=distributed,
                         process_group=process_group, **base_kwargs)
        for group in self.param_groups:
            _check_nonneg(group["lam"], f"lam of a '{group['player']}' param group")
        self.align = bool(align)
        self.align_eps = float(align_eps)

    @through_wrappers
    def backward(self, *losses: torch.Tensor, scaler: Any = None) -> SGAStats:
        """Accumulate ``xi + sign * lam * A^T xi`` into ``p.grad``; one loss per player.

        ``scaler``: the ``torch.amp.GradScaler`` whose ``scale()`` the losses went through. The
        second-order terms are seeded with the unscaled xi, so ``p.grad`` is consistently
        scaled by s, and the alignment is computed on unscaled quantities.

        Returns:
            :class:`SGAStats` of this backward (also in ``opt.stats``).

        Raises:
            GameInputError: not one loss per player, a bad loss, or a group's ``lam`` negative,
                infinite or not a number.
            RuntimeError: an operation in the losses has no second derivative (with the fix).
        """
        checked = self._check_losses(losses)
        scale = _scaler_scale(scaler)
        for group in self.param_groups:
            _check_nonneg(group["lam"], f"lam of a '{group['player']}' param group")
        per_player = [self.player_params(p) for p in self.players]
        params = [p for ps in per_player for p in ps]
        rows = self._full_gradients(checked, per_player)
        if not self._shared.graph_checked:
            self._warn_isolated_losses(rows)
        # xi: each player's gradient of its own loss (the diagonal blocks), averaged over ranks
        own = [t for i, row in enumerate(rows) for t in row[i]]
        v: list[torch.Tensor | None] = [None if t is None else t.detach() for t in own]
        if self.distributed:
            v = list(all_reduce_mean([torch.zeros_like(p) if t is None else t for p, t in zip(params, v)],
                                     self.process_group))
        seeds = [None if t is None else (t / scale if scale != 1.0 else t) for t in v]   # unscaled xi
        seed_blocks, start = [], 0
        for ps in per_player:
            seed_blocks.append(seeds[start: start + len(ps)])
            start += len(ps)
        zeros = [torch.zeros_like(p) for p in params]
        jt_xi, j_xi = self._jacobian_products(rows, per_player, params, own, seeds, seed_blocks, zeros)
        if self.distributed:
            both = all_reduce_mean(jt_xi + j_xi, self.process_group)
            jt_xi, j_xi = both[: len(params)], both[len(params):]
        at_xi = torch._foreach_mul(torch._foreach_sub(jt_xi, j_xi), 0.5)   # A^T xi, scaled like xi
        vz = [z if t is None else t for z, t in zip(zeros, v)]
        sign = self._alignment(vz, jt_xi, at_xi, scale)
        self._shared.stats = self._stats(vz, at_xi, sign, scale)
        index = {id(p): i for i, p in enumerate(params)}
        finals: list[torch.Tensor | None] = list(v)
        for group in self.param_groups:
            lam = float(group["lam"])
            if lam == 0:
                continue
            for p in group["params"]:
                i = index[id(p)]
                adj = at_xi[i] * sign.to(at_xi[i].dtype) * lam
                finals[i] = adj if finals[i] is None else finals[i] + adj
        self._accumulate(params, finals)
        return self._shared.stats

    def _warn_isolated_losses(self, rows: list[list[list[torch.Tensor | None]]]) -> None:
        """Warn (once) when a loss reaches no other player's parameters, e.g. ``D(fake.detach())``."""
        names = self._loss_names()
        for i, row in enumerate(rows):
            if len(rows) > 1 and all(t is None for j, blk in enumerate(row) if j != i for t in blk):
                warnings.warn(
                    f"gameopt: {names[i]} does not depend on the other players' parameters, so the "
                    f"adjustment misses how player '{self.players[i]}''s gradient changes with them. If "
                    "this is a GAN, do not detach the generated samples in the discriminator's loss "
                    "(D(fake), not D(fake.detach())): gameopt differentiates each loss only with "
                    "respect to its own player, so detaching is not needed",
                    RuntimeWarning, stacklevel=4,
                )

    def _full_gradients(
        self, losses: tuple[torch.Tensor, ...], per_player: list[list[torch.Tensor]]
    ) -> list[list[list[torch.Tensor | None]]]:
        """``rows[i][j]``: the gradient of player i's loss w.r.t. player j's parameters, with graph.

        One backward pass per loss (one in all for a two-player zero-sum game). The off-diagonal
        blocks are what the Jacobian-vector product J xi needs beyond consensus's v.
        """
        flat = [p for ps in per_player for p in ps]
        names = self._loss_names()
        check_trainable(per_player, self.players)
        with torch.enable_grad(), explain_double_backward(True):
            if len(losses) == 2 and (is_negation_of(losses[1], losses[0]) or is_negation_of(losses[0], losses[1])):
                first = 0 if is_negation_of(losses[1], losses[0]) else 1
                g = list(torch.autograd.grad(losses[first], flat, create_graph=True, allow_unused=True))
                neg = [None if t is None else -t for t in g]
                full = [g, neg] if first == 0 else [neg, g]
            else:
                full = [list(torch.autograd.grad(loss, flat, create_graph=True, allow_unused=True))
                        for loss in losses]
        rows: list[list[list[torch.Tensor | None]]] = []
        for i, g in enumerate(full):
            blocks, start = [], 0
            for ps in per_player:
                blocks.append(g[start: start + len(ps)])
                start += len(ps)
            if all(t is None for t in blocks[i]):
                raise GameInputError(
                    f"{names[i]} does not depend on any parameter of player '{self.players[i]}'; each "
                    "player's loss must be computed from that player's parameters (check that the "
                    "players are not swapped and that nothing is detached)"
                )
            if any(t is not None and t.layout != torch.strided for t in g):
                raise GameInputError(
                    f"player '{self.players[i]}' produced a sparse gradient; gameopt needs dense "
                    "gradients: build embeddings with sparse=False"
                )
            rows.append(blocks)
        return rows

    def _jacobian_products(
        self, rows: list[list[list[torch.Tensor | None]]], per_player: list[list[torch.Tensor]],
        params: list[torch.Tensor], own: list[torch.Tensor | None], seeds: list[torch.Tensor | None],
        seed_blocks: list[list[torch.Tensor | None]], zeros: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``J^T xi`` (one backward pass of the diagonal blocks seeded with xi) and ``J xi`` (row i:
        the gradient w.r.t. player i's parameters of ``<grad l_i, xi>``, one pass per player)."""
        def live(pairs):
            return [(t, s) for t, s in pairs if t is not None and s is not None and t.requires_grad]

        transpose = live(zip(own, seeds))
        row_outs = [live((t, s) for blk, sb in zip(row, seed_blocks) for t, s in zip(blk, sb)) for row in rows]
        if not self._shared.graph_checked:
            culprit = find_once_differentiable([t for t, _ in transpose] + [t for r in row_outs for t, _ in r])
            if culprit is not None:
                raise RuntimeError(
                    f"SGA differentiates the gradients again, but a function marked "
                    f"@once_differentiable ({culprit}) would silently drop its second derivatives"
                )
        jt_xi, j_xi = list(zeros), list(zeros)
        calls = [(transpose, params, None)] + [(r, ps, i) for i, (r, ps) in enumerate(zip(row_outs, per_player))]
        calls = [c for c in calls if c[0]]
        offsets = [0]
        for ps in per_player:
            offsets.append(offsets[-1] + len(ps))
        with torch.enable_grad(), explain_double_backward(True):
            for n, (pairs, inputs, row) in enumerate(calls):
                got = torch.autograd.grad([t for t, _ in pairs], inputs, grad_outputs=[s for _, s in pairs],
                                          retain_graph=n < len(calls) - 1, allow_unused=True)
                if row is None:
                    jt_xi = [z if t is None else t for z, t in zip(zeros, got)]
                else:
                    for k, t in enumerate(got):
                        if t is not None:
                            j_xi[offsets[row] + k] = t
        self._shared.graph_checked = True
        return jt_xi, j_xi

    def _stats(self, xi: list[torch.Tensor], at_xi: list[torch.Tensor], sign: torch.Tensor,
               scale: float) -> SGAStats:
        with torch.no_grad():
            norms = torch._foreach_norm(xi + list(at_xi))
            norms = torch.stack([t.float() for t in norms]) / scale
            sq = norms[: len(xi)].square()
            per_player, start = [], 0
            for player in self.players:
                n = len(self.player_params(player))
                per_player.append(sq[start: start + n].sum())
                start += n
            adj_norm = torch.linalg.vector_norm(norms[len(xi):])
        return SGAStats(self.players, per_player, adj_norm, sign)

    def _alignment(self, xi: list[torch.Tensor], jt_xi: list[torch.Tensor], at_xi: list[torch.Tensor],
                   scale: float) -> torch.Tensor:
        """The sign of lam (a 0-dim tensor): +1, or the alignment rule's sign when ``align``."""
        device = xi[0].device
        if not self.align:
            return torch.ones((), device=device)
        dot_xi = _dot(xi, jt_xi)
        dot_adj = _dot(at_xi, jt_xi)
        d = sum(t.numel() for t in xi)
        # every factor carries the loss scale s: xi s, J^T xi s, A^T xi s
        value = dot_xi * dot_adj / (d * scale**4) + self.align_eps
        return torch.where(value >= 0, 1.0, -1.0).to(torch.float32)

    def step(self, closure: Closure | None = None) -> Losses | None:  # type: ignore[override]
        """Apply ``p.grad`` with the base optimiser (after recomputing it from ``closure``, if given).

        A closure returning None means the gradients are already in ``p.grad``.

        Args:
            closure: optional; returns one loss per player, or None.

        Returns:
            The closure's losses (None without a closure or when it returned None).

        Raises:
            GameInputError, RuntimeError: as :meth:`backward`, for the closure's losses.
        """
        losses = self._backward_from_closure(closure)
        self._apply_base_step()
        return detached(losses)

    def monitor_stats(self) -> dict[str, Any]:
        """``||xi_player||^2``, ``||A^T xi||``, the alignment sign, lrs and skipped steps (tensors)."""
        out = super().monitor_stats()
        if self.stats is not None:
            for player, value in self.stats.grad_sq_norm.items():
                out[f"grad_sq_norm/{player}"] = value
            out["adjustment_norm"] = self.stats.adjustment_norm
            out["align_sign"] = self.stats.sign
        return out

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra.update(align=self.align, align_eps=self.align_eps)
        return extra

    def _check_extra_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        settings = super()._check_extra_state(extra)
        align = extra.get("align", self.align)
        if not isinstance(align, bool):
            raise GameInputError(f"the checkpoint's 'align' must be True or False, got {align!r}")
        eps = extra.get("align_eps", self.align_eps)
        _check_nonneg(eps, "the checkpoint's 'align_eps'")
        settings.update(align=align, align_eps=float(eps))
        return settings

    def _check_group(self, index: int, group: dict[str, Any]) -> None:
        _check_nonneg(group.get("lam"), f"the checkpoint's lam of param group {index}")


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """<a, b> over lists of tensors, accumulated in float64 (one small reduction per tensor)."""
    return torch.stack([torch.vdot(x.reshape(-1).double(), y.reshape(-1).double()) for x, y in zip(a, b)]).sum()


def _check_nonneg(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise GameInputError(f"{what} must be a finite number >= 0, got {value!r}")


def _scaler_scale(scaler: Any) -> float:
    if scaler is None:
        return 1.0
    if not (hasattr(scaler, "get_scale") and hasattr(scaler, "unscale_")):
        raise GameInputError(
            f"scaler must be the torch.amp.GradScaler that scaled the losses, got {type(scaler).__name__}"
        )
    scale = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
    if not (math.isfinite(scale) and scale > 0):
        raise GameInputError(f"the GradScaler's scale must be finite and > 0, got {scale}")
    return scale
