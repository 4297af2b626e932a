"""Per-sample score gradients and their kernel K = J J^T (the empirical NTK; methods.md 3b).

J is the (m, p) matrix whose row i is the gradient of the score F(w, x_i) in the
discriminator's p trainable parameters. The score-linearised dual needs only K = J J^T,
J w and the scores, and the step needs J^T eta for the dual solution eta; J of the whole
network is never held. Two ways to get the per-sample gradients:

* ``"hooks"``: one forward and one backward of sum_i F(x_i) give every layer's inputs
  a_i and output gradients delta_i (samples are scored independently), and the
  per-sample weight gradient of an ``nn.Linear`` / ``nn.Conv2d`` is
  sum_p delta_ip u_ip^T over its output positions p (u_ip the unfolded input patch).
  Each layer's kernel block is formed by the cheaper of two exact routes: materialise
  the m per-sample gradients and take their Gram matrix, or, when the layer has few
  output positions P, multiply the Gram matrices of the m P position rows elementwise
  and sum over position pairs, <D_i U_i^T, D_j U_j^T> = sum_pq (D_i^T D_j)_pq (U_i^T U_j)_pq,
  never forming the gradients. J w of a layer is <delta_i, z_i> with z its output (no
  extra pass), and J^T eta = sum_i eta_i delta_i u_i^T (the layer algebra lives in
  :mod:`gameopt.dual.layer_gradients`). A spectrally normalised weight
  (``torch.nn.utils.spectral_norm`` or its parametrization) is trained through
  W = W_orig / sigma: its block is mapped to W_orig in closed form.
* ``"func"``: ``torch.func.vmap(grad)`` over samples, any module (weight norm, other
  parametrizations, shared or custom layers), in parameter groups of at most
  ``budget_bytes`` of per-sample gradients.

``"auto"`` uses hooks when every trainable parameter is the (spectrally normalised)
``weight`` or the ``bias`` of an ``nn.Linear`` or zero-padded, ungrouped ``nn.Conv2d``
used once per forward pass.
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.profiler import record_function

from ..errors import GameInputError
from .layer_gradients import (
    LayerFactors,
    SpectralNormed,
    Workspace,
    exact,
    hookable,
    hooks_unsupported,
    sym_gram,
    trained_weight,
)

__all__ = [
    "PER_SAMPLE_METHODS",
    "KernelNotPSD",
    "PerSampleKernel",
    "ScoreKernel",
    "check_per_sample_module",
    "psd_kernel",
    "sym_gram",
]

PER_SAMPLE_METHODS = ("auto", "func", "hooks")


@dataclass
class ScoreKernel:
    """Kernel of per-sample score gradients on m samples, all float64.

    ``K`` (m, m) = J J^T, ``Jw`` (m,) = J w, ``scores`` (m,) = F(w, x). :meth:`jt_eta`
    gives J^T eta per parameter (in the order of :meth:`PerSampleKernel.parameters`)
    when the build kept what it needs (``keep=True``), else None. ``finite``: whether K,
    J w and the scores are all finite; ``also_ok``: the caller's ``also`` flag; both read
    with the build's one host read.
    """

    K: Tensor
    Jw: Tensor
    scores: Tensor
    _jt: Callable[[Tensor], list[Tensor]] | None = None
    finite: bool = True
    also_ok: bool = True

    def jt_eta(self, eta: Tensor) -> list[Tensor] | None:
        """J^T eta for eta (m,), one tensor per parameter, or None when nothing was kept."""
        return None if self._jt is None else self._jt(eta)


def _no_autocast(device: torch.device):
    """The kernel's products keep their operands' precision, whatever autocast the caller runs under."""
    if device.type == "meta":  # no autocast there (the sync-budget tests run on meta)
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def psd_kernel(K: Tensor, rounding: float, factors: bool | None = None) -> Tensor:
    """K when it is positive definite; else K shifted to positive definite at rounding level.

    K = J J^T is PSD, but formed from float32 blocks it carries rounding of order
    m eps32 ||K||, and with near-duplicate samples (a collapsed generator) or dead ReLU
    units it is singular: its smallest eigenvalues come out slightly negative, which the
    dual does not allow. Then K + s I is returned for the smallest s on the ladder
    floor, 16 floor, 256 floor, ... (floor = 64 m eps64 max(diag K)) up to the rounding
    allowance 64 m ``rounding`` max(diag K) whose Cholesky factorisation succeeds: a change
    of the size of the rounding already in K. ``rounding`` is the unit roundoff of the
    dtype the blocks were formed in. Each rung costs one Cholesky factorisation (an
    eigendecomposition, the earlier way, cost about 14 of them at m = 2048); on the CPU the
    rungs are tried in turn, elsewhere all at once (one host read).

    ``factors``: whether K's Cholesky factorisation is already known to succeed (None: try it,
    one host read).

    Raises:
        KernelNotPSD: an eigenvalue below -64 m ``rounding`` max(diag K): not rounding.
    """
    m = K.shape[-1]
    if factors is None:
        factors = int(torch.linalg.cholesky_ex(K)[1]) == 0
    if factors:
        return K
    scale = K.diagonal().abs().max()
    rungs = _ladder(m, rounding)
    allow_f = rungs[-1]
    chosen = None
    if K.device.type == "cpu":
        shifted, added = K.clone(), 0.0
        diag = shifted.diagonal()
        for r in rungs:
            diag.add_((r - added) * scale)
            added = r
            if int(torch.linalg.cholesky_ex(shifted)[1]) == 0:
                chosen = r
                break
    else:
        eye = torch.eye(m, dtype=K.dtype, device=K.device)
        shifts = torch.stack([scale * r for r in rungs])
        info = torch.linalg.cholesky_ex(K + shifts[:, None, None] * eye)[1]
        ok = (info == 0).cpu().tolist()
        chosen = next((r for r, good in zip(rungs, ok) if good), None)
    if chosen is None:
        lowest = float(torch.linalg.eigvalsh(K)[0])
        raise KernelNotPSD(f"the kernel K = J J^T has eigenvalue {lowest:.3g}, beyond the rounding allowance "
                           f"{allow_f * float(scale):.3g}: the per-sample gradients are not those of the scores")
    if K.device.type == "cpu":
        return shifted
    return K + (chosen * scale) * eye


def _ladder(m: int, rounding: float) -> list[float]:
    """psd_kernel's shifts relative to max(diag K): 64 m eps64 times 1, 16, 256, ... up to 64 m ``rounding``."""
    floor_f = 64 * m * torch.finfo(torch.float64).eps
    allow_f = max(64 * m * rounding, floor_f)
    rungs = [floor_f]
    while rungs[-1] * 16 < allow_f:
        rungs.append(rungs[-1] * 16)
    if allow_f > rungs[-1]:
        rungs.append(allow_f)
    return rungs


