#!/usr/bin/env bash
# Kill and resume: trains a config once without interruption, then again while killing the
# process with SIGKILL at random points (and once while a checkpoint is being written),
# resuming each time with `--resume auto`, and checks that the final weights (SHA-256 of
# model.pt), the per-epoch metrics and the test report equal those of the uninterrupted run.
#
#   scripts/kill_resume.sh [--kills N] [--config FILE] [--seed S] [--work DIR] [KEY=VALUE ...]
#
# Defaults: 10 kills, configs/demo.yaml with train.epochs=6, seed 1 for the kill times.
# Needs the demo data (scripts/demo.sh makes it) and a built `mmintent` (build/bin, or
# MMINTENT_BIN). Exit status 0 when everything matches, 1 otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

kills=10
config=configs/demo.yaml
seed=1
work=""
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kills) kills="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "kill_resume: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [[ ${#overrides[@]} -eq 0 ]]; then overrides=(train.epochs=6); fi
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
[[ -x "$bin" ]] || { echo "kill_resume: $bin not found; run scripts/build.sh first" >&2; exit 2; }
if [[ -z "$work" ]]; then work="$(mktemp -d /tmp/mmintent_kill_resume.XXXXXX)"; fi
mkdir -p "$work"
ref="$work/reference"
run="$work/killed"
rm -rf "$ref" "$run"
common=("${overrides[@]}" train.progress=none)

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
RANDOM=$seed

echo "kill_resume: $config ${overrides[*]}, $kills kills, work dir $work"
t0=$(now_ms)
"$bin" train "$config" "${common[@]}" "output.dir=$ref" >"$work/reference.log" 2>&1 ||
  { echo "kill_resume: the reference run failed; see $work/reference.log" >&2; exit 1; }
ref_ms=$(( $(now_ms) - t0 ))
echo "reference run: $(( ref_ms / 1000 )) s"

# Kill delays are drawn uniformly from (0.5 s, two epochs' share of the reference run time), so
# that each restart gets a little further on average and the kills spread over the whole run:
# mid-epoch, during start-up (data checks, tokenizer training), evaluation and checkpointing.
epochs=$(grep -c . "$ref/metrics.jsonl")
max_ms=$(( 2 * ref_ms / (epochs > 0 ? epochs : 1) ))
(( max_ms > 1500 )) || max_ms=1500
kill_at_checkpoint=$(( RANDOM % kills ))  # which kill waits for a checkpoint being written

attempt=0
finished=0
kill_log="$work/kills.txt"
: >"$kill_log"
while (( attempt < kills )); do
  attempt=$(( attempt + 1 ))
  "$bin" train "$config" "${common[@]}" "output.dir=$run" --resume auto \
    >>"$work/killed.log" 2>&1 &
  pid=$!
  if (( attempt - 1 == kill_at_checkpoint )); then
    # Wait for last.pt's temp file to appear, then kill while it is being written.
    what="while last.pt was being written"
    deadline=$(( SECONDS + 600 ))
    while (( SECONDS < deadline )); do
      if [[ -e "$run/last.pt.tmp" ]] || ! kill -0 "$pid" 2>/dev/null; then break; fi
    done
  else
    delay_ms=$(( 500 + (RANDOM * 32768 + RANDOM) % (max_ms - 500) ))
    what="after $(( delay_ms / 1000 )).$(printf %03d $(( delay_ms % 1000 ))) s"
    sleep "$(( delay_ms / 1000 )).$(printf %03d $(( delay_ms % 1000 )))"
  fi
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    epochs=$(wc -l <"$run/metrics.jsonl" 2>/dev/null || echo 0)
    echo "kill $attempt: SIGKILL $what (metrics lines on disk: $epochs)" | tee -a "$kill_log"
  else
    wait "$pid" && status=0 || status=$?
    echo "kill $attempt: the run had already ended (status $status) $what" | tee -a "$kill_log"
    if (( status == 0 )); then finished=1; break; fi
    echo "kill_resume: a resumed run failed; see $work/killed.log" >&2
    exit 1
  fi
done
if (( ! finished )); then
  "$bin" train "$config" "${common[@]}" "output.dir=$run" --resume auto >>"$work/killed.log" 2>&1 ||
    { echo "kill_resume: the final resume failed; see $work/killed.log" >&2; exit 1; }
fi

# Compare: weights bit for bit, metrics per epoch without wall times, the test report.
ok=1
ref_hash=$(sha256sum "$ref/model.pt" | cut -d' ' -f1)
run_hash=$(sha256sum "$run/model.pt" | cut -d' ' -f1)
echo "model.pt sha256: reference $ref_hash"
echo "model.pt sha256: killed    $run_hash"
[[ "$ref_hash" == "$run_hash" ]] || { echo "MISMATCH: final weights differ"; ok=0; }
strip_seconds() { sed -E 's/, "seconds": [^,}]*//' "$1"; }
if ! diff <(strip_seconds "$ref/metrics.jsonl") <(strip_seconds "$run/metrics.jsonl") >"$work/metrics.diff"; then
  echo "MISMATCH: metrics.jsonl differs (see $work/metrics.diff)"; ok=0
fi
if ! python3 - "$ref/report.json" "$run/report.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def strip(d):
    if isinstance(d, dict):
        return {k: strip(v) for k, v in d.items() if "seconds" not in k}
    if isinstance(d, list):
        return [strip(v) for v in d]
    return d
sys.exit(0 if strip(a) == strip(b) else 1)
EOF
then
  echo "MISMATCH: report.json differs"; ok=0
fi
real_kills=$(grep -c SIGKILL "$kill_log" || true)
echo "kill points: $real_kills SIGKILLs, then resumed to the end"
if (( real_kills < kills )); then
  echo "note: the run finished after $real_kills kills (fewer than $kills requested)"
fi
if (( ok )); then
  echo "kill_resume: PASS (identical weights, metrics and report)"
  exit 0
fi
echo "kill_resume: FAIL; logs in $work"
exit 1
