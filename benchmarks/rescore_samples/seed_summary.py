"""One row per method over its seeds, from a re-score's ``summary.json``.

    python benchmarks/rescore_samples/seed_summary.py benchmarks/mnist/results/rescore/summary.json \\
        --out benchmarks/mnist/results/rescore

Rows are grouped by data set and by the file name without its ``_s<seed>`` suffix (so
``consensus_ema_s1`` joins ``consensus_ema``). Each metric gets its per-seed values (in seed order),
mean, sample standard deviation (n - 1; ``null`` for one seed), min and max. Writes ``seeds.json``
(with a provenance record) and ``seeds.md`` (mean +- sd, then the seeds).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.common.provenance import write_json  # noqa: E402

#: the metrics summarised, in table order (a metric a row lacks is skipped for that row's group)
METRICS = ("agreed_strict_modes", "strict_modes", "second_strict_modes", "strict_fraction",
           "second_strict_fraction", "modes_covered", "frechet_distance", "second_frechet_distance",
           "precision", "recall", "strict_kl", "agreed_strict_fraction")
SEED = re.compile(r"^(?P<method>.+)_s(?P<seed>\d+)$")


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group re-score rows by (data, method without seed); raises ValueError on a repeated seed."""
    groups: dict[tuple[str, str], dict[int | None, dict[str, Any]]] = {}
    for row in rows:
        m = SEED.match(row["method"])
        method, seed = (m["method"], int(m["seed"])) if m else (row["method"], None)
        seeds = groups.setdefault((row["data"], method), {})
        if seed in seeds:
            raise ValueError(f"{row['data']} {method}: seed {seed} appears twice in the re-score "
                             f"({seeds[seed].get('file')} and {row.get('file')}); re-score each file once")
        seeds[seed] = row
    out = []
    for (data, method), seeds in groups.items():
        order = sorted(seeds, key=lambda s: -1 if s is None else s)
        group: dict[str, Any] = {"data": data, "method": method, "seeds": [s for s in order if s is not None],
                                 "n": seeds[order[0]].get("n")}
        for key in METRICS:
            values = [seeds[s][key] for s in order if seeds[s].get(key) is not None]
            if not values:
                continue
            group[key] = {"values": values, "mean": statistics.fmean(values),
                          "sd": statistics.stdev(values) if len(values) > 1 else None,
                          "min": min(values), "max": max(values)}
        out.append(group)
    return out


def _cell(stat: dict[str, Any] | None, digits: int) -> str:
    if stat is None:
        return ""
    text = f"{stat['mean']:.{digits}f}"
    return text if stat["sd"] is None else f"{text} +- {stat['sd']:.{digits}f}"


def table(groups: list[dict[str, Any]]) -> str:
    cols = [("agreed strict", "agreed_strict_modes", 0), ("strict L", "strict_modes", 0),
            ("strict C", "second_strict_modes", 0), ("strict frac L", "strict_fraction", 2),
            ("strict frac C", "second_strict_fraction", 2), ("FD L", "frechet_distance", 1),
            ("FD C", "second_frechet_distance", 1), ("recall L", "recall", 2)]
    lines = []
    for data in dict.fromkeys(g["data"] for g in groups):
        lines += [f"### {data} (mean +- sd over seeds; sample standard deviation)", "",
                  "| method | seeds | " + " | ".join(c[0] for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for g in (g for g in groups if g["data"] == data):
            seeds = ",".join(map(str, g["seeds"])) or "-"
            lines.append(f"| {g['method']} | {seeds} | " + " | ".join(_cell(g.get(k), d) for _, k, d in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("summary", type=Path, help="a summary.json written by rescore.py")
    ap.add_argument("--out", type=Path, required=True, help="folder for seeds.json and seeds.md")
    args = ap.parse_args(argv)
    try:
        groups = summarise(json.loads(args.summary.read_text())["rows"])
    except ValueError as err:
        raise SystemExit(f"seed_summary: {err}") from None
    path = write_json(args.out / "seeds.json", {"source": str(args.summary), "groups": groups})
    (args.out / "seeds.md").write_text(table(groups))
    print(f"wrote {path} and {args.out / 'seeds.md'}")
    return path


if __name__ == "__main__":
    main()
