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
  extra pass), and J^T eta = sum_i eta_i delta_i u_i^T. A spectrally normalised weight
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

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm as _HookSpectralNorm
from torch.profiler import record_function

from ..errors import GameInputError

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

# Rows of one block of the position-Gram route: block products of about this size run
# near peak GEMM speed on a CPU and keep the Gram blocks small.
_GRAM_BLOCK_ROWS = 512
# Cost, in multiply-adds per gradient entry, of writing and re-reading a materialised
# per-sample gradient (a batched product with few positions is memory bound).
_MATERIALISE_OVERHEAD = 32


@dataclass
class ScoreKernel:
    """Kernel of per-sample score gradients on m samples, all float64.

    ``K`` (m, m) = J J^T, ``Jw`` (m,) = J w, ``scores`` (m,) = F(w, x). :meth:`jt_eta`
    gives J^T eta per parameter (in the order of :meth:`PerSampleKernel.parameters`)
    when the build kept what it needs (``keep=True``), else None.
    """

    K: Tensor
    Jw: Tensor
    scores: Tensor
    _jt: Callable[[Tensor], list[Tensor]] | None = None

    def jt_eta(self, eta: Tensor) -> list[Tensor] | None:
        """J^T eta for eta (m,), one tensor per parameter, or None when nothing was kept."""
        return None if self._jt is None else self._jt(eta)


def sym_gram(A: Tensor) -> Tensor:
    """A A^T (rows of A), exactly symmetric, in A's dtype."""
    G = A @ A.T
    return (G + G.T) * 0.5


def _exact(t: Tensor) -> Tensor:
    """t in at least float32: kernel blocks of half-precision factors are formed in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _no_autocast(device: torch.device) -> torch.autocast:
    """The kernel's products keep their operands' precision, whatever autocast the caller runs under."""
    return torch.autocast(device.type, enabled=False)


def psd_kernel(K: Tensor, rounding: float) -> Tensor:
    """K when it is positive definite; else the PSD matrix nearest to it at rounding level.

    K = J J^T is PSD, but formed from float32 blocks it carries rounding of order
    m eps32 ||K||: with near-duplicate samples (a collapsed generator) its smallest
    eigenvalues come out slightly negative, which the dual does not allow. Then the
    eigenvalues below floor = 64 m eps64 max(diag K) are raised to the floor, a change
    far inside the rounding already in K. ``rounding`` is the unit roundoff of the
    dtype the blocks were formed in.

    Raises:
        KernelNotPSD: an eigenvalue below -64 m ``rounding`` max(diag K): not rounding.
    """
    m = K.shape[-1]
    _, info = torch.linalg.cholesky_ex(K)
    if int(info) == 0:
        return K
    lam, V = torch.linalg.eigh(K)
    scale = float(K.diagonal().abs().max())
    if float(lam[0]) < -64 * m * rounding * scale:
        raise KernelNotPSD(f"the kernel K = J J^T has eigenvalue {float(lam[0]):.3g}, beyond the rounding allowance "
                         f"{64 * m * rounding * scale:.3g}: the per-sample gradients are not those of the scores")
    floor = 64 * m * torch.finfo(torch.float64).eps * scale
    Kp = (V * lam.clamp_min(floor)) @ V.T
    return (Kp + Kp.T) * 0.5


def check_per_sample_module(module: nn.Module) -> None:
    """Refuse modules whose samples are not scored independently, before any forward pass.

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


class _SpectralNorm:
    """A weight trained through spectral normalisation: W = W_orig / sigma, sigma = u^T W_orig v.

    u and v are the power-iteration vectors the forward pass used (read after it); W_orig is
    flattened as (out, in) for dim 0, the layout of ``torch.nn.utils.spectral_norm`` and of
    its parametrization for Linear and Conv2d.
    """

    def __init__(self, orig: Tensor, u: Tensor, v: Tensor) -> None:
        self.orig, self._u, self._v = orig, u, v

    def vectors(self) -> tuple[Tensor, Tensor, Tensor]:
        """(u, v, sigma) as this forward pass used them, in at least float32."""
        u, v = _exact(self._u.detach()).clone(), _exact(self._v.detach()).clone()
        W = _exact(self.orig.detach()).reshape(u.shape[0], -1)
        return u, v, u @ (W @ v)


