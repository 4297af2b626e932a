# Sourced by the MNIST drivers: run one image-runner command and keep its final samples.
#   keep_run DIR SAMPLES_NPZ CMD...
# runs CMD (which writes DIR) with its log in DIR.log, prints start/done/FAILED lines with the time, and
# copies DIR/final_samples.npz to SAMPLES_NPZ when the run finished (a dry run with a stand-in
# interpreter writes no samples, so nothing is copied).
keep_run() {
  local dir=$1 keep=$2; shift 2
  echo "$(date -u +%FT%TZ) start: $*"
  if "$@" > "$dir.log" 2>&1; then
    [ ! -f "$dir/final_samples.npz" ] || cp "$dir/final_samples.npz" "$keep"
    echo "$(date -u +%FT%TZ) done: $dir"
  else
    echo "FAILED: $dir (see $dir.log)"
  fi
}
