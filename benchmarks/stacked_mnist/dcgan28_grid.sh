#!/usr/bin/env bash
# Issue 19's comparison on the standard-size 28x28 DCGAN (--preset dcgan28), in priority order.
#   bash benchmarks/stacked_mnist/dcgan28_grid.sh LANE [out]
# LANE picks one of the queues (a, b, c), two at a time, so two one-thread processes share a 2-core
# machine (``long``: the baseline's 40,000-step learning curve, run in place of one); a run whose
# history is committed under results/dcgan28_runs/ is skipped (the run folders under runs/ are not kept):
#   nohup nice bash benchmarks/stacked_mnist/dcgan28_grid.sh a > runs/dcgan28_a.log 2>&1 &
#   nohup nice bash benchmarks/stacked_mnist/dcgan28_grid.sh b > runs/dcgan28_b.log 2>&1 &
# Every run keeps an EMA of G (decay 0.999) beside G and evaluates both on 2000 samples every 2000
# steps. A run resumes from its checkpoint and a finished run is skipped, so a lane can be stopped and
# restarted at will. After a run finishes, export and re-score it:
#   bash benchmarks/stacked_mnist/dcgan28_grid.sh export RUN   (RUN e.g. dcgan28/altga_s1)
# which copies final_samples{,_ema}.npz to results/samples/<players>/<method>{,_ema}_s<seed>.npz, writes
# the strict metrics and grids beside them and appends their rows to results/dcgan28_rescore/
# (benchmarks/rescore_samples/rescore.py --append, then seed_summary.py).
# Settings: --preset dcgan28 (Adam 2e-4 for both players, betas (0.5, 0.999), batch 64, z 100,
# DCGAN init), consensus gamma 1, one CPU thread per run. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
lane=${1:?usage: dcgan28_grid.sh a|b|c|long|export [out|RUN]}
out=runs/stacked_mnist; [ "$lane" = export ] || out=${2:-runs/stacked_mnist}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=.
samples=benchmarks/stacked_mnist/results/samples
committed=benchmarks/stacked_mnist/results/dcgan28_runs
rescored=benchmarks/stacked_mnist/results/dcgan28_rescore

run() {   # run PLAYERS NAME SEED STEPS [extra args]; NAME is the method, or METHOD-VARIANT with extra args
  local players=$1 name=$2 seed=$3 steps=$4; shift 4
  local method=${name%%-*}
  local dir=$out/$players/${name}_s$seed
  if [ -f "$committed/${players}_${name}_s$seed/metrics.json" ]; then   # runs/ does not outlive a machine
    echo "skip (history committed in $committed): $players/${name}_s$seed"; return 0
  fi
  mkdir -p "$dir"
  local cmd="$py benchmarks/common/image_gan.py --data stacked_mnist --preset dcgan28 --model $players --method $method --seed $seed --steps $steps --ema 0.999 --eval-every 2000 --eval-samples 2000 --ckpt-every 500 --threads 1 --no-progress --out $dir $*"
  echo "$(date -u +%FT%TZ) start: $cmd"
  if $cmd > "$dir.log" 2>&1; then echo "$(date -u +%FT%TZ) done: $players/${name}_s$seed"; else echo "FAILED: $dir (see $dir.log)"; fi
}

