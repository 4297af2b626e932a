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
  extra pass), and J^T eta = sum_i eta_i delta_i u_i^T.
* ``"func"``: ``torch.func.vmap(grad)`` over samples, any module (spectral norm, weight
  norm, parametrizations, custom layers), in parameter groups of at most
  ``budget_bytes`` of per-sample gradients.

``"auto"`` uses hooks when every trainable parameter is the ``weight`` or ``bias`` of an
``nn.Linear`` or zero-padded, ungrouped ``nn.Conv2d`` used once per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..errors import GameInputError

__all__ = ["PER_SAMPLE_METHODS", "PerSampleKernel", "ScoreKernel", "check_per_sample_module", "sym_gram"]

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


def _hooks_unsupported(module: nn.Module) -> str | None:
    """Why the hooks route cannot serve ``module`` (None when it can)."""
    for name, mod in module.named_modules():
        own = {k for k, p in mod._parameters.items() if p is not None and p.requires_grad}
        if not own:
            continue
        where = f"layer {name!r} ({type(mod).__name__})" if name else type(mod).__name__
        if isinstance(mod, parametrize.ParametrizationList):
            return f"{where} reparametrises a weight (a parametrization such as spectral_norm or weight_norm)"
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            return f"{where} is not an nn.Linear or nn.Conv2d"
        if own - {"weight", "bias"}:
            return (f"{where} trains {sorted(own - {'weight', 'bias'})}, not its weight directly "
                    "(a reparametrisation such as spectral_norm or weight_norm)")
        if isinstance(mod, nn.Conv2d) and (mod.groups != 1 or mod.padding_mode != "zeros"
                                           or isinstance(mod.padding, str)):
            return f"{where} is grouped, not zero-padded or uses string padding"
    return None


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

    def _require_hooks(self) -> None:
        reason = _hooks_unsupported(self.module)
        if reason is not None:
            raise GameInputError(f"per_sample='hooks' needs every trainable parameter to be the weight or bias of "
                                 f"an nn.Linear or a zero-padded, ungrouped nn.Conv2d, but {reason}; use "
                                 "per_sample='func' (any module) or 'auto'")

    def __call__(self, x: Tensor, keep: bool = False) -> ScoreKernel:
        """K, J w and the scores on x (m, ...); ``keep`` keeps what J^T eta needs."""
        if self.uses_hooks():
            try:
                return self._hooks(x, keep)
            except _ReusedLayer as e:
                if self.method == "hooks":
                    raise GameInputError(f"per_sample='hooks': {e}; use per_sample='func'") from None
        return self._func(x, keep)

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
            for k in names:
                Jk = grads[k].reshape(m, -1)
                K += sym_gram(Jk).double()
                Jw += (Jk @ group[k].reshape(-1)).double()
                if held is not None:
                    held[k] = Jk
                del Jk
            del grads
        if scores is None:  # no trainable parameters
            scores = self.module(x).reshape(m).detach().double()
        jt = None
        if held is not None:
            def jt(eta: Tensor, held: dict[str, Tensor] = held) -> list[Tensor]:
                return [(held[k].T @ eta.to(held[k])).reshape(p.shape) for k, p in params.items()]
        return ScoreKernel(K, Jw, scores, jt)

    # ---------------------------------------------------------- hooks route
    def _layers(self) -> list[nn.Module]:
        return [mod for mod in self.module.modules()
                if any(p is not None and p.requires_grad for p in mod._parameters.values())]

    def _forward(self, x: Tensor, layers: list[nn.Module], copy_outputs: bool) -> tuple[Tensor, dict]:
        """Scores with every layer's (input, output); outputs copied when later layers work in place."""
        seen: dict[nn.Module, tuple[Tensor, Tensor, int]] = {}

        def hook(mod: nn.Module, inp: tuple, out: Tensor) -> Tensor | None:
            if mod in seen:
                raise _ReusedLayer(f"{type(mod).__name__} runs more than once per forward pass (shared weights)")
            seen[mod] = (inp[0].detach(), out, out._version)
            return out.clone() if copy_outputs else None

        handles = [mod.register_forward_hook(hook) for mod in layers]
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
        with torch.enable_grad():
            scores, seen = self._forward(x, layers, copy_outputs=False)
            if any(out._version != v for _, out, v in seen.values()):  # an in-place op changed a layer output
                scores, seen = self._forward(x, layers, copy_outputs=True)
            used = [mod for mod in layers if mod in seen]
            deltas = torch.autograd.grad(scores.sum(), [seen[mod][1] for mod in used], allow_unused=True) \
                if used and scores.requires_grad else []
        parts: list[_LayerFactors] = []
        held_bytes = 0
        for mod, delta in zip(used, deltas):
            a, z, _ = seen[mod]
            if delta is None:
                continue
            lf = _LayerFactors.of(mod, a, delta, m)
            w, b = mod.weight, mod.bias
            w_tr, b_tr = w.requires_grad, b is not None and b.requires_grad
            bias_part = lf.dsum @ b.detach() if b is not None else 0.0
            if w_tr:
                wz = (delta * z.detach()).reshape(m, -1).sum(1) - bias_part  # <delta_i, W u_i> over positions
                Jw += wz.double()
                budget = max(self.budget_bytes - held_bytes, 0) if keep else 0
                K += lf.weight_kernel(self.budget_bytes, budget)
                if lf.rows is not None:
                    held_bytes += lf.rows.numel() * lf.rows.element_size()
            if b_tr:
                K += sym_gram(lf.dsum).double()
                Jw += (lf.dsum @ b.detach()).double()
            if keep:
                parts.append(lf)
            else:
                del lf
        jt = None
        if keep:
            params = self.parameters()

            def jt(eta: Tensor) -> list[Tensor]:
                by_id: dict[int, Tensor] = {}
                for lf in parts:
                    by_id.update(lf.jt_eta(eta))
                return [by_id[id(p)] if id(p) in by_id else torch.zeros_like(p) for p in params.values()]
        return ScoreKernel(K, Jw, scores.detach().double(), jt)


