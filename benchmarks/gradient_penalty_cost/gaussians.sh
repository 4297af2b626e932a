#!/usr/bin/env bash
# The 8-Gaussian comparison of the practitioner's baselines with consensus, seed 0, one thread,
# at equal wall time: the budget is BUDGET consensus steps (default 2000), each method's step count
# the budget times its cost ratio to consensus, measured once in gaussians/step_cost.json.
#   bash benchmarks/gradient_penalty_cost/gaussians.sh                       # 6 methods, budget 2000
#   BUDGET=5000 METHODS="consensus r3gan consensus_r1" bash benchmarks/gradient_penalty_cost/gaussians.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUDGET=${BUDGET:-2000}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}   # PYTHON picks the interpreter
METHODS=${METHODS:-"simga altga consensus consensus_lazy r3gan consensus_r1"}
ALL="simga,altga,consensus,consensus_lazy,r3gan,consensus_r1"
COST=benchmarks/gradient_penalty_cost/gaussians
OUT=$COST/budget$BUDGET
[ -f "$COST/step_cost.json" ] || "$py" benchmarks/family_gaussians/family_gaussians.py cost --methods "$ALL" --threads 1 --out "$COST"
mkdir -p "$OUT"
cp "$COST/step_cost.json" "$OUT/step_cost.json"
for m in $METHODS; do
  "$py" benchmarks/family_gaussians/family_gaussians.py run --method "$m" --seed 0 --budget "$BUDGET" --threads 1 --out "$OUT"
done
"$py" benchmarks/family_gaussians/family_gaussians.py table --out "$OUT"
