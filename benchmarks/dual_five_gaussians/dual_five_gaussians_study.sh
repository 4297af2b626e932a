#!/usr/bin/env bash
# The whole 5-Gaussians robustness study of the README, in priority order, for one shard:
#   bash benchmarks/dual_five_gaussians/dual_five_gaussians_study.sh SHARD        # e.g. 0/2 and 1/2 as two jobs
# 1. the main configuration at 100 settings; 2. the non-saturating baseline (the dual does not
# read that option, so only the standard GAN runs); 3. every other variant at the first 50
# settings; 4. the variants extended to 100. Each step resumes and skips finished settings, so
# the script can be stopped and restarted at any time. One CPU thread per job.
# Afterwards: python benchmarks/dual_five_gaussians/dual_five_gaussians.py report --configs main,nonsat,C1e-2,bias,torch-init,divisor-kernel,legacy,C-table
set -euo pipefail
cd "$(dirname "$0")/../.."
shard=${1:-0/1}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export OMP_NUM_THREADS=1 PYTHONPATH=.
run() { $py benchmarks/dual_five_gaussians/dual_five_gaussians.py run --shard "$shard" "$@"; }
run --config main --settings 100
run --config nonsat --methods gan --settings 100
variants="C1e-2 bias torch-init divisor-kernel legacy C-table"
for n in 50 100; do
  for v in $variants; do run --config "$v" --settings "$n"; done
done
