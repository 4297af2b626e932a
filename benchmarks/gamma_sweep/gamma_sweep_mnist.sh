#!/usr/bin/env bash
# Issue 19 item 6: consensus gamma on plain MNIST, every gamma the same length, three seeds, Adam 2e-4
# (betas (0.5, 0.999)) and the consensus paper's RMSProp 1e-4; players and settings of the MNIST study
# (benchmarks/mnist/: mnist_dcgan width 32, batch 64, 3000 steps), one CPU thread per run:
#   nohup nice bash benchmarks/gamma_sweep/gamma_sweep_mnist.sh > runs/gamma_sweep_mnist.log 2>&1 &
#   bash benchmarks/gamma_sweep/gamma_sweep_mnist.sh [seeds] [out] [optims]   (default "0 1 2", runs/gamma_sweep_mnist, "adam rmsprop")
# Seed-major order, so each seed's full sweep lands before the next seed starts. Adam at gamma 1 is the
# MNIST study's consensus run (benchmarks/mnist/mnist_seeds.sh), not run again. Runs resume from their
# checkpoints and finished runs are skipped; a finished run's final samples are copied to
# results/mnist/samples/consensus-<optim>-g<gamma>_s<seed>.npz for the re-score. PYTHON picks the
# interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=${1:-"0 1 2"}; out=${2:-runs/gamma_sweep_mnist}; optims=${3:-"adam rmsprop"}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=.
. benchmarks/common/keep_run.sh
samples=benchmarks/gamma_sweep/results/mnist/samples
mkdir -p "$out" "$samples"
for seed in $seeds; do
  for optim in $optims; do
    lr=$([ $optim = adam ] && echo 2e-4 || echo 1e-4)
    for g in 0.1 0.3 1 3 10; do
      [ "$optim/$g" != adam/1 ] || continue
      name=consensus-$optim-g${g}_s$seed
      dir=$out/$name
      cmd="$py benchmarks/common/image_gan.py --data mnist --model mnist_dcgan --width 32 --steps 3000 --eval-every 1000 --threads 1 --no-progress --method consensus --optim $optim --lr $lr --gamma $g --seed $seed --out $dir"
      keep_run "$dir" "$samples/$name.npz" $cmd
    done
  done
done
