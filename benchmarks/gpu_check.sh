#!/usr/bin/env bash
# The first GPU run: CUDA tests, sync budget (with torch.cuda.set_sync_debug_mode as a
# cross-check), step cost and peak memory of every method on the DCGAN-like and a 64x64
# ResNet-like pair, the batched dual solver against Ipopt, and a short stacked-MNIST run of the
# leaders. Writes JSON under benchmarks/results/gpu/ (see benchmarks/gpu_check.py). Aimed at
# under 8 minutes on one H100; each part has its own time limit (120 + 45 + 150 + 60 + 75 s =
# 7.5 minutes at most) so that a slow part cannot take the others' time.
#
#   bash benchmarks/gpu_check.sh [out]        # PYTHON=... to choose the interpreter
set -u
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
py=${PYTHON:-python}
mkdir -p "$out"
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')" || exit 1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
# 1. the CUDA tests (device parity, CUDA-only solver and dual tests) and the sync-budget tests
timeout 120 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_device_parity.py tests/test_sync_budget.py \
    tests/test_solvers.py tests/test_dual_discriminator.py -k "cuda or device or sync or budget or read" \
    --junitxml="$out/tests.xml" > "$out/tests.log" 2>&1
echo "tests: exit $? (log in $out/tests.log)"
# 2-5. the measurements, one JSON per section
timeout 45 "$py" benchmarks/gpu_check.py --device cuda --out "$out" --sections sync_budget --tests-xml "$out/tests.xml"
timeout 150 "$py" benchmarks/gpu_check.py --device cuda --out "$out" --sections step_cost
timeout 60 "$py" benchmarks/gpu_check.py --device cuda --out "$out" --sections dual_precision
timeout 75 "$py" benchmarks/gpu_check.py --device cuda --out "$out" --sections stacked_mnist
ls -l "$out"