class _LayerFactors:
    """Per-sample gradients of one Linear / Conv2d layer in factored form.

    The gradient of sample i in the weight is D_i^T U_i with D (m, P, out) the output
    gradients and U (m, P, in) the (unfolded) inputs over the layer's P positions.
    """

    def __init__(self, mod: nn.Module, D: Tensor, U: Tensor) -> None:
        self.mod = mod
        self.D, self.U = D, U
        self.dsum = D.sum(1)  # (m, out): the bias gradients
        self.rows: Tensor | None = None  # materialised weight gradients (m, out * in), when kept

    @classmethod
    def of(cls, mod: nn.Module, a: Tensor, delta: Tensor, m: int) -> _LayerFactors:
        if isinstance(mod, nn.Linear):
            return cls(mod, delta.reshape(m, -1, delta.shape[-1]), a.reshape(m, -1, a.shape[-1]))
        U = F.unfold(a, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
        return cls(mod, delta.reshape(m, delta.shape[1], -1).transpose(1, 2), U.transpose(1, 2))

    def weight_kernel(self, budget_bytes: int, keep_bytes: int) -> Tensor:
        """The weight's block of K (float64); keeps the materialised rows if they fit ``keep_bytes``."""
        m, P, out_f = self.D.shape
        in_f = self.U.shape[2]
        by_positions = (m * P) ** 2 * (out_f + in_f) / 2
        by_rows = m * out_f * in_f * (P + _MATERIALISE_OVERHEAD) + m * m * out_f * in_f
        if by_positions < by_rows:
            return self._kernel_by_positions()
        return self._kernel_by_rows(budget_bytes, keep_bytes)

    def _kernel_by_positions(self) -> Tensor:
        m, P, _ = self.D.shape
        Df = self.D.reshape(m * P, -1)
        Uf = self.U.reshape(m * P, -1)
        self.D, self.U = Df.view(m, P, -1), Uf.view(m, P, -1)  # contiguous now; reused by jt_eta
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
        m, P, out_f = self.D.shape
        in_f = self.U.shape[2]
        Dt = self.D.transpose(1, 2)  # (m, out, P)
        row_bytes = m * in_f * self.D.element_size()  # one output channel of every sample
        chunk = max(1, min(out_f, budget_bytes // max(row_bytes, 1)))
        K = torch.zeros(m, m, dtype=torch.float64, device=self.D.device)
        for o0 in range(0, out_f, chunk):
            rows = torch.bmm(Dt[:, o0:o0 + chunk], self.U).reshape(m, -1)
            K += sym_gram(rows).double()
            if chunk == out_f and rows.numel() * rows.element_size() <= keep_bytes:
                self.rows = rows  # J^T eta for this weight is then one matrix-vector product
            del rows
        return K

    def jt_eta(self, eta: Tensor) -> dict[int, Tensor]:
        """J^T eta for this layer's trainable weight and bias, keyed by parameter id."""
        mod = self.mod
        e = eta.to(self.D)
        out: dict[int, Tensor] = {}
        if mod.weight.requires_grad:
            if self.rows is not None:
                g = self.rows.T @ e
            else:  # sum_i e_i D_i^T U_i as one (out, m P) x (m P, in) product
                m, P, out_f = self.D.shape
                g = (self.D * e[:, None, None]).reshape(m * P, out_f).T @ self.U.reshape(m * P, -1)
            out[id(mod.weight)] = g.reshape(mod.weight.shape)
        if mod.bias is not None and mod.bias.requires_grad:
            out[id(mod.bias)] = e @ self.dsum
        return out
