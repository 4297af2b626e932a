"""Data-parallel consensus optimisation (with the primal-dual regulariser) under torchrun.

The 8-Gaussian GAN of "The Numerics of GANs", trained on R processes: every step
draws one global batch (same seed on every rank), each rank takes its 1/R share,
and ``ConsensusOptimizer(distributed=True)`` plus ``PrimalDualRegularizer(distributed=True)``
do the reductions, so the run is the full-batch run. ``--verify`` makes rank 0
retrain on the whole batch in one process afterwards and print the largest
parameter difference (float64 for the check: it is 0 up to rounding).

    torchrun --nproc_per_node=2 examples/distributed_consensus.py --steps 200 --verify

Backend: NCCL when CUDA is available (one GPU per rank, by LOCAL_RANK), else gloo.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

import gameopt
from gameopt.toy_games import mixture_metrics, mlp, ring_centers, sample_mixture


def train(args, device: torch.device, rank: int, world: int, distributed: bool) -> list[torch.Tensor]:
    torch.manual_seed(args.seed)  # identical initial parameters on every rank
    G = mlp(args.z_dim, 2).to(device, args.dtype)
    D = mlp(2, 1).to(device, args.dtype)
    opt = gameopt.ConsensusOptimizer(torch.optim.RMSprop, G.parameters(), D.parameters(), gamma=args.gamma,
                                     lr=args.lr, distributed=distributed)
    reg = gameopt.PrimalDualRegularizer("js", alpha=args.alpha, bandwidth=args.bandwidth, distributed=distributed)
    centers = ring_centers(8, 1.0)
    data_rng = torch.Generator().manual_seed(args.seed + 1)  # the same global batch on every rank
    share = args.batch // world
    start = time.perf_counter()
    for step in range(args.steps):
        x = sample_mixture(args.batch, centers, 0.01, data_rng).to(args.dtype)
        z = torch.randn(args.batch, args.z_dim, generator=data_rng, dtype=args.dtype)
        x, z = (t[rank * share:(rank + 1) * share].to(device) for t in (x, z))
        fake = G(z)
        d_fake, d_real = D(fake), D(x)
        gen_loss = F.softplus(-d_fake).mean()
        if args.alpha > 0:
            gen_loss = gen_loss + reg(x, fake, d_real)
        disc_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt.zero_grad()
        opt.backward(gen_loss, disc_loss)
        opt.step()
        reg.step()
        if rank == 0 and distributed and (step % max(1, args.steps // 5) == 0 or step == args.steps - 1):
            print(f"step {step:5d}  gen_loss {gen_loss.item():.4f}  disc_loss {disc_loss.item():.4f}  "
                  f"({(time.perf_counter() - start) / (step + 1) * 1e3:.1f} ms/step)", flush=True)
    if rank == 0 and distributed:
        with torch.no_grad():
            s = G(torch.randn(2000, args.z_dim, generator=torch.Generator().manual_seed(0), dtype=args.dtype)
                  .to(device))
        print("samples:", mixture_metrics(s.float().cpu(), centers, 0.01).as_dict(), flush=True)
    return [p.detach().cpu() for p in list(G.parameters()) + list(D.parameters())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=512, help="global batch, split evenly over the ranks")
    ap.add_argument("--z-dim", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--gamma", type=float, default=10.0)
    ap.add_argument("--alpha", type=float, default=1.0, help="primal-dual regulariser step (0: off)")
    ap.add_argument("--bandwidth", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify", action="store_true", help="rank 0 reruns on the full batch in one process (float64)")
    args = ap.parse_args()
    args.dtype = torch.float64 if args.verify else torch.float32

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the number of processes ({world})")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        torch.set_num_threads(1)
        device = torch.device("cpu")
    try:
        if rank == 0:
            print(f"{world} processes, backend {dist.get_backend()}, global batch {args.batch} "
                  f"({args.batch // world} per rank)", flush=True)
        params = train(args, device, rank, world, distributed=True)
        if args.verify and rank == 0:
            with warnings.catch_warnings():  # one process on purpose: no "pass distributed=True" warning
                warnings.filterwarnings("ignore", message=".*distributed=False")
                single = train(args, device, 0, 1, distributed=False)
            diff = max(float((a - b).abs().max()) for a, b in zip(params, single))
            print(f"verify: max |param(distributed) - param(one process, full batch)| = {diff:.3g}", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