def _trained_weight(mod: nn.Module) -> tuple[Tensor | None, _SpectralNorm | None] | None:
    """(the tensor a Linear/Conv2d layer trains for its weight, its spectral norm or None); None: not served."""
    if parametrize.is_parametrized(mod, "weight"):
        plist = mod.parametrizations["weight"]
        sn_cls = getattr(nn.utils.parametrizations, "_SpectralNorm", None)
        if len(plist) != 1 or sn_cls is None or not isinstance(plist[0], sn_cls) or plist[0].dim != 0 \
                or plist.original.ndim < 2:
            return None
        return plist.original, _SpectralNorm(plist.original, plist[0]._u, plist[0]._v)
    for hook in mod._forward_pre_hooks.values():
        if isinstance(hook, _HookSpectralNorm) and hook.name == "weight":
            if hook.dim != 0:
                return None
            return mod.weight_orig, _SpectralNorm(mod.weight_orig, mod.weight_u, mod.weight_v)
    if any(k not in ("weight", "bias") for k, p in mod._parameters.items() if p is not None and p.requires_grad):
        return None  # e.g. weight_norm's weight_g / weight_v
    return mod._parameters.get("weight"), None


def _hookable(mod: nn.Module) -> bool:
    return isinstance(mod, (nn.Linear, nn.Conv2d)) and not (
        isinstance(mod, nn.Conv2d) and (mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str))
    ) and not parametrize.is_parametrized(mod, "bias") and _trained_weight(mod) is not None


def _hooks_unsupported(module: nn.Module) -> str | None:
    """Why the hooks route cannot serve ``module`` (None when it can)."""
    served: set[int] = set()
    for mod in module.modules():
        if _hookable(mod):
            weight, _ = _trained_weight(mod)  # type: ignore[misc]
            served |= {id(t) for t in (weight, mod.bias) if t is not None}
    for name, p in module.named_parameters():
        if p.requires_grad and id(p) not in served:
            owner_name = name.rsplit(".", 1)[0] if "." in name else ""
            owner = module.get_submodule(owner_name)
            if isinstance(owner, parametrize.ParametrizationList):
                what = "a reparametrised weight other than spectral_norm (e.g. weight_norm)"
            elif isinstance(owner, nn.Conv2d):
                what = "a grouped, not zero-padded or string-padded nn.Conv2d"
            elif isinstance(owner, (nn.Linear, nn.Conv2d)):
                what = f"a reparametrisation of {type(owner).__name__} other than spectral_norm (e.g. weight_norm)"
            else:
                what = f"a {type(owner).__name__}, not an nn.Linear or nn.Conv2d"
            return f"parameter {name!r} belongs to {what}"
    return None


class KernelNotPSD(ValueError):
    """K has an eigenvalue below zero beyond rounding: the per-sample gradients are broken."""


