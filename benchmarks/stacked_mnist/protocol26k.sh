#!/usr/bin/env bash
# The published stacked-MNIST protocol on finished runs: 26,000 samples per run (Metz et al. and PacGAN
# count modes on 26,000), re-scored with both classifiers, all-label and strict:
#   bash benchmarks/stacked_mnist/protocol26k.sh "RUN:NAME RUN:NAME ..." [runs]
# RUN is a run folder under runs (default runs/stacked_mnist), e.g. dcgan28/altga_s1; NAME names its
# row, <method>-<variant>_s<seed>. The 26,000 samples (about 20 MB a run) stay in runs/p26k; the table
# goes to benchmarks/stacked_mnist/results/protocol26k (summary.json, table.md). One CPU thread; about
# 10 minutes a run beside one training run on 2 cores. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
pairs=${1:?usage: protocol26k.sh "RUN:NAME ..." [runs]}; runs=${2:-runs/stacked_mnist}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=.
mkdir -p runs/p26k
files=()
for pair in $pairs; do
  run=${pair%%:*} name=${pair#*:}
  "$py" benchmarks/stacked_mnist/export_samples.py "$runs/$run" "runs/p26k/$name.npz" -n 26000
  files+=("runs/p26k/$name.npz")
done
"$py" benchmarks/rescore_samples/rescore.py "${files[@]}" --threads 1 --out benchmarks/stacked_mnist/results/protocol26k
