"""The MNIST gamma sweep as one table and one figure: strict metrics against gamma, per optimiser.

    python benchmarks/gamma_sweep/gamma_table_mnist.py benchmarks/gamma_sweep/results/mnist/rescore/seeds.json \\
        --baseline benchmarks/mnist/results/rescore/seeds.json:altga --out benchmarks/gamma_sweep/results/mnist/rescore

Reads a ``seeds.json`` written by ``benchmarks/rescore_samples/seed_summary.py`` whose groups are
named ``consensus-<optim>-g<gamma>`` (the sweep's sample files); ``--alias NAME=consensus-adam-g1``
maps another group onto a cell (default: the MNIST study's ``consensus`` runs are Adam at gamma 1).
``--baseline FILE:METHOD`` adds a reference row (for example AltGA from the MNIST study, scored
against the same real-data reference). Writes ``gamma.json`` (with a provenance record),
``gamma.md`` (mean +- sample sd over seeds, then the per-seed values) and ``gamma.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.common.provenance import write_json  # noqa: E402
from benchmarks.rescore_samples.seed_summary import summarise  # noqa: E402

#: (column title, seeds.json metric, decimals); the first three are the judging metrics (agreed: strict
#: under both classifiers with the same label, the claim that holds only where both agree)
COLUMNS = (("agreed strict frac", "agreed_strict_fraction", 3), ("strict frac L", "strict_fraction", 3),
           ("strict frac C", "second_strict_fraction", 3),
           ("FD L", "frechet_distance", 1), ("FD C", "second_frechet_distance", 1), ("recall L", "recall", 2))
NAME = re.compile(r"^consensus-(?P<optim>[a-z]+)-g(?P<gamma>[0-9.]+)$")


def _name(group: dict[str, Any]) -> str:
    """A group's method without the folder the re-score prefixes (``samples/consensus`` -> ``consensus``)."""
    return group["method"].rsplit("/", 1)[-1]


def cells(groups: list[dict[str, Any]], aliases: dict[str, str]) -> dict[tuple[str, float], dict[str, Any]]:
    """Map (optimiser, gamma) to its seeds.json group; raises ValueError if a cell is filled twice."""
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for g in groups:
        name = _name(g)
        m = NAME.match(aliases.get(name, name))
        if not m:
            continue
        key = (m["optim"], float(m["gamma"]))
        if key in out:
            raise ValueError(f"{key[0]} gamma {key[1]:g} appears twice ({out[key]['method']} and {g['method']})")
        out[key] = g
    return out


def _fmt(stat: dict[str, Any] | None, digits: int) -> str:
    if not stat:
        return ""
    text = f"{stat['mean']:.{digits}f}"
    return text if stat.get("sd") is None else f"{text} +- {stat['sd']:.{digits}f}"


def table(grid: dict[tuple[str, float], dict[str, Any]], baseline: dict[str, Any] | None) -> str:
    head = "| optimiser | gamma | seeds | " + " | ".join(c[0] for c in COLUMNS) + " | agreed strict frac per seed |"
    lines = [head, "|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    rows = [(k, grid[k]) for k in sorted(grid)]
    if baseline is not None:
        rows.append(((_name(baseline), None), baseline))
    for (optim, gamma), g in rows:
        per_seed = ", ".join(f"{v:.3f}" for v in g.get("agreed_strict_fraction", {}).get("values", []))
        lines.append(f"| {optim} | {'-' if gamma is None else f'{gamma:g}'} | {','.join(map(str, g['seeds']))} | "
                     + " | ".join(_fmt(g.get(k), d) for _, k, d in COLUMNS) + f" | {per_seed} |")
    return "\n".join(lines) + "\n"


def figure(grid: dict[tuple[str, float], dict[str, Any]], baseline: dict[str, Any] | None, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, (title, key, _) in zip(axes, COLUMNS[:3]):
        for optim, colour in (("adam", "tab:blue"), ("rmsprop", "tab:orange")):
            keys = sorted(k for k in grid if k[0] == optim and key in grid[k])
            if not keys:
                continue
            gammas = [k[1] for k in keys]
            ax.plot(gammas, [grid[k][key]["mean"] for k in keys], "-", color=colour, label=f"consensus, {optim}")
            for k in keys:
                vals = grid[k][key]["values"]
                ax.plot([k[1]] * len(vals), vals, "o", color=colour, alpha=0.5, ms=4)
        if baseline is not None and key in baseline:
            b = baseline[key]
            ax.axhspan(b["min"], b["max"], color="grey", alpha=0.25,
                       label=f"{_name(baseline)} (seed range)")
        ax.set_xscale("log")
        ax.set_xlabel("gamma")
        ax.set_title(f"{title} (2,000 samples; dots: seeds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("strict fraction")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _smoke_seeds(out: Path) -> Path:
    rows = [{"data": "mnist", "method": f"samples/consensus-{o}-g{g}_s{seed}",
             **{k: 0.5 + 0.01 * i + 0.02 * seed for i, (_, k, _) in enumerate(COLUMNS)}}
            for o in ("adam", "rmsprop") for g in ("0.3", "3") for seed in (0, 1)]
    rows.append({"data": "mnist", "method": "samples/consensus_s0", "strict_fraction": 0.7, "second_strict_fraction": 0.6})
    path = out / "smoke_seeds.json"
    path.write_text(json.dumps({"groups": summarise(rows)}))
    return path


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seeds", type=Path, nargs="?", help="a seeds.json from seed_summary.py")
    ap.add_argument("--alias", action="append", default=[], metavar="NAME=consensus-<optim>-g<gamma>",
                    help="read group NAME as that cell (default: consensus=consensus-adam-g1)")
    ap.add_argument("--baseline", default=None, metavar="FILE:METHOD", help="a reference row from another seeds.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="a made-up seeds.json, to check the script runs")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.seeds = _smoke_seeds(args.out)
    if args.seeds is None:
        ap.error("give a seeds.json (or --smoke)")
    aliases = dict(a.split("=", 1) for a in (args.alias or ["consensus=consensus-adam-g1"]))
    try:
        grid = cells(json.loads(args.seeds.read_text())["groups"], aliases)
    except ValueError as err:
        raise SystemExit(f"gamma_table_mnist: {err}") from None
    if not grid:
        raise SystemExit(f"gamma_table_mnist: no group in {args.seeds} is named consensus-<optim>-g<gamma>")
    baseline = None
    if args.baseline:
        file, _, method = args.baseline.rpartition(":")
        found = [g for g in json.loads(Path(file).read_text())["groups"] if _name(g) == method]
        if not found:
            raise SystemExit(f"gamma_table_mnist: no group {method!r} in {file}")
        baseline = found[0]
    md = table(grid, baseline)
    write_json(args.out / "gamma.json", {"source": str(args.seeds), "baseline": args.baseline,
                                         "cells": [{"optim": o, "gamma": g, **grid[(o, g)]} for o, g in sorted(grid)]})
    (args.out / "gamma.md").write_text(md)
    figure(grid, baseline, args.out / "gamma.png")
    print(md)
    return md


if __name__ == "__main__":
    main()
