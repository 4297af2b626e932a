"""Equal-wall-time comparison of the standard-size grid: each run read at the reference's train time.

    python benchmarks/stacked_mnist/equal_time.py \\
        benchmarks/stacked_mnist/results/step_cost_dcgan28/step_cost.json \\
        benchmarks/stacked_mnist/results/step_cost_dcgan28_nobn_d/step_cost.json \\
        --runs benchmarks/stacked_mnist/results/dcgan28_runs --out benchmarks/stacked_mnist/results/equal_time

The step costs come from ``benchmarks/common/image_step_cost.py`` (one per pair of players, every
method timed interleaved in one run on an idle thread, ``--reference altga --reference-steps
12000``). The train time of the reference's 12,000 steps is the budget; a method whose step costs
``r`` times the reference's gets ``12000 / r`` steps of it. Each committed run history
(``metrics.json``, evaluated every 2,000 steps on 2,000 samples) of the grid's length (the
reference's steps; shorter probes are left out) is read at that step, linearly
interpolated between the two evaluations around it (both are kept in the JSON). A run shorter than
its budget (a method cheaper than the reference) is read at its last step and flagged: it would
need a longer run to use its time. The wall clock recorded inside the runs is not used: two runs
shared the machine, so their clocks include each other's load.

Writes ``equal_time.json`` (per run, then per method over seeds, with a provenance record) and
``equal_time.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.common.provenance import write_json  # noqa: E402

#: history metrics read at the budget (the runner's names; ``ema_`` versions where the run kept an EMA)
METRICS = ("agreed_strict_modes", "strict_modes", "second_strict_modes", "strict_fraction",
           "second_strict_fraction", "agreed_strict_fraction", "modes_covered", "frechet_distance")


def _players(model: str, d_width: Any) -> str:
    return model if d_width is None else f"{model} (D width {d_width})"


def load_costs(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Step-cost records by players (``model``, and D's width where the timing set ``--d-width``);
    each must share one reference and reference length."""
    costs: dict[str, dict[str, Any]] = {}
    for path in paths:
        record = json.loads(path.read_text())
        ref = record["reference"]
        if ref not in record["methods"]:
            raise ValueError(f"{path}: the reference {ref!r} was not timed")
        argv = record.get("runner_args", [])
        d_width = int(argv[argv.index("--d-width") + 1]) if "--d-width" in argv else None
        costs[_players(record["model"], d_width)] = record
    refs = {(r["reference"], r["reference_steps"]) for r in costs.values()}
    if len(refs) > 1:
        raise ValueError(f"step-cost files disagree on the reference: {sorted(refs)}")
    return costs


def at_step(history: list[dict[str, Any]], step: float, key: str) -> dict[str, Any] | None:
    """``key`` at ``step``, linear between the evaluations around it; ``None`` if never evaluated."""
    rows = [h for h in history if h.get(key) is not None]
    if not rows:
        return None
    below = max((h for h in rows if h["step"] <= step), key=lambda h: h["step"], default=rows[0])
    above = min((h for h in rows if h["step"] >= step), key=lambda h: h["step"], default=rows[-1])
    if above["step"] == below["step"]:
        value = float(below[key])
    else:
        w = (step - below["step"]) / (above["step"] - below["step"])
        value = (1 - w) * float(below[key]) + w * float(above[key])
    return {"value": value, "between": [[below["step"], below[key]], [above["step"], above[key]]]}


# settings that repeat a player's update within a step, so change its cost
REPEATS = ("gen_steps", "disc_steps")


