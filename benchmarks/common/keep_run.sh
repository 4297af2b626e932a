# Sourced by the MNIST drivers: run one image-runner command and keep its final samples and history.
#   keep_run DIR SAMPLES_NPZ CMD...
# runs CMD (which writes DIR) with its log in DIR.log, prints start/done/FAILED lines with the time, and,
# when the run finished, copies DIR/final_samples.npz to SAMPLES_NPZ (results/<x>/samples/NAME.npz) and
# DIR/metrics.json beside it as results/<x>/runs/NAME/metrics.json. A dry run with a stand-in
# interpreter writes no samples, so nothing is copied.
keep_run() {
  local dir=$1 keep=$2; shift 2
  echo "$(date -u +%FT%TZ) start: $*"
  if "$@" > "$dir.log" 2>&1; then
    if [ -f "$dir/final_samples.npz" ]; then
      cp "$dir/final_samples.npz" "$keep"
      local hist
      hist="$(dirname "$(dirname "$keep")")/runs/$(basename "$keep" .npz)"
      [ ! -f "$dir/metrics.json" ] || { mkdir -p "$hist" && cp "$dir/metrics.json" "$hist/"; }
    fi
    echo "$(date -u +%FT%TZ) done: $dir"
  else
    echo "FAILED: $dir (see $dir.log)"
  fi
}
