#!/usr/bin/env bash
# The stacked-digits comparison of the README: every method x seeds 0-2, then the table.
#   bash benchmarks/stacked_digits/stacked_digits_suite.sh [steps] [jobs] [out]
# Each run is one command of benchmarks/common/image_gan.py (printed before it starts; its log goes to
# <out>/<run>.log). Re-running resumes unfinished runs and skips finished ones. All methods share
# the players (DCGAN-like, no batch norm, 16x16, width 32), batch 64 and Adam 2e-4 (beta1 0.5);
# one CPU thread per run. PYTHON picks the interpreter (default: .venv/bin/python, else python3).
# Besides the main grid: SimGA and AltGA for as many steps as consensus takes in the same time
# (a consensus step costs about 2.5 SimGA or 2 AltGA steps here), consensus with the paper's
# gamma 10, AltGA with batch norm (the consensus paper's Fig. 5 baseline), and the 4-conv players.
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-3000}; jobs=${2:-2}; out=${3:-runs/stacked_digits}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$out"
export py out steps
one() {
  name=$1; shift
  cmd="$py benchmarks/common/image_gan.py --data stacked_digits --size 16 --model dcgan --steps $steps --optim adam --lr 2e-4 --threads 1 --no-progress $* --out $out/$name"
  echo "start: $cmd"
  if $cmd > "$out/$name.log" 2>&1; then echo "done: $name"; else echo "FAILED: $name (see $out/$name.log)"; fi
}
export -f one
{
  for seed in 0 1 2; do
    echo "simga_s$seed --method simga --seed $seed"
    echo "altga_s$seed --method altga --seed $seed"
    echo "consensus_g1_s$seed --method consensus --gamma 1 --seed $seed"
    echo "primal_dual_s$seed --method primal_dual --seed $seed"
    echo "dual_score_s$seed --method dual_score --seed $seed"
    echo "dual_cost_s$seed --method dual_cost --seed $seed"
  done
  echo "consensus_g10_s0 --method consensus --gamma 10 --seed 0"
  for seed in 0 1 2; do   # equal wall time: later --steps override the first
    echo "simga_long_s$seed --method simga --seed $seed --steps $((steps * 5 / 2))"
    echo "altga_long_s$seed --method altga --seed $seed --steps $((steps * 2))"
  done
  echo "altga_bn_s0 --method altga --model dcgan_bn --seed 0"
  echo "consensus_g1_conv4_s0 --method consensus --gamma 1 --model conv4 --seed 0"
  echo "altga_conv4_s0 --method altga --model conv4 --seed 0"
} | xargs -P "$jobs" -L 1 bash -c 'one "$@"' _
"$py" benchmarks/common/image_table.py "$out"/*/ --out benchmarks/stacked_digits/results