class _Workspace:
    """Large scratch tensors kept from one kernel build to the next.

    Allocating the tens of MB that materialised gradients and input patches take costs,
    on the CPU, about as much as computing them: every page is faulted in afresh (the
    C allocator returns such blocks to the system on free). Reusing them halves the
    batched product that materialises the gradients of a DCGAN-like layer. A tensor
    handed out stays valid until the next build.
    """

    def __init__(self) -> None:
        self._store: dict[tuple, Tensor] = {}

    def get(self, key: tuple, shape: tuple[int, ...], like: Tensor) -> Tensor:
        n = 1
        for size in shape:
            n *= size
        buf = self._store.get(key)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._store[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)

    def clear(self) -> None:
        self._store.clear()


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
        ValueError: unknown ``method``.
        GameInputError: ``method="hooks"`` for a module it cannot serve (names the layer).
    """

    def __init__(self, module: nn.Module, method: str = "auto", budget_bytes: int = 512 * 2**20) -> None:
        if method not in PER_SAMPLE_METHODS:
            raise ValueError(f"per_sample must be 'auto', 'func' or 'hooks', got {method!r}")
        if int(budget_bytes) < 1:
            raise ValueError(f"jacobian_budget_bytes must be >= 1, got {budget_bytes!r}")
        self.module = module
        self.method = method
        self.budget_bytes = int(budget_bytes)
        self._workspace = _Workspace()
        if method == "hooks":
            self._require_hooks()

    def parameters(self) -> dict[str, Tensor]:
        """The trainable parameters, by name: the columns of J."""
        return {k: p for k, p in self.module.named_parameters() if p.requires_grad}

    def uses_hooks(self) -> bool:
        """Whether the next build takes the hooks route."""
        return self.method == "hooks" or (self.method == "auto" and _hooks_unsupported(self.module) is None)

    def check(self) -> None:
        """Refuse a module this build cannot serve, before any forward pass (GameInputError)."""
        check_per_sample_module(self.module)
        if self.method == "hooks":
            self._require_hooks()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_workspace"] = _Workspace()  # scratch memory: not part of a copy
        return state

    def release_workspace(self) -> None:
        """Free the scratch memory the hooks route keeps between builds (it is allocated again when needed)."""
        self._workspace.clear()

    def _require_hooks(self) -> None:
        reason = _hooks_unsupported(self.module)
        if reason is not None:
            raise GameInputError(f"per_sample='hooks' needs every trainable parameter to be the weight or bias of "
                                 f"an nn.Linear or a zero-padded, ungrouped nn.Conv2d, but {reason}; use "
                                 "per_sample='func' (any module) or 'auto'")

    def __call__(self, x: Tensor, keep: bool = False) -> ScoreKernel:
        """K, J w and the scores on x (m, ...); ``keep`` keeps what J^T eta needs.

        K is symmetric and positive semi-definite (see :func:`psd_kernel`); its blocks are
        formed in the parameters' precision (at least float32, whatever autocast runs).
        Raises :class:`KernelNotPSD` when K is not PSD beyond rounding.
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
        if bool(torch.isfinite(kernel.K).all()):
            formed = [torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
                      for p in self.parameters().values()]
            kernel.K = psd_kernel(kernel.K, max((torch.finfo(d).eps for d in formed), default=0.0))
        return kernel

    # ----------------------------------------------------------- func route
    def param_groups(self, params: dict[str, Tensor], m: int) -> list[list[str]]:
        """Parameter names in groups of at most ``budget_bytes`` of per-sample gradients (func route)."""
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
                    Jk = _exact(grads[k].reshape(m, -1))
                    K += sym_gram(Jk).double()
                    Jw += (Jk @ _exact(group[k].reshape(-1))).double()
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
    def _layers(self) -> list[tuple[nn.Module, Tensor | None, _SpectralNorm | None]]:
        """(layer, the tensor it trains for its weight, its spectral norm) of every layer with trainable tensors."""
        out = []
        for mod in self.module.modules():
            if not _hookable(mod):
                continue
            weight, sn = _trained_weight(mod)  # type: ignore[misc]
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
        parts: list[_LayerFactors] = []
        held_bytes = 0
        with _no_autocast(x.device):
            for (mod, weight, sn), delta in zip(used, deltas):
                a, z, _ = seen[mod]
                if delta is None:
                    continue
                a, z, delta = _exact(a), _exact(z.detach()), _exact(delta)
                lf = _LayerFactors(mod, weight, a, delta, m, self._workspace)
                b = mod.bias
                bias_part = lf.dsum @ _exact(b.detach()) if b is not None else 0.0
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
                    Jw += (lf.dsum @ _exact(b.detach())).double()
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