export_run() {   # export PLAYERS/METHOD_sSEED
  local rel=$1 players=${1%%/*} name=${1#*/}
  local method=${name%_s*} seed=${name##*_s}
  mkdir -p "$samples/$players"
  cp "$out/$rel/final_samples.npz" "$samples/$players/${method}_s$seed.npz"
  local files=("$samples/$players/${method}_s$seed.npz")
  if [ -f "$out/$rel/final_samples_ema.npz" ]; then
    cp "$out/$rel/final_samples_ema.npz" "$samples/$players/${method}_ema_s$seed.npz"
    files+=("$samples/$players/${method}_ema_s$seed.npz")
  fi
  mkdir -p "$committed/${players}_${name}"
  cp "$out/$rel/metrics.json" "$committed/${players}_${name}/"
  # per-file JSON and grid beside the samples, and the run's rows added to the committed table (a file
  # already there is not scored again), then the per-method summary over seeds
  "$py" benchmarks/rescore_samples/rescore.py "${files[@]}" --threads "${RESCORE_THREADS:-1}" --append --out "$rescored"
  "$py" benchmarks/rescore_samples/seed_summary.py "$rescored/summary.json" --out "$rescored"
}

case $lane in
  a)  # the two leaders on the players consensus learns with (no batch norm in D) at three seeds, the
      # batch-norm baseline's third seed, then the rest of the family on the players without batch norm
      # in D (with it, consensus collapses: see README); then consensus at D = 1/4 G and 1/2 G (--d-width)
      # and their further seeds, where AltGA lost most of its modes (lane c holds the rest of them)
      run dcgan28_nobn_d consensus 1 12000
      run dcgan28_nobn_d altga 1 12000
      run dcgan28_nobn_d consensus 2 12000
      run dcgan28 altga 2 12000
      run dcgan28_nobn_d optimistic 0 12000
      run dcgan28_nobn_d consensus-dwidth16 0 12000 --d-width 16
      run dcgan28_nobn_d consensus-dwidth32 1 12000 --d-width 32
      run dcgan28_nobn_d altga-dwidth16 1 12000 --d-width 16
      run dcgan28_nobn_d dual_score 0 12000
      run dcgan28_nobn_d consensus-dwidth16 1 12000 --d-width 16 ;;
  b)  # gameopt's flagship at the baseline's length, on the players it learns with; then, with batch norm
      # in D (where the regulariser's gradient outweighs the game's about 500 times at gamma 1), gamma 0.1
      # and 0.01 and the regulariser on D only (--smoothing); then AltGA's third seed without batch norm
      # in D, the practitioner's baseline and consensus + R1 on the same players, the rest of the family,
      # then D = 1/4 G and 1/2 G
      run dcgan28_nobn_d consensus 0 12000
      run dcgan28 consensus-gamma0.1 0 2000 --gamma 0.1
      run dcgan28 consensus-gamma0.01 0 2000 --gamma 0.01
      run dcgan28 consensus-smoothing 0 2000 --smoothing
      run dcgan28_nobn_d altga 2 12000
      run dcgan28_nobn_d r3gan 0 12000
      run dcgan28_nobn_d consensus_lazy 0 12000
      run dcgan28_nobn_d extragradient 0 12000
      run dcgan28_nobn_d consensus-dwidth32 0 12000 --d-width 32
      run dcgan28_nobn_d optimistic 1 12000
      run dcgan28_nobn_d optimistic 2 12000
      run dcgan28_nobn_d primal_dual 0 12000
      run dcgan28_nobn_d consensus_r1 0 12000 ;;
  c)  # the baseline with two G steps per D step (PacGAN's standard-size stacked-MNIST code,
      # DCGAN-tensorflow, does this; same seed as dcgan28/altga_s1), then AltGA at D = 1/2 G and 1/4 G,
      # then seeds 1 and 2 at D = 1/2 G (consensus's seed 2 too: three seeds of both there first)
      run dcgan28 altga-g2 1 12000 --gen-steps 2
      run dcgan28_nobn_d altga-dwidth32 0 12000 --d-width 32
      run dcgan28_nobn_d altga-dwidth16 0 12000 --d-width 16
      run dcgan28_nobn_d altga-dwidth32 1 12000 --d-width 32
      run dcgan28_nobn_d altga-dwidth32 2 12000 --d-width 32
      run dcgan28_nobn_d consensus-dwidth32 2 12000 --d-width 32
      run dcgan28_nobn_d altga-dwidth16 2 12000 --d-width 16 ;;
  long)  # the baseline's learning curve past 12,000 steps (issue 19 items 2 and 5: how many steps until
      # samples are digits and strict modes stop rising); same seed as dcgan28/altga_s1, whose first
      # 12,000 steps it repeats. About 2 h 15 min on one thread beside another lane (1 h 40 min alone);
      # then a second seed of the curve to 30,000 steps (fits one session beside another lane), then the
      # second seed to 40,000 steps
      run dcgan28 altga-40k 1 40000
      run dcgan28 altga-30k 2 30000
      run dcgan28 altga-40k 2 40000 ;;
  export) export_run "${2:?export needs RUN, e.g. dcgan28/altga_s1}" ;;
  *) echo "unknown lane $lane: use a, b, c, long or export" >&2; exit 2 ;;
esac
