#!/usr/bin/env bash
# The benchmark suite (bench/, bench/RESULTS.md): builds it with MMINTENT_BUILD_BENCH=ON and
# runs, in order:
#   1. bench/machine_limits.cpp   the BLAS and oneDNN in use, sgemm and convolution GFLOP/s,
#                                 FLOPs per training step of the demo model and the rate achieved
#   2. bench/components.cpp       Google Benchmark: image decode/augment, tokenisation,
#                                 collation, the loader (0/1/2 workers), encoders, training step;
#                                 then the loader's headroom (its batches/s over the step's)
#   3. bench/inference.cpp        single-request latency p50/p99 and batch throughput of a
#                                 short demo run
#   4. bench/compare_training.sh  end-to-end training against the Python reference, RUNS
#                                 alternating runs per side (demo, and CLINC150 when imported)
#
#   scripts/bench.sh [--smoke] [--runs N] [BUILD_DIR]      (BUILD_DIR default: build)
#
# --smoke: every step runs briefly (CI: checks that the benchmarks build and run, not their
# figures); step 4 is left out when Debian's python3-torch is missing. Outputs go to
# runs/bench/ (components.json, limits.txt, inference.txt, compare/summary.md). Measure on an
# otherwise idle machine: each step prints the load average it started under.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
smoke=0
runs=5
build=""
while (($#)); do
  case "$1" in
    --smoke) smoke=1 ;;
    --runs) runs="$2"; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) build="$1" ;;
  esac
  shift
done
build="${build:-$root/build}"
out="$root/runs/bench"
mkdir -p "$out"
load() { cut -d' ' -f1-3 /proc/loadavg; }

if ((smoke)); then
  bash scripts/setup.sh --dev
  dpkg-query -W -f='${Status}' libbenchmark-dev 2>/dev/null | grep -q "install ok installed" ||
    { echo "bench: libbenchmark-dev is missing: run scripts/setup_bench.sh" >&2; exit 2; }
else
  bash scripts/setup_bench.sh
fi
bash scripts/build.sh "$build" -DMMINTENT_BUILD_BENCH=ON
bin="$build/bin"
[ -f data/demo/train.jsonl ] || "$bin/mmintent_make_demo" --out data/demo

echo "== 1. machine limits (load $(load))"
if ((smoke)); then
  "$bin/mmintent_bench_limits" --smoke | tee "$out/limits.txt"
else
  "$bin/mmintent_bench_limits" --manifest=data/demo/train.jsonl | tee "$out/limits.txt"
fi

echo "== 2. components (load $(load))"
components=("$bin/mmintent_bench_components" --benchmark_out="$out/components.json" --benchmark_out_format=json)
if ((smoke)); then
  "${components[@]}" --smoke
else
  "${components[@]}" --manifest=data/demo/train.jsonl
fi
python3 - "$out/components.json" <<'PY'
import json, sys
rows = {b["name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]}
step = rows.get("BM_DemoModel_TrainStep/real_time", {}).get("steps_per_s")
for w in (0, 1, 2):
    loader = rows.get(f"BM_LoaderPass/{w}/real_time", {}).get("batches_per_s")
    if step and loader:
        print(f"bench: loader headroom, {w} worker(s): {loader:.0f} batches/s / {step:.1f} training steps/s"
              f" = {loader / step:.1f}x")
for w in (0, 1):
    r = rows.get(f"BM_DemoTrainLoop/{w}/real_time")
    if r:
        print(f"bench: training loop fed by the loader, {w} worker(s): the step waited for batches"
              f" {100 * r['wait_fraction']:.1f}% of the time")
PY

echo "== 3. inference (load $(load))"
run_dir="$root/runs/bench_inference"
epochs=3
((smoke)) && epochs=1
"$bin/mmintent" train configs/demo.yaml "output.dir=$run_dir" output.overwrite=true "train.epochs=$epochs" \
  train.progress=none eval.plots=false "eval.splits=[test]" >"$out/inference_train.log" 2>&1 ||
  { tail -5 "$out/inference_train.log" >&2; exit 1; }
if ((smoke)); then
  "$bin/mmintent_bench_inference" "$run_dir" --smoke | tee "$out/inference.txt"
else
  "$bin/mmintent_bench_inference" "$run_dir" --manifest=data/demo/test.jsonl | tee "$out/inference.txt"
fi

echo "== 4. end-to-end training against the Python reference (load $(load))"
if ! /usr/bin/python3 -c 'import torch, cv2, sentencepiece' 2>/dev/null; then
  if ((smoke)); then
    echo "bench: python3-torch/opencv/sentencepiece missing: comparison left out (scripts/setup_bench.sh)"
    exit 0
  fi
  echo "bench: python3-torch/opencv/sentencepiece missing (scripts/setup_bench.sh)" >&2
  exit 2
fi
cases=(demo)
[ -f data/generated/clinc150/train.jsonl ] && cases+=(clinc150)
if ((smoke)); then
  EPOCHS=1 MMINTENT_BIN="$bin/mmintent" bench/compare_training.sh -n 1 -o "$out/compare" demo
else
  MMINTENT_BIN="$bin/mmintent" bench/compare_training.sh -n "$runs" -o "$out/compare" "${cases[@]}"
fi