def _shift_to_pd(K: Tensor, rounding: float) -> tuple[Tensor, Tensor]:
    """K, or K + s I for psd_kernel's smallest working shift s, chosen on the device (no host read).

    Returns the matrix and a 0-d bool tensor: whether K or some rung factorised (False: K is not
    PSD beyond rounding; psd_kernel then says by how much).
    """
    m = K.shape[-1]
    scale = K.diagonal().abs().max()
    shifts = torch.stack([scale * 0.0] + [scale * r for r in _ladder(m, rounding)])
    eye = torch.eye(m, dtype=K.dtype, device=K.device)
    info = torch.linalg.cholesky_ex(K + shifts[:, None, None] * eye)[1]
    ok = info == 0
    first = torch.argmax(ok.to(torch.int8))  # the first rung that factorises (0: K itself)
    # shifts grow, so some rung factorises exactly when the largest one does
    return K + shifts.index_select(0, first.reshape(1)).reshape(()) * eye, ok[-1]


def check_per_sample_module(module: nn.Module) -> None:
    """Refuse modules whose samples are not scored independently, before any forward pass.

    Args:
        module: the discriminator network.

    Raises:
        GameInputError: a batch-norm layer in training mode or without running statistics
            (it mixes the samples of a batch), or a normalisation layer in training mode
            that would update its running statistics inside the per-sample pass.
    """
    for name, mod in module.named_modules():
        where = f"layer {name!r} ({type(mod).__name__})" if name else type(mod).__name__
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and (mod.training or not mod.track_running_stats):
            raise GameInputError(
                f"{where} normalises with batch statistics, which mixes the samples of a batch: per-sample score "
                "gradients, and so model='score', are not defined for it. Put the discriminator in eval mode for "
                "its step (D.eval(): batch norm then uses its running statistics), use a per-sample normalisation "
                "(LayerNorm, GroupNorm, spectral_norm), or use model='cost'"
            )
        if isinstance(mod, nn.modules.instancenorm._InstanceNorm) and mod.training and mod.track_running_stats:
            raise GameInputError(
                f"{where} updates its running statistics in training mode, which the per-sample pass of "
                "model='score' cannot do; put the discriminator in eval mode (D.eval()) for its step or use "
                "track_running_stats=False"
            )