class _LayerFactors:
    """Per-sample gradients of one Linear / Conv2d layer in factored form.

    Over the layer's P output positions, the weight gradient of sample i is
    sum_p delta_ip u_ip^T: delta (m, out, P) the output gradients and u_ip the input
    patch (in,) at position p (the unfolded input of a convolution).
    """

    def __init__(self, mod: nn.Module, weight: Tensor | None, a: Tensor, delta: Tensor, m: int,
                 workspace: _Workspace | None = None) -> None:
        self.mod, self.weight, self.a, self.m = mod, weight, a, m
        self.workspace = workspace if workspace is not None else _Workspace()
        self.sn: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # (u, v in patch order, sigma, J_W W)
        if isinstance(mod, nn.Linear):  # positions: every leading dim after the batch
            self.Dt = delta.reshape(m, -1, delta.shape[-1]).transpose(1, 2)
            self.in_f = a.shape[-1]
        else:
            self.Dt = delta.reshape(m, delta.shape[1], -1)
            self.out_hw = delta.shape[2], delta.shape[3]
            self.in_f = a.shape[1] * mod.kernel_size[0] * mod.kernel_size[1]
        self.out_f, self.P = self.Dt.shape[1], self.Dt.shape[2]
        self.dsum = self.Dt.sum(2)  # (m, out): the bias gradients
        self.rows: Tensor | None = None  # materialised weight gradients (m, out * in), when kept
        self.Df: Tensor | None = None  # (m P, out) and (m P, in) position rows, when the Gram route ran
        self.Uf: Tensor | None = None

    def _patch_rows(self) -> Tensor:
        """Inputs as (m P, in) rows, one per sample and position.

        A convolution's patches are gathered from a zero-padded channels-last copy of its
        input, so every row is (kh, kw, c)-ordered and copied in runs of c contiguous
        numbers (far faster than ``unfold`` and a transpose on the CPU); :meth:`_as_weight`
        maps a gradient in that order back to the weight's layout.
        """
        m, mod, a = self.m, self.mod, self.a
        if isinstance(mod, nn.Linear):
            return a.reshape(m * self.P, self.in_f)
        (ph, pw), (sh, sw), (dh, dw), (kh, kw) = mod.padding, mod.stride, mod.dilation, mod.kernel_size
        _, c, h, w = a.shape
        xp = self.workspace.get(("padded",), (m, h + 2 * ph, w + 2 * pw, c), a)
        for border in (xp[:, :ph], xp[:, ph + h:], xp[:, :, :pw], xp[:, :, pw + w:]):
            border.zero_()
        xp[:, ph:ph + h, pw:pw + w] = a.permute(0, 2, 3, 1)
        st = xp.stride()
        oh, ow = self.out_hw
        patches = xp.as_strided((m, oh, ow, kh, kw, c), (st[0], st[1] * sh, st[2] * sw, st[1] * dh, st[2] * dw, st[3]))
        rows = self.workspace.get((id(self.mod), "patches"), (m, oh, ow, kh, kw, c), a)
        rows.copy_(patches)
        return rows.view(m * self.P, self.in_f)

    def _as_weight(self, g: Tensor) -> Tensor:
        """A weight gradient (out, in) in the order of :meth:`_patch_rows`, in the weight's layout."""
        assert self.weight is not None
        if isinstance(self.mod, nn.Linear):
            return g.reshape(self.weight.shape)
        o, c, kh, kw = self.weight.shape
        return g.reshape(o, kh, kw, c).permute(0, 3, 1, 2)

    def _to_patch_order(self, v: Tensor) -> Tensor:
        """A vector over the weight's inputs, (c, kh, kw)-ordered for a convolution, in patch order."""
        if isinstance(self.mod, nn.Linear):
            return v
        _, c, kh, kw = self.weight.shape  # type: ignore[union-attr]
        return v.reshape(c, kh, kw).permute(1, 2, 0).reshape(-1)

    def through_spectral_norm(self, sn: _SpectralNorm, c: Tensor, Kw: Tensor) -> Tensor:
        """The kernel block of W_orig from that of W = W_orig / sigma (float64).

        The gradient in W_orig of sample i is (g_i - c_i u v^T) / sigma with g_i its gradient
        in W and c_i = <g_i, W>; so K_orig = (K_W - c d^T - d c^T + |u|^2 |v|^2 c c^T) / sigma^2
        with d_i = u^T g_i v.
        """
        u, v, sigma = sn.vectors()
        v = self._to_patch_order(v)
        if self.rows is not None:
            d = self.rows @ torch.outer(u, v).reshape(-1)
        else:
            Uf = self.Uf if self.Uf is not None else self._patch_rows()
            d = (torch.einsum("mop,o->mp", self.Dt, u) * (Uf @ v).view(self.m, self.P)).sum(1)
        self.sn = (u, v, sigma, c)
        c64, d64, s64 = c.double(), d.double(), sigma.double()
        cd = torch.outer(c64, d64)
        return (Kw - cd - cd.T + (u @ u).double() * (v @ v).double() * torch.outer(c64, c64)) / s64**2

    def _position_rows(self) -> tuple[Tensor, Tensor]:
        """(m P, out) output gradients and (m P, in) inputs, one row per sample and position."""
        return self.Dt.transpose(1, 2).reshape(self.m * self.P, self.out_f), self._patch_rows()

    def weight_kernel(self, budget_bytes: int, keep_bytes: int) -> Tensor:
        """The weight's block of K (float64); keeps the materialised rows if they fit ``keep_bytes``."""
        m, P, out_f, in_f = self.m, self.P, self.out_f, self.in_f
        by_positions = (m * P) ** 2 * (out_f + in_f) / 2
        by_rows = m * out_f * in_f * (P + _MATERIALISE_OVERHEAD) + m * m * out_f * in_f
        if by_positions < by_rows:
            return self._kernel_by_positions()
        return self._kernel_by_rows(budget_bytes, keep_bytes)

    def _kernel_by_positions(self) -> Tensor:
        m, P = self.m, self.P
        Df, Uf = self.Df, self.Uf = self._position_rows()
        bs = max(1, _GRAM_BLOCK_ROWS // P)
        K = torch.empty(m, m, dtype=Df.dtype, device=Df.device)
        for i0 in range(0, m, bs):
            i1 = min(i0 + bs, m)
            for j0 in range(0, i1, bs):
                j1 = min(j0 + bs, m)
                rows_i, rows_j = slice(i0 * P, i1 * P), slice(j0 * P, j1 * P)
                prod = (Df[rows_i] @ Df[rows_j].T) * (Uf[rows_i] @ Uf[rows_j].T)
                blk = prod.view(i1 - i0, P, j1 - j0, P).sum((1, 3))
                K[i0:i1, j0:j1] = blk
                K[j0:j1, i0:i1] = blk.T
        return ((K + K.T) * 0.5).double()

    def _kernel_by_rows(self, budget_bytes: int, keep_bytes: int) -> Tensor:
        m, out_f, in_f = self.m, self.out_f, self.in_f
        U = self._patch_rows().view(m, self.P, in_f)
        row_bytes = m * in_f * self.Dt.element_size()  # one output channel of every sample
        chunk = max(1, min(out_f, budget_bytes // max(row_bytes, 1)))
        K = torch.zeros(m, m, dtype=torch.float64, device=self.Dt.device)
        for o0 in range(0, out_f, chunk):
            rows = self.workspace.get((id(self.mod), "rows"), (m, min(chunk, out_f - o0), in_f), U)
            torch.bmm(self.Dt[:, o0:o0 + chunk], U, out=rows)
            rows = rows.view(m, -1)
            K += sym_gram(rows).double()
            if chunk == out_f and rows.numel() * rows.element_size() <= keep_bytes:
                self.rows = rows  # J^T eta for this weight is then one matrix-vector product
            del rows
        return K

    def jt_eta(self, eta: Tensor) -> dict[int, Tensor]:
        """J^T eta for this layer's trainable weight and bias, keyed by parameter id."""
        mod = self.mod
        e = eta.to(self.Dt)
        out: dict[int, Tensor] = {}
        if self.weight is not None and self.weight.requires_grad:
            if self.rows is not None:
                g = self.rows.T @ e
            else:  # sum_i e_i sum_p delta_ip u_ip^T as one (out, m P) x (m P, in) product
                if self.Df is None or self.Uf is None:
                    self.Df, self.Uf = self._position_rows()
                g = (self.Df * e.repeat_interleave(self.P)[:, None]).T @ self.Uf
            if self.sn is not None:
                u, v, sigma, c = self.sn
                g = (g.reshape(u.shape[0], -1) - (e @ c) * torch.outer(u, v)) / sigma
            out[id(self.weight)] = self._as_weight(g)
        if mod.bias is not None and mod.bias.requires_grad:
            out[id(mod.bias)] = e @ self.dsum
        return out
