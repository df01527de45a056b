#!/usr/bin/env bash
# End-to-end training throughput and peak memory: mmintent (`mmintent train`) against the
# Python reference (bench/reference/train_reference.py: the same model in Debian's
# python3-torch, the same LibTorch 1.13), run alternately several times on the same data
# files, batch size, thread counts and number of steps. Prints, per case, the median of each
# side and the ratio ours / reference of the medians, and writes them to OUT/summary.md.
#
#   bench/compare_training.sh [-n RUNS] [-o OUT] [CASE ...] [KEY=VALUE ...]
#
# KEY=VALUE: config overrides applied to both sides (the reference reads the effective config),
# e.g. runtime.threads=1. The environment reaches both too (e.g. OMP_WAIT_POLICY=passive).
# OURS_EXTRA="KEY=VALUE ...": overrides for mmintent only, e.g. its speed settings
#   "runtime.precision=bf16 model.image_encoder.channels_last=true" against the plain fp32
#   reference; REF_ARGS="...": extra flags for the reference only (e.g. --bf16 --channels-last,
#   to give it the same settings).
#
# CASE (default: demo clinc150):
#   demo           configs/demo.yaml (text + image), 3 epochs = 114 steps of 64
#   clinc150       configs/clinc150.yaml (text only, data/generated/clinc150), 1 epoch = 236 steps
#   fashion_mnist  configs/fashion_mnist.yaml (image only), the first 6,400 training samples,
#                  1 epoch = 50 steps of 128
# Set EPOCHS=N to change the number of epochs of every case.
#
# BEFORE_BIN=PATH: a second mmintent build (e.g. main before a change, built in a git worktree)
# runs as a third side, "before", in the same rotation, with the same settings (OURS_EXTRA
# included); the summary then gives ours / before too. This is how a change's effect on speed
# is measured: both builds side by side on the same machine in one run, never from two runs.
#
# What is timed: samples/s = training samples / seconds of the training loop (mmintent: the
# epochs' `seconds` in metrics.jsonl; the reference times the same loop). Both sides train
# without validation, checkpoints or evaluation (overrides below), so the loop is all that
# differs. Peak memory: the peak resident set size of the whole process (/usr/bin/time's %M).
# The whole process's wall time (start-up, reading, tokenising, decoding, training) is
# reported beside. Both sides use the same sentencepiece model: a warm-up run of mmintent
# trains it first (that run also warms the page cache and is not counted).
#
# Needs: a build with the CLI (MMINTENT_BIN, default build/bin/mmintent) and
# scripts/setup_bench.sh's packages (python3-torch, python3-opencv, python3-sentencepiece).
# Run it on an otherwise idle machine: it prints the load average before and after each run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
python="${PYTHON:-/usr/bin/python3}"
runs=5
out="$root/runs/bench_compare"
while getopts "n:o:h" opt; do
  case "$opt" in
    n) runs="$OPTARG" ;;
    o) out="$OPTARG" ;;
    *) sed -n '2,39p' "${BASH_SOURCE[0]}"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
cases=()
extra=()
for a in "$@"; do
  case "$a" in
    *=*) extra+=("$a") ;;
    *) cases+=("$a") ;;
  esac