def read_run(path: Path, costs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """One run's row at equal time; ``None`` when its players or method were not timed or it is not
    of the grid's length (the reference's steps)."""
    record = json.loads((path / "metrics.json").read_text())
    s = record["settings"]
    cost = costs.get(_players(s["model"], s.get("d_width")))
    # the folder is <players>_<name>_s<seed>; name is the method or METHOD-VARIANT
    name = path.name[len(s["model"]) + 1:].rsplit("_s", 1)[0]
    # a variant timed on its own (image_step_cost.py --variant NAME=...) has its own cost; one that
    # repeats a player's update is not costed as its method
    timed_as = name if cost is not None and name in cost["methods"] else s["method"]
    if timed_as == s["method"] and any(s.get(k, 1) != 1 for k in REPEATS):
        return None
    if cost is None or timed_as not in cost["methods"]:
        return None
    ref_ms = cost["methods"][cost["reference"]]["ms_per_step"]
    ms = cost["methods"][timed_as]["ms_per_step"]
    budget = cost["reference_steps"] * ref_ms / ms
    history = record["history"]
    last = max(h["step"] for h in history)
    if last != cost["reference_steps"]:
        return None  # a probe of another length, not a row of the grid
    step = min(budget, last)
    row: dict[str, Any] = {"run": path.name, "players": _players(s["model"], s.get("d_width")),
                           "d_width": s.get("d_width"), "name": name, "method": s["method"],
                           "seed": s["seed"], "ratio_to_reference": ms / ref_ms, "budget_steps": budget,
                           "read_at_step": step, "run_steps": last, "used_its_budget": budget <= last}
    for prefix in ("", "ema_"):
        for key in METRICS:
            got = at_step(history, step, prefix + key)
            if got is not None:
                row[prefix + key] = got["value"]
                row[prefix + key + "_between"] = got["between"]
            final = at_step(history, last, prefix + key)
            if final is not None:
                row["equal_steps_" + prefix + key] = final["value"]
    return row


def groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample sd over seeds per (players, name)."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["players"], r["name"]), []).append(r)
    out = []
    for (players, name), rs in by.items():
        rs.sort(key=lambda r: r["seed"])
        g: dict[str, Any] = {"players": players, "name": name, "seeds": [r["seed"] for r in rs],
                             "ratio_to_reference": rs[0]["ratio_to_reference"],
                             "read_at_step": rs[0]["read_at_step"],
                             "used_its_budget": all(r["used_its_budget"] for r in rs)}
        keys = dict.fromkeys(k for r in rs for k in r if k.removeprefix("equal_steps_").removeprefix("ema_") in METRICS)
        for key in keys:   # an older run's history may lack a metric: each statistic names its seeds
            have = [r for r in rs if key in r]
            values = [r[key] for r in have]
            g[key] = {"values": values, "seeds": [r["seed"] for r in have], "mean": statistics.fmean(values),
                      "sd": statistics.stdev(values) if len(values) > 1 else None}
        out.append(g)
    return out


def _cell(stat: dict[str, Any] | None, digits: int, seeds: list[int]) -> str:
    if not stat:
        return ""
    text = f"{stat['mean']:.{digits}f}"
    text = text if stat["sd"] is None else f"{text} +- {stat['sd']:.{digits}f}"
    return text if stat["seeds"] == seeds else f"{text} (seeds {','.join(map(str, stat['seeds']))})"


def table(gs: list[dict[str, Any]], reference: str, reference_steps: int) -> str:
    lines = [f"Budget: the train time of {reference_steps:,} {reference} steps on the same players (one thread). "
             "Mean +- sample sd over seeds; values between evaluations are interpolated linearly.", "",
             "| players | method | seeds | step cost / reference | steps in budget | agreed strict modes | "
             "strict modes L | strict frac L | FD L | agreed strict modes at equal steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in gs:
        steps = f"{g['read_at_step']:,.0f}" + ("" if g["used_its_budget"] else " (run ended before its budget)")
        lines.append(f"| {g['players']} | {g['name']} | {','.join(map(str, g['seeds']))} | "
                     f"{g['ratio_to_reference']:.2f} | {steps} | {_cell(g.get('agreed_strict_modes'), 0, g['seeds'])} | "
                     f"{_cell(g.get('strict_modes'), 0, g['seeds'])} | {_cell(g.get('strict_fraction'), 3, g['seeds'])} | "
                     f"{_cell(g.get('frechet_distance'), 1, g['seeds'])} | {_cell(g.get('equal_steps_agreed_strict_modes'), 0, g['seeds'])} |")
    return "\n".join(lines) + "\n"


def _smoke_inputs(out: Path) -> tuple[list[Path], Path]:
    runs = out / "smoke_runs"
    cost = {"model": "dcgan28_nobn_d", "reference": "altga", "reference_steps": 4000,
            "methods": {"altga": {"ms_per_step": 100.0}, "consensus": {"ms_per_step": 250.0}}}
    (out / "smoke_cost.json").write_text(json.dumps(cost))
    for method in ("altga", "consensus"):
        for seed in (0, 1):
            d = runs / f"dcgan28_nobn_d_{method}_s{seed}"
            d.mkdir(parents=True, exist_ok=True)
            hist = [{"step": s, **{k: s / 100 + seed for k in METRICS}} for s in (0, 2000, 4000)]
            d.joinpath("metrics.json").write_text(json.dumps(
                {"settings": {"model": "dcgan28_nobn_d", "method": method, "seed": seed}, "history": hist}))
    return [out / "smoke_cost.json"], runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step_costs", type=Path, nargs="*", help="step_cost.json files, one per pair of players")
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/stacked_mnist/results/dcgan28_runs"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="made-up histories and costs, to check the script runs")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.step_costs, args.runs = _smoke_inputs(args.out)
    if not args.step_costs:
        ap.error("give at least one step_cost.json (or --smoke)")
    try:
        costs = load_costs(args.step_costs)
    except ValueError as err:
        raise SystemExit(f"equal_time: {err}") from None
    rows = [r for p in sorted(args.runs.iterdir()) if (p / "metrics.json").is_file()
            for r in [read_run(p, costs)] if r is not None]
    # runs on a narrower D after the full-width ones, so that timing one later appends its groups
    # instead of renumbering those already quoted (``altga-dwidth32`` sorts before ``altga_s0``)
    rows.sort(key=lambda r: r["d_width"] is not None)
    if not rows:
        raise SystemExit(f"equal_time: no run under {args.runs} has players and a method timed in {args.step_costs}")
    ref = next(iter(costs.values()))
    gs = groups(rows)
    record = {"meta": {"reference": ref["reference"], "reference_steps": ref["reference_steps"],
                       "step_costs": [str(p) for p in args.step_costs], "smoke": args.smoke},
              "groups": gs, "rows": rows}
    write_json(args.out / "equal_time.json", record)
    text = table(gs, ref["reference"], ref["reference_steps"])
    (args.out / "equal_time.md").write_text(text)
    print(text)
    return record


if __name__ == "__main__":
    main()
