#!/usr/bin/env bash
# Issue 19 item 7: plain MNIST at more seeds, with the settings of the committed seed-0 runs
# (mnist_dcgan width 32, 16x16, batch 64, Adam 2e-4 betas (0.5, 0.999), 3000 steps, consensus gamma 1,
# primal-dual JS alpha 1 on classifier features), one CPU thread per run:
#   nohup nice bash benchmarks/mnist/mnist_seeds.sh "1 2" > runs/mnist_seeds.log 2>&1 &
#   bash benchmarks/mnist/mnist_seeds.sh SEEDS [out]     (out: the run folders' parent, default runs/mnist)
# A finished run's final samples are copied to results/samples/<method>_s<seed>.npz.
# Runs resume from their checkpoints and finished runs are skipped. Then re-score every seed's samples
# (see benchmarks/mnist/README.md). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=${1:-"1 2"}; out=${2:-runs/mnist}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=.
. benchmarks/common/keep_run.sh
mkdir -p "$out" benchmarks/mnist/results/samples
for seed in $seeds; do
  for m in altga consensus primal_dual; do
    dir=$out/${m}_s$seed
    cmd="$py benchmarks/common/image_gan.py --data mnist --model mnist_dcgan --width 32 --steps 3000 --eval-every 1000 --threads 1 --no-progress --pd-features classifier --method $m --seed $seed --out $dir"
    keep_run "$dir" "benchmarks/mnist/results/samples/${m}_s$seed.npz" $cmd
  done
done
