#!/usr/bin/env bash
# The family comparison on stacked digits at equal wall time: every method x seeds 0-2.
#   bash benchmarks/stacked_digits_family/stacked_digits_family.sh WORKER WORKERS [out]
# Worker WORKER (0-based) of WORKERS runs every WORKERS-th run of the list. Settings as
# benchmarks/stacked_digits/stacked_digits_suite.sh (DCGAN-like 16x16 players, width 32, batch 64, Adam 2e-4,
# beta1 0.5, 1 thread). Steps per method: the train time of 3000 consensus steps, from
# benchmarks/stacked_digits_family/results/step_cost/step_cost.json (measured by
# benchmarks/common/image_step_cost.py on an otherwise idle machine). Six evaluations per run, at the same
# fractions of the time budget. Re-running resumes unfinished runs and skips finished ones.
set -uo pipefail
cd "$(dirname "$0")/../.."
w=$1; n=$2; out=${3:-runs/stacked_digits_family}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
cost=benchmarks/stacked_digits_family/results/step_cost/step_cost.json
mkdir -p "$out"
steps_of() { "$py" -c "import json,sys; print(json.load(open('$cost'))['methods'][sys.argv[1]]['equal_time_steps'])" "$1"; }
runs=()
for seed in 0 1 2; do
  for m in consensus simga altga extragradient optimistic sga lookahead lookahead_eg consensus_lazy cgd acgd; do
    runs+=("$m $seed")
  done
done
i=0
for r in "${runs[@]}"; do
  if [ $((i % n)) -eq "$w" ]; then
    set -- $r
    m=$1; seed=$2; steps=$(steps_of "$m"); every=$((steps / 6))
    cmd="$py benchmarks/common/image_gan.py --data stacked_digits --size 16 --model dcgan --steps $steps --eval-every $every --ckpt-every $every --optim adam --lr 2e-4 --threads 1 --no-progress --method $m --seed $seed --out $out/${m}_s$seed"
    echo "start: $cmd"
    if $cmd > "$out/${m}_s$seed.log" 2>&1; then echo "done: ${m}_s$seed"; else echo "FAILED: ${m}_s$seed"; fi
  fi
  i=$((i + 1))
done
echo ALL DONE
