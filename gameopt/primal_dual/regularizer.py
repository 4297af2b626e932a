"""PrimalDualRegularizer: the generator term of Algorithm 1 (Chen, Wang & Ge, ICLR 2018)."""

from __future__ import annotations

import math
from typing import Any, Callable, Union

import torch
from torch import Tensor, nn

from ..distributed import check_distributed, check_same_shapes, gather_rows
from ..errors import GameInputError
from .bandwidth import BandwidthSchedule, ConstantBandwidth, check_bandwidth
from .divergences import Divergence, as_divergence
from .kernel import compute_dtype, primal_dual_term

__all__ = ["PrimalDualRegularizer"]

BandwidthLike = Union[float, BandwidthSchedule, Callable[[int], float]]


def _refresh_step_count(module: "PrimalDualRegularizer", incompatible_keys: Any) -> None:
    module._steps = int(module.num_steps)


class ScheduleStepper:
    """The post-step hook :meth:`PrimalDualRegularizer.attach` installs: one ``reg.step()`` per applied step.

    A small class rather than a lambda, so that whatever holds it can be pickled and
    deep-copied; a copied hook drives the copied regulariser (copied in the same call),
    never the original. A step the optimiser reports as skipped (``last_step_skipped``,
    gameopt's NaN/Inf policy) does not advance the schedule; gameopt optimisers also run
    post-step hooks only on steps that moved the parameters.
    """

    def __init__(self, regularizer: "PrimalDualRegularizer") -> None:
        self.regularizer = regularizer

    def __call__(self, optimizer: Any, args: Any = (), kwargs: Any = None) -> None:
        if getattr(optimizer, "last_step_skipped", False):
            return
        self.regularizer.step()

    def __repr__(self) -> str:
        return f"ScheduleStepper({type(self.regularizer).__name__})"


