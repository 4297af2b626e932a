"""How SGA should compute J xi: three ways, timed in one run against a plain step.

``A^T xi = (J^T xi - J xi) / 2`` needs the Jacobian-vector product J xi of the game's
gradient field xi. Variants (each returns xi + sign * A^T xi for the alignment sign of
gameopt's SGAOptimizer, and is checked against it):
  plain            first gradients of both players (the unit)
  gameopt          gameopt.SGAOptimizer.backward (row by row as below, with the alignment,
                   statistics and writing p.grad)
  rows             each loss's gradient w.r.t. every player with graph, J^T xi in one pass,
                   row i of J xi as d/dz_i <grad l_i, xi> (three second-order passes)
  trick            the double-backward trick: h = J^T w with create_graph (w = xi as a leaf),
                   J xi = d/dw <h, xi> (two passes, but third-order: torch cannot do it through
                   transposed convolutions with output_padding)
  forward_mode     torch.func: (xi, vjp) = vjp(xi_fn), J^T xi = vjp(xi), J xi = jvp(xi_fn, xi)
                   (forward-over-reverse)

    python benchmarks/sga_jvp_cost/sga_jvp_cost.py --threads 1 --out benchmarks/sga_jvp_cost/results
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vjp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

import gameopt  # noqa: E402
from benchmarks.common.dcgan import dcgan_discriminator, dcgan_generator  # noqa: E402
from gameopt.toy_games import mlp  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402


def build(model: str):
    torch.manual_seed(0)
    if model == "mlp":
        return mlp(16, 2), mlp(2, 1), torch.randn(512, 16), torch.randn(512, 2)
    return dcgan_generator(), dcgan_discriminator(), torch.randn(64, 128), torch.rand(64, 3, 32, 32) * 2 - 1


def variants(G, D, z, x):
    gp, dp = list(G.parameters()), list(D.parameters())
    allp = gp + dp
    opt = gameopt.SGAOptimizer(torch.optim.SGD, gp, dp, lam=1.0, lr=0.0)

    def losses():
        fake = G(z)
        d_fake = D(fake)
        return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()

    def plain():
        lg, ld = losses()
        return list(torch.autograd.grad(lg, gp, retain_graph=True)) + list(torch.autograd.grad(ld, dp))

    def ours():
        opt.zero_grad()
        opt.backward(*losses())
        return [p.grad for p in allp]

    def combine(xi, jt, jx):
        sign = opt.stats.sign
        return [v + sign * 0.5 * (a - b) for v, a, b in zip(xi, jt, jx)]

    def trick():
        lg, ld = losses()
        own = list(torch.autograd.grad(lg, gp, create_graph=True)) + list(torch.autograd.grad(ld, dp, create_graph=True))
        xi = [t.detach() for t in own]
        w = [t.clone().requires_grad_(True) for t in xi]
        h = torch.autograd.grad(own, allp, grad_outputs=w, create_graph=True)
        jx = torch.autograd.grad(h, w, grad_outputs=xi)
        return combine(xi, [t.detach() for t in h], jx)

    def rows():
        lg, ld = losses()
        g_full = torch.autograd.grad(lg, allp, create_graph=True)
        d_full = torch.autograd.grad(ld, allp, create_graph=True, allow_unused=True)
        own = list(g_full[: len(gp)]) + list(d_full[len(gp):])
        xi = [t.detach() for t in own]
        jt = torch.autograd.grad(own, allp, grad_outputs=xi, retain_graph=True)
        pairs = [(t, s) for t, s in zip(d_full, xi) if t is not None]
        jx = list(torch.autograd.grad(g_full, gp, grad_outputs=xi, retain_graph=True))
        jx += list(torch.autograd.grad([t for t, _ in pairs], dp, grad_outputs=[s for _, s in pairs]))
        return combine(xi, jt, jx)

    gnames, dnames = dict(G.named_parameters()), dict(D.named_parameters())

    def xi_fn(g, d):
        def lg(g_):
            return F.softplus(-functional_call(D, d, (functional_call(G, g_, (z,)),))).mean()

        def ld(d_):
            fake = functional_call(G, g, (z,))
            return F.softplus(-functional_call(D, d_, (x,))).mean() + F.softplus(functional_call(D, d_, (fake,))).mean()

        return grad(lg)(g), grad(ld)(d)

    def forward_mode():
        g = {k: v.detach() for k, v in gnames.items()}
        d = {k: v.detach() for k, v in dnames.items()}
        xi, vjp_fn = vjp(xi_fn, g, d)
        jt = vjp_fn(xi)
        _, jx = jvp(xi_fn, (g, d), xi)

        def flat(parts):
            return [t for part in parts for t in part.values()]

        return combine(flat(xi), flat(jt), flat(jx))

    return {"plain": plain, "gameopt": ours, "rows": rows, "trick": trick, "forward_mode": forward_mode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "dcgan", "both"], default="both")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/sga_jvp_cost")
    ap.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = ap.parse_args()
    if args.smoke:
        args.model = "mlp"
    torch.set_num_threads(args.threads)
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": {}}
    for model in (["mlp", "dcgan"] if args.model == "both" else [args.model]):
        fns = variants(*build(model))
        ref = fns["gameopt"]()
        ref = [t.clone() for t in ref]
        err = {}
        for name in ("rows", "trick", "forward_mode"):
            got = fns[name]()
            err[name] = max(float((a - b).abs().max() / (b.abs().max() + 1e-30)) for a, b in zip(got, ref))
        rounds = 2 if args.smoke else (40 if model == "mlp" else 8)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(rounds):   # round-robin, so machine noise hits every variant alike
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        results["results"][model] = {
            "rounds": rounds,
            "max_rel_diff_vs_gameopt": err,
            "median_ms": {k: 1e3 * v for k, v in med.items()},
            "ratio_vs_plain": {k: v / med["plain"] for k, v in med.items()},
        }
        print(model, {k: f"{1e3 * v:.2f} ms ({v / med['plain']:.2f}x)" for k, v in med.items()}, "diff", err)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sga_jvp_cost.json", results)
    print(f"wrote {out}/sga_jvp_cost.json")


if __name__ == "__main__":
    main()
