#!/usr/bin/env bash
# The stacked-MNIST / MNIST comparison of the README (issue 12), then its tables.
#   bash benchmarks/stacked_mnist/stacked_mnist_suite.sh [steps] [jobs] [out]
# On a shared machine run it as one low-priority background job:
#   nohup nice bash benchmarks/stacked_mnist/stacked_mnist_suite.sh > stacked_mnist_suite.log 2>&1 &
# Each run is one command of benchmarks/common/image_gan.py (printed when it starts; its log goes to
# <out>/<run>.log). Re-running resumes unfinished runs and skips finished ones, so the suite can be
# stopped and started at will. The jobs are listed by priority (seed 0 of every method first).
# Players: Metz et al.'s stacked-MNIST DCGAN, D at 1/2 of G, without batch norm in D
# (unrolled_nobn_d; the dual methods need a D that scores samples independently), batch 64,
# Adam 2e-4 (beta1 0.5) for every method, consensus gamma 1, primal-dual kernel in the LeNet
# features; one CPU thread per run. Equal wall time: each method gets the steps that cost what
# `steps` consensus steps cost, from the ratios in benchmarks/stacked_mnist/results/step_cost
# (measured with benchmarks/common/image_step_cost.py on an otherwise idle machine).
# PYTHON picks the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-3000}; jobs=${2:-2}; out=${3:-runs/stacked_mnist}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$out" runs/mnist
export py out steps PYTHONPATH=.
cost=benchmarks/stacked_mnist/results/step_cost/step_cost.json
# steps of METHOD for the train time of $steps consensus steps (rounded to 100)
et() { "$py" -c "import json; m=json.load(open('$cost'))['methods']; print(int(round($steps * m['consensus']['ms_per_step'] / m['$1']['ms_per_step'], -2)))"; }
one() {
  name=$1; shift
  case $name in
    mnist/*) cmd="$py benchmarks/common/image_gan.py --data mnist --model mnist_dcgan --width 32 --steps $steps --eval-every 1000 --threads 1 --no-progress --pd-features classifier $* --out runs/$name" ; log=runs/$name.log ;;
    *) cmd="$py benchmarks/common/image_gan.py --data stacked_mnist --model unrolled_nobn_d --steps $steps --eval-every 1000 --threads 1 --no-progress --pd-features classifier $* --out $out/$name" ; log=$out/$name.log ;;
  esac
  echo "start: $cmd"
  if $cmd > "$log" 2>&1; then echo "done: $name"; else echo "FAILED: $name (see $log)"; fi
}
gauss() {
  "$py" benchmarks/gamma_sweep/gamma_sweep_gaussians.py --steps 8000 --seeds 0,1,2 --threads 1 \
      --out benchmarks/gamma_sweep/results/eight_gaussians > runs/gamma_sweep_gaussians.log 2>&1 \
    && echo "done: gamma sweep (8 Gaussians)" || echo "FAILED: gamma sweep (see runs/gamma_sweep_gaussians.log)"
}
export -f one gauss
{
  methods="consensus simga altga primal_dual dual_score dual_cost"
  echo "GAUSS"
  for m in $methods; do echo "${m}_s0 --method $m --seed 0"; done
  echo "mnist/altga_s0 --method altga --seed 0"
  echo "mnist/primal_dual_s0 --method primal_dual --seed 0"
  for seed in 1 2; do for m in $methods; do echo "${m}_s$seed --method $m --seed $seed"; done; done
  for m in simga altga dual_score dual_cost; do echo "${m}_et_s0 --method $m --seed 0 --steps $(et $m)"; done
  for m in consensus simga altga primal_dual; do echo "${m}_d4_s0 --method $m --seed 0 --d-scale 0.25"; done
  for optim in adam rmsprop; do   # half length: the sweep ranks gamma, it does not need the final figure
    lr=$([ $optim = adam ] && echo 2e-4 || echo 1e-4)
    for g in 0.1 0.3 1 3 10; do
      echo "consensus_${optim}_g${g}_s0 --method consensus --optim $optim --lr $lr --gamma $g --seed 0 --steps $((steps / 2)) --eval-every 500"
    done
  done
  for seed in 1 2; do for m in altga primal_dual; do echo "mnist/${m}_s$seed --method $m --seed $seed"; done; done
  for seed in 1 2; do for m in simga altga dual_score dual_cost; do echo "${m}_et_s$seed --method $m --seed $seed --steps $(et $m)"; done; done
  for m in consensus simga altga primal_dual; do echo "${m}_bnd_s0 --method $m --seed 0 --model unrolled"; done
} | while read -r line; do
  if [ "$line" = GAUSS ]; then echo "gauss"; else echo "one $line"; fi
done | xargs -P "$jobs" -L 1 bash -c '"$@"' _
"$py" benchmarks/common/image_table.py "$out"/*/ --out benchmarks/stacked_mnist/results --published stacked_mnist
"$py" benchmarks/common/image_table.py runs/mnist/*/ --out benchmarks/mnist/results --published mnist