class PrimalDualRegularizer(nn.Module):
    """Primal-dual subgradient term added to the generator loss (eq. 13, second term).

    With data x_1..x_n, generated samples G(z_1)..G(z_m) and the discriminator's raw
    output s_i on x_i::

        p_hat(x_i)   = (1/m) sum_j exp(-||f(G(z_j)) - f(x_i)||^2 / sigma^2)
        p_tilde(x_i) = p_hat(x_i).detach() - alpha * f1(D(x_i))        (held fixed)
        term         = (1/n) sum_i (p_tilde(x_i) - p_hat(x_i))^2

    Minimising the term moves the generated density at each data point along the
    dual subgradient step -alpha * f1(D(x_i)) of the Lagrangian, so data points the
    generator misses (where the discriminator is confident) pull generated mass to
    them even when the discriminator is flat around the generated samples.

    Usage (one line added to the generator step)::

        reg = PrimalDualRegularizer("js", alpha=1.0, bandwidth=0.5)
        loss_g = reg.divergence.generator_loss(D(fake)) + reg(real, fake, D(real))
        loss_g.backward(); opt_g.step(); reg.step()

    Args:
        divergence: a Table 1 name (``kl``, ``reverse_kl``, ``pearson``, ``hellinger``,
            ``js``, ``wgan``, ``other``), a :class:`Divergence`, or a user pair
            ``(f0, f1)`` / ``(f0, f1, activation)`` of functions of D.
        alpha: dual step size (>= 0).
        bandwidth: kernel sigma, a positive float or a schedule ``t -> sigma``
            (see :mod:`gameopt.primal_dual.bandwidth`), t = number of ``step()`` calls.
        feature_map: optional fixed projection f applied to real and fake samples
            before the kernel (eq. 17), e.g. an encoder; gradients flow through it to
            ``fake`` (freeze its parameters yourself if it has any).
        chunk_size: block size of the pairwise kernel; batches larger than this are
            processed in chunk x chunk blocks so memory stays bounded.
        distributed: data parallel under ``torch.distributed``: each rank passes its own
            equal share of real and generated samples; the generated features are
            all-gathered (one all-gather of m x d per forward, its adjoint in backward),
            so the kernel density at each rank's data points uses every rank's samples.
            Each rank's term is then the mean over its own data points, and with the
            ranks' gradients averaged (``ConsensusOptimizer(distributed=True)`` or an
            all-reduce mean) the step equals one process on the full batch, double
            backward included. The value returned is the rank's own share.
        process_group: the group to gather over (default: the world).
        nonfinite: what a NaN or inf in ``real``, ``fake`` or ``d_real`` (or in the feature
            map's output) does. "propagate" (default): the returned value is NaN, as the
            gradient is, so the NaN shows in the loss and a gameopt optimiser's NaN/Inf
            policy (or a ``GradScaler``) skips the step; no host read. "raise": a
            :class:`~gameopt.GameInputError` naming the input (one host read per call; with
            ``distributed=True`` a NaN in one rank's ``real`` raises on that rank only).

    Gradients flow only to ``fake`` (and through ``feature_map`` applied to it);
    ``real`` and ``d_real`` are treated as constants.

    Precision: float16 / bfloat16 inputs are computed in float32 and the value is returned in
    float32 (as autocast does for losses); gradients reach ``fake`` in its own dtype. The
    bandwidth must be at least :func:`~gameopt.primal_dual.bandwidth.min_bandwidth` of the
    computation dtype (float32: 1.1e-19, float64: 1.5e-154), else a GameInputError.

    Raises:
        GameInputError: an unknown divergence, ``alpha`` not a finite number >= 0, a bandwidth
            that is not positive (at step 0 for a schedule) or not callable, a non-callable
            ``feature_map``, ``chunk_size`` not a positive int, a bad ``nonfinite``, or
            ``distributed=True`` without an initialised process group.
    """

    num_steps: Tensor

    def __init__(
        self,
        divergence: Union[str, Divergence, tuple] = "js",
        alpha: float = 1.0,
        bandwidth: BandwidthLike = 0.5,
        feature_map: Callable[[Tensor], Tensor] | None = None,
        chunk_size: int = 2048,
        *,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "propagate",
    ) -> None:
        super().__init__()
        if nonfinite not in ("propagate", "raise"):
            raise GameInputError(f"nonfinite must be 'propagate' or 'raise', got {nonfinite!r}")
        self.nonfinite = nonfinite
        check_distributed("PrimalDualRegularizer", distributed)
        self.distributed = bool(distributed)
        self.process_group = process_group
        self.divergence = as_divergence(divergence)
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise GameInputError(f"alpha (dual step size) must be a number, got {alpha!r}; e.g. alpha=1.0.") from None
        if not (math.isfinite(alpha) and alpha >= 0.0):
            raise GameInputError(f"alpha (dual step size) must be a finite float >= 0, got {alpha!r}; e.g. alpha=1.0.")
        self.alpha = alpha
        if isinstance(bandwidth, (int, float)) and not isinstance(bandwidth, bool):
            bandwidth = ConstantBandwidth(check_bandwidth(bandwidth))
        elif not callable(bandwidth):
            raise GameInputError(
                f"bandwidth must be a positive float or a schedule callable t -> sigma, got {bandwidth!r}."
            )
        else:
            check_bandwidth(bandwidth(0), "bandwidth schedule at step 0")
        self.bandwidth = bandwidth
        if feature_map is not None and not callable(feature_map):
            raise GameInputError(f"feature_map must be callable (a module or function), got {feature_map!r}.")
        self.feature_map = feature_map
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise GameInputError(f"chunk_size must be a positive int, got {chunk_size!r}.")
        self.chunk_size = chunk_size
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        # The count the schedule reads, as a Python int: reading the buffer would be a
        # host sync on every forward when the module lives on a GPU.
        self._steps = 0
        self.register_load_state_dict_post_hook(_refresh_step_count)

    # -- bandwidth schedule ---------------------------------------------------
    @property
    def current_bandwidth(self) -> float:
        """sigma at the current iteration count (validated positive)."""
        t = self._steps
        return check_bandwidth(self.bandwidth(t), f"bandwidth schedule at step {t}")

    def step(self) -> None:
        """Advance the bandwidth schedule by one generator iteration. Call once per generator step."""
        self._steps += 1
        self.num_steps.add_(1)

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call :meth:`step` automatically after every applied ``optimizer.step()`` (the generator's).

        The hook is a :class:`ScheduleStepper`: it skips steps the optimiser reports as skipped
        (``last_step_skipped``), and it pickles and deep-copies wherever it is held. Optimisers,
        torch's and gameopt's alike, do not copy their hooks (a copy keeps defaults, state and
        groups), so a copied optimiser never drives the original regulariser: attach the copy
        to the copied regulariser again.

        Returns the hook handle; ``handle.remove()`` detaches it.
        """
        return optimizer.register_step_post_hook(ScheduleStepper(self))

    def get_extra_state(self) -> Any:
        """The bandwidth schedule's parameters for the state dict (``{}`` for a plain function)."""
        if isinstance(self.bandwidth, BandwidthSchedule):
            return {"bandwidth": self.bandwidth.state_dict(), "bandwidth_type": type(self.bandwidth).__name__}
        return {}

    def set_extra_state(self, state: Any) -> None:
        """Load the schedule's parameters from :meth:`get_extra_state`'s ``state`` (already validated)."""
        # validated in _load_from_state_dict before anything was loaded
        if isinstance(state, dict) and "bandwidth" in state and isinstance(self.bandwidth, BandwidthSchedule):
            self.bandwidth.load_state_dict(state["bandwidth"])

    # -- checkpoints: validate everything, then load ------------------------------
    def _check_checkpoint(self, state_dict: dict[str, Any], prefix: str) -> None:
        """GameInputError unless this module's entries of ``state_dict`` can be loaded as a whole."""
        steps = self._steps
        key = prefix + "num_steps"
        if key in state_dict:
            t = state_dict[key]
            if not (isinstance(t, Tensor) and t.numel() == 1 and not t.is_floating_point()
                    and not t.is_complex() and t.dtype != torch.bool):
                raise GameInputError(
                    f"checkpoint entry {key!r} must be a one-element integer tensor (the generator step count), "
                    f"got {t!r}"
                )
            steps = int(t)
            if steps < 0:
                raise GameInputError(f"checkpoint entry {key!r} must be >= 0 (a step count), got {steps}")
        key = prefix + "_extra_state"
        schedule = self.bandwidth
        if key in state_dict:
            extra = state_dict[key]
            if not isinstance(extra, dict):
                raise GameInputError(f"checkpoint entry {key!r} must be a dict, got {type(extra).__name__}")
            mine = type(self.bandwidth).__name__
            saved = extra.get("bandwidth_type")
            if isinstance(self.bandwidth, BandwidthSchedule):
                if "bandwidth" not in extra:
                    raise GameInputError(
                        f"this regulariser's bandwidth is a {mine}, but the checkpoint holds no schedule state "
                        "(it was saved with a plain callable bandwidth); build the regulariser as it was saved"
                    )
                if saved is not None and saved != mine:
                    raise GameInputError(
                        f"the checkpoint's bandwidth schedule is a {saved}, this regulariser's is a {mine}; "
                        "build the regulariser with the schedule type it was saved with"
                    )
                schedule = self.bandwidth.validated_copy(extra["bandwidth"])
            elif "bandwidth" in extra:
                raise GameInputError(
                    f"the checkpoint holds a {saved or 'BandwidthSchedule'} state, but this regulariser's bandwidth "
                    "is a plain callable that cannot load it; build the regulariser with that schedule"
                )
        try:
            check_bandwidth(schedule(steps), f"bandwidth schedule at the checkpoint's step {steps}")
        except ValueError as e:
            raise GameInputError(str(e)) from None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        self._check_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a checkpoint written by :meth:`state_dict`, all or nothing.

        Everything is checked before anything is loaded: the step count (an integer >= 0), the
        bandwidth schedule's type and parameters (lengths, signs, ranges), sigma at the saved
        step, and, for the feature map's buffers, keys and shapes.

        Args:
            state_dict: from :meth:`state_dict`.
            strict: require exactly this module's keys (default True, as ``nn.Module``).
            assign: as in ``nn.Module.load_state_dict`` (default False).

        Returns:
            ``nn.Module.load_state_dict``'s missing and unexpected keys.

        Raises:
            GameInputError: any of the above; the regulariser is then unchanged.
        """
        if not isinstance(state_dict, dict):
            raise GameInputError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        own = self.state_dict()
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise GameInputError(
                    f"checkpoint keys do not match this regulariser: missing {missing}, unexpected {unexpected}"
                )
        for key, value in own.items():
            if key in state_dict and isinstance(value, Tensor) and key != "num_steps":
                saved = state_dict[key]
                if not isinstance(saved, Tensor) or saved.shape != value.shape:
                    got = tuple(saved.shape) if isinstance(saved, Tensor) else type(saved).__name__
                    raise GameInputError(
                        f"checkpoint entry {key!r} has shape {got}, this regulariser's has {tuple(value.shape)}"
                    )
        self._check_checkpoint(state_dict, "")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- the term ---------------------------------------------------------------
    def _features(self, x: Tensor, which: str) -> Tensor:
        """(rows, features) of a batch, after the feature map; the map must keep one row per sample."""
        if self.feature_map is not None:
            f = self.feature_map(x)
            if not isinstance(f, Tensor) or f.dim() == 0 or f.shape[0] != x.shape[0]:
                got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise GameInputError(
                    f"feature_map {self.feature_map!r} changed the number of samples of {which}: "
                    f"{tuple(x.shape)} -> {got}. It must map each sample to its own feature vector "
                    "(n rows in, n rows out); a map that mixes or drops rows would be broadcast silently."
                )
            x = f
        if x.dim() == 1:
            return x.unsqueeze(1)
        return x.reshape(x.shape[0], -1)

    def forward(self, real: Tensor, fake: Tensor, d_real: Tensor) -> Tensor:
        """Regulariser value (scalar) for one generator step.

        Args:
            real: data batch (n, ...) ; a 1-D tensor is n scalar samples.
            fake: generated batch (m, ...) with the same trailing shape (after
                ``feature_map``); must carry the generator's graph.
            d_real: raw discriminator output on ``real``, shape (n,) or (n, 1).

        Returns:
            A 0-d tensor (float32 for half-precision input), to add to the generator's loss
            (the generator minimises it). NaN when an input is NaN/inf and ``nonfinite="propagate"``.

        Raises:
            GameInputError: an input that is not a tensor, an empty batch, ``d_real`` of the
                wrong shape, ``real`` and ``fake`` on different devices or of different feature
                dimensions, an integer ``fake``, a ``feature_map`` that changes the number of
                samples, a bandwidth below the dtype's minimum, or NaN/inf inputs with
                ``nonfinite="raise"``.
        """
        for name, t in (("real", real), ("fake", fake), ("d_real", d_real)):
            if not isinstance(t, Tensor):
                raise GameInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}; convert it with torch.as_tensor.")
        if self.distributed:  # before any local check, so a bad share raises on every rank, not only here
            check_same_shapes({"real": real, "fake": fake, "d_real": d_real}, self.process_group)
        if real.dim() == 0 or real.shape[0] == 0:
            raise GameInputError(f"real batch is empty (shape {tuple(real.shape)}); pass at least one data sample.")
        if fake.dim() == 0 or fake.shape[0] == 0:
            raise GameInputError(f"fake batch is empty (shape {tuple(fake.shape)}); pass at least one generated sample.")
        n = real.shape[0]
        if d_real.shape not in ((n,), (n, 1)):
            raise GameInputError(
                f"d_real must be the discriminator's raw output on real with shape ({n},) or ({n}, 1), "
                f"got {tuple(d_real.shape)}."
            )
        if real.device != fake.device:
            raise GameInputError(f"real is on {real.device} but fake is on {fake.device}; move them to one device.")
        sigma = self.current_bandwidth

        with torch.no_grad():
            x = self._features(real.detach(), "real")
        y = self._features(fake, "fake")
        if not y.is_floating_point():
            raise GameInputError(f"fake must be a floating-point tensor, got {y.dtype}; cast it (e.g. fake.float()).")
        x = x.to(compute_dtype(y.dtype))  # real in float16 would overflow where fake's dtype is half
        if x.shape[1:] != y.shape[1:]:
            raise GameInputError(
                f"real and fake have different feature dimensions ({x.shape[1]} vs {y.shape[1]}, from shapes "
                f"{tuple(real.shape)} and {tuple(fake.shape)}); pass batches of the same sample shape "
                "(and one feature_map for both)."
            )
        if self.distributed:
            y = gather_rows(y, self.process_group)
        d = d_real.detach().reshape(n).to(y.device)
        if self.nonfinite == "raise":
            self._raise_if_nonfinite(x, y, d)

        dtype = compute_dtype(y.dtype)
        w = self.alpha * self.divergence.f1_from_output(d.to(dtype))
        # a user f1 may map NaN to a number (torch.where, clamp): the value must still say NaN
        w = torch.where(torch.isfinite(d), w.to(dtype), torch.full_like(w, math.nan, dtype=dtype))
        # (p_tilde - p_hat) = -w by construction, so the value is mean(w^2); the kernel
        # density is only needed for the gradient, computed blockwise in backward.
        out = primal_dual_term(x, y, w, sigma, self.chunk_size)
        self._last_value = out.detach()
        return out

    def _raise_if_nonfinite(self, x: Tensor, y: Tensor, d: Tensor) -> None:
        ok = torch.stack([torch.isfinite(x).all(), torch.isfinite(y).all(), torch.isfinite(d).all()]).tolist()
        names = ("real", "fake", "d_real")
        bad = [n + (" (after feature_map)" if self.feature_map is not None and n != "d_real" else "")
               for n, good in zip(names, ok) if not good]
        if bad:
            raise GameInputError(
                f"PrimalDualRegularizer: NaN or inf values in {', '.join(bad)}, which would make the "
                "generator's gradient NaN. Check the generator / discriminator outputs (or pass "
                "nonfinite='propagate' to get a NaN value and let the optimiser skip the step)."
            )

    def monitor_stats(self) -> dict[str, Any]:
        """Last term value (a tensor: no host sync), current bandwidth and step count, for :class:`gameopt.Monitor`."""
        return {
            "value": getattr(self, "_last_value", None),
            "bandwidth": self.current_bandwidth,
            "num_steps": self._steps,
        }

    def extra_repr(self) -> str:
        """Divergence, alpha, bandwidth and chunk size, for ``repr``."""
        return f"divergence={self.divergence.name!r}, alpha={self.alpha}, bandwidth={self.bandwidth!r}, chunk_size={self.chunk_size}"
