"""Per-step cost of every image-benchmark method on the same players, for equal-wall-time runs.

    OMP_NUM_THREADS=1 python benchmarks/common/image_step_cost.py --data stacked_mnist --model unrolled_nobn_d \\
        --threads 1 --out benchmarks/stacked_mnist/results/step_cost

Builds each method exactly as ``benchmarks/common/image_gan.py`` does (same argument parser, so any
runner option can be passed after the script's own), warms it up, then times ``--rounds``
rounds of ``--steps`` training steps, the methods interleaved within each round so that a change
in machine load hits all of them alike. Reports the median ms per step, the ratio to
``--reference`` (consensus by default), and the steps each method gets for the train time of
``--reference-steps`` reference steps (what the suites pass as ``--steps`` for the
equal-wall-time rows). ``--variant LABEL="METHOD OPTIONS"`` adds a method with options of its own
(``--variant "altga_g2=altga --gen-steps 2"``), timed in the same rounds. Run it on an otherwise idle machine (nothing else busy, ``OMP_NUM_THREADS=1``): times measured
inside background jobs include pauses and contention.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common
from benchmarks.common import image_gan  # noqa: E402
from benchmarks.common.image_methods import METHODS  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402


def _variant(text: str) -> tuple[str, list[str]]:
    label, sep, spec = text.partition("=")
    words = shlex.split(spec)
    if not sep or not label or not words:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: give LABEL=\"METHOD OPTIONS\", e.g. \"altga_g2=altga --gen-steps 2\"")
    return label, words


def build(runner_argv: list[str], method: str):
    args = image_gan.parse_args(runner_argv + ["--method", method, "--out", "/dev/null"])
    game = image_gan.ImageGame(args)
    args.image_numel = math.prod(game.shape)
    torch.manual_seed(args.seed)
    G, D = image_gan.build_models(args, game.shape)
    args.pd_feature_map = image_gan.primal_dual_features(args, game)
    return args, game, image_gan.build_method(G, D, args)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reference", default="consensus")
    ap.add_argument("--reference-steps", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", type=_variant, action="append", default=[],
                    help='LABEL="METHOD OPTIONS": also time METHOD with runner options of its own (repeatable)')
    ap.add_argument("--out", default="runs/image_step_cost")
    own, runner_argv = ap.parse_known_args(argv)
    torch.set_num_threads(own.threads)
    variants = dict(own.variant)
    methods = own.methods.split(",") + list(variants)
    if len(set(methods)) != len(methods):
        ap.error(f"--methods and --variant labels repeat a name: {methods}")
    built = {m: build(runner_argv + variants[m][1:], variants[m][0]) if m in variants else build(runner_argv, m)
             for m in methods}
    gens = {m: (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)) for m in methods}

    def steps(m: str, n: int) -> float:
        args, game, method = built[m]
        dg, zg = gens[m]
        batches = [(game.sample(args.batch, dg), torch.randn(args.batch, args.z_dim, generator=zg)) for _ in range(n)]
        t0 = time.perf_counter()
        for real, z in batches:
            method.step(real, z)
        return (time.perf_counter() - t0) / n

    for m in methods:
        steps(m, own.warmup)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(own.rounds):
        for m in methods:
            times[m].append(steps(m, own.steps))
    ms = {m: 1000 * statistics.median(t) for m, t in times.items()}
    ref = ms.get(own.reference, min(ms.values()))
    rows = {m: {"ms_per_step": round(ms[m], 2), "ratio_to_reference": round(ms[m] / ref, 3),
                "equal_time_steps": int(round(own.reference_steps * ref / ms[m], -2))} for m in methods}
    args0 = built[methods[0]][0]
    result = {"data": args0.data, "model": args0.model, "batch": args0.batch, "threads": own.threads,
              "reference": own.reference, "reference_steps": own.reference_steps, "rounds": own.rounds,
              "steps_per_round": own.steps, "runner_args": runner_argv, "variants": variants, "methods": rows,
              "all_ms": {m: [round(1000 * t, 2) for t in v] for m, v in times.items()}}
    out = Path(own.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "step_cost.json", result, device=args0.device)
    print(f"{args0.data}/{args0.model}, batch {args0.batch}, {own.threads} thread(s); median of {own.rounds} rounds x {own.steps} steps")
    print(f"{'method':<14}{'ms/step':>10}{'x ' + own.reference:>16}{'equal-time steps':>18}")
    for m, r in rows.items():
        print(f"{m:<14}{r['ms_per_step']:>10.1f}{r['ratio_to_reference']:>16.2f}{r['equal_time_steps']:>18}")
    print(f"wrote {out / 'step_cost.json'}")
    return result


if __name__ == "__main__":
    main()