done
((${#cases[@]})) || cases=(demo clinc150)
[ -x "$bin" ] || { echo "compare_training: no mmintent binary at $bin (set MMINTENT_BIN)" >&2; exit 2; }
before="${BEFORE_BIN:-}"
[ -z "$before" ] || [ -x "$before" ] || { echo "compare_training: BEFORE_BIN=$before is not an executable" >&2; exit 2; }
"$python" -c 'import torch, cv2, sentencepiece' 2>/dev/null ||
  { echo "compare_training: $python lacks torch/cv2/sentencepiece: run scripts/setup_bench.sh" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "compare_training: needs /usr/bin/time (scripts/setup_bench.sh)" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# Training only: no validation, checkpoints, evaluation, calibration or plots.
common=(data.val= data.test= "eval.splits=[]" eval.plots=false calibration.enabled=false
        decision.min_confidence=0 decision.clarify_margin=0
        train.early_stopping.enabled=false train.early_stopping.restore_best=false
        train.early_stopping.metric=train.loss train.save_best=false train.save_last=false
        train.progress=none output.overwrite=true)

load() { cut -d' ' -f1 /proc/loadavg; }

# run_ours CASE_DIR INDEX [SIDE BINARY]: one timed `mmintent train` (SIDE "ours" with $bin by
# default, or "before" with $BEFORE_BIN); appends a JSON line to results.jsonl.
run_ours() {
  local dir="$1" i="$2" side="${3:-ours}" exe="${4:-$bin}" l0 l1
  l0=$(load)
  /usr/bin/time -f '%e %M %U %S' -o "$dir/${side}_$i.time" \
    "$exe" train "$config" "${overrides[@]}" ${OURS_EXTRA:-} "output.dir=$dir/${side}_run" >"$dir/${side}_$i.log" 2>&1 ||
    { echo "compare_training: $exe train failed, see $dir/${side}_$i.log" >&2; tail -5 "$dir/${side}_$i.log" >&2; exit 1; }
  l1=$(load)
  "$python" - "$dir/${side}_run/metrics.jsonl" "$dir/${side}_$i.log" "$dir/${side}_$i.time" "$i" "$l0" "$l1" "$side" \
    >>"$dir/results.jsonl" <<'PY'
import json, re, sys
metrics, log, timefile, i, l0, l1, side = sys.argv[1:8]
seconds = sum(json.loads(line)["seconds"] for line in open(metrics) if line.strip())
epochs = sum(1 for line in open(metrics) if line.strip())
n = int(re.search(r"\[data\] train (\d+),", open(log).read()).group(1))
wall, rss_kib, user, system = open(timefile).read().split()[-4:]
print(json.dumps({"impl": side, "run": int(i), "samples": n * epochs, "train_seconds": seconds,
                  "samples_per_s": n * epochs / seconds, "peak_rss_mib": int(rss_kib) / 1024,
                  "wall_s": float(wall), "cpu_s": float(user) + float(system),
                  "load_before": float(l0), "load_after": float(l1)}))
PY
}

# The reference loads the same libblas.so.3 as mmintent (its programs find BLIS through their
# own run path, cmake/MmintentBlas.cmake; Python's LibTorch would take the system's).
our_blas="$( { "$bin" --version 2>/dev/null || true; } | sed -n 's/^BLAS: //p')"
ref_env=()
if [ -f "$our_blas" ]; then ref_env=(env "LD_LIBRARY_PATH=$(dirname "$our_blas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"); fi

# run_reference CASE_DIR INDEX
run_reference() {
  local dir="$1" i="$2" l0 l1
  l0=$(load)
  /usr/bin/time -f '%e %M %U %S' -o "$dir/ref_$i.time" \
    "${ref_env[@]}" "$python" "$root/bench/reference/train_reference.py" "$dir/effective.yaml" \
    --json "$dir/ref_$i.json" ${REF_ARGS:-} >"$dir/ref_$i.log" 2>&1 ||
    { echo "compare_training: the reference failed, see $dir/ref_$i.log" >&2; tail -5 "$dir/ref_$i.log" >&2; exit 1; }
  l1=$(load)
  "$python" - "$dir/ref_$i.json" "$dir/ref_$i.time" "$i" "$l0" "$l1" >>"$dir/results.jsonl" <<'PY'
import json, sys
result, timefile, i, l0, l1 = sys.argv[1:6]
r = json.load(open(result))
wall, rss_kib, user, system = open(timefile).read().split()[-4:]
print(json.dumps({"impl": "reference", "run": int(i), "samples": r["samples"],
                  "train_seconds": r["train_seconds"], "samples_per_s": r["samples_per_s"],
                  "peak_rss_mib": int(rss_kib) / 1024, "wall_s": float(wall),
                  "cpu_s": float(user) + float(system), "params": r["params"],
                  "load_before": float(l0), "load_after": float(l1)}))
PY
}

echo "compare_training: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
  "BLAS ${our_blas:-unknown} (both sides), $runs runs per side,"\
  "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset)}, overrides: ${extra[*]:-(none)},"\
  "ours only: ${OURS_EXTRA:-(none)}, reference only: ${REF_ARGS:-(none)}"
for case in "${cases[@]}"; do
  dir="$out/$case"
  rm -rf "$dir"
  mkdir -p "$dir"
  overrides=("${common[@]}")
  case "$case" in
    demo)
      config=configs/demo.yaml; epochs="${EPOCHS:-3}" ;;
    clinc150)
      config=configs/clinc150.yaml; epochs="${EPOCHS:-1}"
      [ -f data/generated/clinc150/train.jsonl ] ||
        { echo "compare_training: import CLINC150 first (bench/real_data.sh shows how)" >&2; exit 2; } ;;
    fashion_mnist)
      config=configs/fashion_mnist.yaml; epochs="${EPOCHS:-1}"
      src=data/generated/fashion_mnist/train.jsonl
      [ -f "$src" ] || { echo "compare_training: import Fashion-MNIST first (bench/real_data.sh fashion_mnist)" >&2; exit 2; }
      # The first 6,400 samples, image paths made absolute (the images stay where they are).
      "$python" - "$src" "$dir/train_subset.jsonl" 6400 <<'PY'
import json, os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = os.path.dirname(os.path.abspath(src))
with open(src) as f, open(dst, "w") as g:
    for k, line in enumerate(f):
        if k == n:
            break
        r = json.loads(line)
        r["image"] = os.path.join(base, r["image"])
        g.write(json.dumps(r) + "\n")
PY
      overrides+=("data.train=$dir/train_subset.jsonl") ;;
    *) echo "compare_training: unknown case '$case' (demo, clinc150, fashion_mnist)" >&2; exit 2 ;;
  esac
  overrides+=("train.epochs=$epochs" ${extra[@]+"${extra[@]}"})

  # Warm-up (not counted): trains the tokenizer both sides then share, warms the page cache.
  echo "== $case: warm-up run (load $(load))"
  "$bin" train "$config" "${overrides[@]}" train.epochs=1 "output.dir=$dir/warmup" >"$dir/warmup.log" 2>&1 ||
    { echo "compare_training: warm-up failed, see $dir/warmup.log" >&2; tail -5 "$dir/warmup.log" >&2; exit 1; }
  if [ -f "$dir/warmup/tokenizer.model" ]; then
    cp "$dir/warmup/tokenizer.model" "$dir/tokenizer.model"
    overrides+=("data.text.tokenizer=$dir/tokenizer.model")
  fi
  "$bin" config "$config" "${overrides[@]}" "output.dir=$dir/ours_run" >"$dir/effective.yaml"

  # The sides take turns; each run starts with a different one, so no side always goes first.
  sides=(ours reference)
  [ -z "$before" ] || sides=(ours before reference)
  for ((i = 1; i <= runs; ++i)); do
    for ((k = 0; k < ${#sides[@]}; ++k)); do
      case "${sides[(i - 1 + k) % ${#sides[@]}]}" in
        ours) run_ours "$dir" "$i" ;;
        before) run_ours "$dir" "$i" before "$before" ;;
        reference) run_reference "$dir" "$i" ;;
      esac
    done
    "$python" - "$dir/results.jsonl" "${#sides[@]}" <<'PY'
import json, sys
for line in open(sys.argv[1]).read().splitlines()[-int(sys.argv[2]):]:
    r = json.loads(line)
    print("   run %d %-9s %8.1f samples/s  peak %6.1f MiB  wall %6.1f s  cpu %6.1f s  load %.2f->%.2f" % (
        r["run"], r["impl"], r["samples_per_s"], r["peak_rss_mib"], r["wall_s"], r["cpu_s"], r["load_before"],
        r["load_after"]))
PY
  done
done

conditions="$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $runs runs per side,${before:+ before: $before,} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset)}, overrides: ${extra[*]:-(none)}, ours only: ${OURS_EXTRA:-(none)}, reference only: ${REF_ARGS:-(none)}"
"$python" - "$out" "$conditions" "${cases[@]}" <<'PY'
import json, os, statistics, sys
out, conditions, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = ["| case | side | samples/s (median) | peak RSS MiB (median) | process wall s (median) | process CPU s (median) | runs | load avg during runs |",
        "|---|---|---|---|---|---|---|---|"]
ratios = []
for case in cases:
    rs = [json.loads(l) for l in open(os.path.join(out, case, "results.jsonl")) if l.strip()]
    med = {}
    for side in ("ours", "before", "reference"):
        s = [r for r in rs if r["impl"] == side]
        if not s:
            continue
        loads = [r["load_before"] for r in s] + [r["load_after"] for r in s]
        med[side] = {k: statistics.median(r[k] for r in s) for k in ("samples_per_s", "peak_rss_mib", "wall_s", "cpu_s")}
        rows.append(f"| {case} | {side} | {med[side]['samples_per_s']:.1f} | {med[side]['peak_rss_mib']:.0f} | "
                    f"{med[side]['wall_s']:.1f} | {med[side]['cpu_s']:.1f} | {len(s)} | {min(loads):.2f}-{max(loads):.2f} |")
    sp = med["ours"]["samples_per_s"] / med["reference"]["samples_per_s"]
    mem = med["ours"]["peak_rss_mib"] / med["reference"]["peak_rss_mib"]
    ratios.append(f"{case}: ours / reference: samples/s x{sp:.2f}, peak memory x{mem:.2f}")
    if "before" in med:
        ratios.append(f"{case}: ours / before: samples/s x{med['ours']['samples_per_s'] / med['before']['samples_per_s']:.2f}, "
                      f"peak memory x{med['ours']['peak_rss_mib'] / med['before']['peak_rss_mib']:.2f}")
text = "\n".join([conditions, ""] + rows + [""] + ratios) + "\n"
print(text, end="")
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
PY