class KernelNotPSD(ValueError):
    """K has an eigenvalue below zero beyond rounding: the per-sample gradients are broken."""


class _ReusedLayer(Exception):
    """A hooked layer ran more than once in one forward pass (weight sharing)."""


class PerSampleKernel:
    """Builds K = J J^T, J w and the scores of a discriminator on a batch.

    Args:
        module: the discriminator, mapping (m, ...) to logits (m,) or (m, 1); samples must be
            scored independently (see :func:`check_per_sample_module`).
        method: "auto" | "hooks" | "func" (see the module docstring).
        budget_bytes: most bytes of per-sample gradients held at once; a single larger
            parameter (func) or layer (hooks) is split or forms its own group.

    The hooks route keeps its large scratch tensors (materialised gradients and input
    patches, at most about ``budget_bytes`` plus the patches) from one build to the next,
    since allocating them afresh costs as much as filling them on the CPU;
    :meth:`release_workspace` frees them. A :class:`ScoreKernel`'s ``jt_eta`` is valid
    until the next build.

    Raises:
        GameInputError: unknown ``method``, ``budget_bytes`` < 1, or ``method="hooks"`` for a
            module it cannot serve (names the layer).
    """

    def __init__(self, module: nn.Module, method: str = "auto", budget_bytes: int = 512 * 2**20) -> None:
        if method not in PER_SAMPLE_METHODS:
            raise GameInputError(f"per_sample must be 'auto', 'func' or 'hooks', got {method!r}")
        if int(budget_bytes) < 1:
            raise GameInputError(f"jacobian_budget_bytes must be >= 1, got {budget_bytes!r}")
        self.module = module
        self.method = method
        self.budget_bytes = int(budget_bytes)
        self._workspace = Workspace()
        if method == "hooks":
            self._require_hooks()

    def parameters(self) -> dict[str, Tensor]:
        """The trainable parameters, by name: the columns of J."""
        return {k: p for k, p in self.module.named_parameters() if p.requires_grad}

    def uses_hooks(self) -> bool:
        """Whether the next build takes the hooks route."""
        return self.method == "hooks" or (self.method == "auto" and hooks_unsupported(self.module) is None)

    def check(self) -> None:
        """Refuse a module this build cannot serve, before any forward pass (GameInputError)."""
        check_per_sample_module(self.module)
        if self.method == "hooks":
            self._require_hooks()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_workspace"] = Workspace()  # scratch memory: not part of a copy
        return state

    def release_workspace(self) -> None:
        """Free the scratch memory the hooks route keeps between builds (it is allocated again when needed)."""
        self._workspace.clear()

    def _require_hooks(self) -> None:
        reason = hooks_unsupported(self.module)
        if reason is not None:
            raise GameInputError(f"per_sample='hooks' needs every trainable parameter to be the weight or bias of "
                                 f"an nn.Linear or a zero-padded, ungrouped nn.Conv2d, but {reason}; use "
                                 "per_sample='func' (any module) or 'auto'")

    def __call__(self, x: Tensor, keep: bool = False, also: Tensor | None = None) -> ScoreKernel:
        """K, J w and the scores on x (m, ...); ``keep`` keeps what J^T eta needs.

        K is symmetric and positive semi-definite (see :func:`psd_kernel`); its blocks are
        formed in the parameters' precision (at least float32, whatever autocast runs).
        Raises :class:`KernelNotPSD` when K is not PSD beyond rounding. One host read (the
        finiteness of K, J w and the scores, and whether K factorises), which also reads the
        0-d bool ``also`` (a caller's check; result in ``also_ok``).
        """
        kernel = None
        if self.uses_hooks():
            try:
                kernel = self._hooks(x, keep)
            except _ReusedLayer as e:
                if self.method == "hooks":
                    raise GameInputError(f"per_sample='hooks': {e}; use per_sample='func'") from None
        if kernel is None:
            kernel = self._func(x, keep)
        formed = [torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
                  for p in self.parameters().values()]
        rounding = max((torch.finfo(d).eps for d in formed), default=0.0)
        finite = torch.isfinite(kernel.K).all() & torch.isfinite(kernel.Jw).all() & torch.isfinite(kernel.scores).all()
        on_cpu = kernel.K.device.type == "cpu"
        if on_cpu:  # reads are free: factorise K, and only when that fails climb psd_kernel's ladder
            factors = torch.linalg.cholesky_ex(kernel.K)[1] == 0
        else:  # the whole ladder at once and the shift picked on the device: no read of its own
            shifted, factors = _shift_to_pd(kernel.K, rounding)
        flags = [finite, factors] + ([also.reshape(())] if also is not None else [])
        read = torch.stack([f.to(finite.device) for f in flags]).cpu().tolist()  # the one host read
        kernel.finite = bool(read[0])
        kernel.also_ok = bool(read[2]) if also is not None else True
        if kernel.finite and kernel.also_ok:
            if on_cpu:
                kernel.K = psd_kernel(kernel.K, rounding, bool(read[1]))
            elif not read[1]:
                psd_kernel(kernel.K, rounding, False)  # raises KernelNotPSD with the eigenvalue
            else:
                kernel.K = shifted
        return kernel

    # ----------------------------------------------------------- func route
    def param_groups(self, params: dict[str, Tensor], m: int) -> list[list[str]]:
        """Parameter names in groups of at most ``budget_bytes`` of per-sample gradients (func route).

        Args:
            params: ``{name: parameter}``, in order.
            m: the number of samples (rows of the per-sample gradients).

        Returns:
            Consecutive groups of names; a parameter larger than the budget forms its own group.
        """
        groups: list[list[str]] = []
        cur: list[str] = []
        cur_bytes = 0
        for k, p in params.items():
            b = m * p.numel() * p.element_size()
            if cur and cur_bytes + b > self.budget_bytes:
                groups.append(cur)
                cur, cur_bytes = [], 0
            cur.append(k)
            cur_bytes += b
        if cur:
            groups.append(cur)
        return groups

    def _func(self, x: Tensor, keep: bool) -> ScoreKernel:
        params = self.parameters()
        buffers = dict(self.module.named_buffers())
        m = x.shape[0]
        K = torch.zeros(m, m, dtype=torch.float64, device=x.device)
        Jw = torch.zeros(m, dtype=torch.float64, device=x.device)
        groups = self.param_groups(params, m)
        held: dict[str, Tensor] | None = {} if keep and len(groups) == 1 else None
        scores = None
        for names in groups:
            group = {k: params[k].detach() for k in names}
            frozen = {k: v.detach() for k, v in params.items() if k not in group}

            def f_single(g: dict[str, Tensor], xi: Tensor, frozen: dict[str, Tensor] = frozen) -> Tensor:
                out = functional_call(self.module, ({**frozen, **g}, buffers), (xi.unsqueeze(0),))
                return out.reshape(())

            grads, values = vmap(grad_and_value(f_single), in_dims=(None, 0))(group, x)
            if scores is None:
                scores = values.double()
            with _no_autocast(x.device):
                for k in names:
                    Jk = exact(grads[k].reshape(m, -1))
                    K += sym_gram(Jk).double()
                    Jw += (Jk @ exact(group[k].reshape(-1))).double()
                    if held is not None:
                        held[k] = Jk
                    del Jk
            del grads
        if scores is None:  # no trainable parameters
            scores = self.module(x).reshape(m).detach().double()
        jt = None
        if held is not None:
            def jt(eta: Tensor, held: dict[str, Tensor] = held) -> list[Tensor]:
                with _no_autocast(eta.device):
                    return [(held[k].T @ eta.to(held[k])).reshape(p.shape) for k, p in params.items()]
        return ScoreKernel(K, Jw, scores, jt)

    # ---------------------------------------------------------- hooks route
    def _layers(self) -> list[tuple[nn.Module, Tensor | None, SpectralNormed | None]]:
        """(layer, the tensor it trains for its weight, its spectral norm) of every layer with trainable tensors."""
        out = []
        for mod in self.module.modules():
            if not hookable(mod):
                continue
            weight, sn = trained_weight(mod)  # type: ignore[misc]
            if any(t is not None and t.requires_grad for t in (weight, mod.bias)):
                out.append((mod, weight, sn))
        return out

    def _forward(self, x: Tensor, layers: list, copy_outputs: bool) -> tuple[Tensor, dict]:
        """Scores with every layer's (input, output); outputs copied when later layers work in place."""
        seen: dict[nn.Module, tuple[Tensor, Tensor, int]] = {}

        def hook(mod: nn.Module, inp: tuple, out: Tensor) -> Tensor | None:
            if mod in seen:
                raise _ReusedLayer(f"{type(mod).__name__} runs more than once per forward pass (shared weights)")
            seen[mod] = (inp[0].detach(), out, out._version)
            return out.clone() if copy_outputs else None

        handles = [mod.register_forward_hook(hook) for mod, _, _ in layers]
        try:
            scores = self.module(x).reshape(x.shape[0])
        finally:
            for h in handles:
                h.remove()
        return scores, seen

    def _hooks(self, x: Tensor, keep: bool) -> ScoreKernel:
        m = x.shape[0]
        layers = self._layers()
        K = torch.zeros(m, m, dtype=torch.float64, device=x.device)
        Jw = torch.zeros(m, dtype=torch.float64, device=x.device)
        with torch.enable_grad(), record_function("gameopt.dual.kernel.passes"):
            scores, seen = self._forward(x, layers, copy_outputs=False)
            if any(out._version != v for _, out, v in seen.values()):  # an in-place op changed a layer output
                scores, seen = self._forward(x, layers, copy_outputs=True)
            used = [layer for layer in layers if layer[0] in seen]
            deltas = torch.autograd.grad(scores.sum(), [seen[mod][1] for mod, _, _ in used], allow_unused=True) \
                if used and scores.requires_grad else []
        parts: list[LayerFactors] = []
        held_bytes = 0
        with _no_autocast(x.device):
            for (mod, weight, sn), delta in zip(used, deltas):
                a, z, _ = seen[mod]
                if delta is None:
                    continue
                a, z, delta = exact(a), exact(z.detach()), exact(delta)
                lf = LayerFactors(mod, weight, a, delta, m, self._workspace)
                b = mod.bias
                bias_part = lf.dsum @ exact(b.detach()) if b is not None else 0.0
                if weight is not None and weight.requires_grad:
                    c = (delta * z).reshape(m, -1).sum(1) - bias_part  # <delta_i, W u_i> over positions
                    budget = max(self.budget_bytes - held_bytes, 0) if keep else 0
                    Kw = lf.weight_kernel(self.budget_bytes, budget)
                    if lf.rows is not None:
                        held_bytes += lf.rows.numel() * lf.rows.element_size()
                    if sn is None:
                        K += Kw
                        Jw += c.double()
                    else:  # J w of W_orig is 0: the score does not change with the scale of W_orig
                        K += lf.through_spectral_norm(sn, c, Kw)
                if b is not None and b.requires_grad:
                    K += sym_gram(lf.dsum).double()
                    Jw += (lf.dsum @ exact(b.detach())).double()
                if keep:
                    parts.append(lf)
                else:
                    del lf
        jt = None
        if keep:
            params = self.parameters()

            def jt(eta: Tensor) -> list[Tensor]:
                by_id: dict[int, Tensor] = {}
                with _no_autocast(eta.device):
                    for lf in parts:
                        by_id.update(lf.jt_eta(eta))
                return [by_id[id(p)] if id(p) in by_id else torch.zeros_like(p) for p in params.values()]
        return ScoreKernel(K, Jw, scores.detach().double(), jt)
