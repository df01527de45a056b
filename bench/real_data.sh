#!/usr/bin/env bash
# One command per real-data benchmark: import the data set, train and evaluate the config,
# and print the figure the README's results table quotes, with the wall time.
#   bench/real_data.sh clinc150|clinc150_threshold|snips|spoken_snips|fashion_mnist [KEY=VALUE overrides...]
#   bench/real_data.sh clinc150_ensemble|clinc150_oos [KEY=VALUE overrides...]
#     clinc150_ensemble: 3 members (seeds $MMINTENT_ENSEMBLE_SEEDS, default "42 1 7") trained with
#     out-of-scope as a class, then `mmintent ensemble` of them; clinc150_oos: the same with the
#     threshold method, the ensemble's threshold the highest costing at most one point of in-scope
#     accuracy on val (oos.max_in_scope_loss=0.01). MMINTENT_REUSE_MEMBERS=1 keeps finished members.
#   bench/real_data.sh clinc150_both|snips_ensemble|fashion_mnist_ensemble [KEY=VALUE overrides...]
#     clinc150_both: out-of-scope as a class plus a threshold on the top probability costing at most
#     one point of val in-scope accuracy (oos.method=both oos.max_in_scope_loss=0.01);
#     snips_ensemble / fashion_mnist_ensemble: `train` with ensemble.members=5 / 3 (seeds 42, 43, ...).
#   bench/real_data.sh clinc150_calibration [KEY=VALUE overrides...]
#     out-of-scope as a class with calibration.method=split, then the same weights served at three
#     out-of-scope shares (val's; estimated by `calibrate --oos-share-from` on the test texts without
#     their labels; the test split's stated 1000/5500) and with one temperature, each `eval`ed on
#     test: ECE over all test samples and over the in-scope ones.
#   bench/real_data.sh clinc150_int8 [KEY=VALUE overrides...]
#     the clinc150 row's run (trained unless MMINTENT_REUSE_MEMBERS=1 finds it finished), then
#     `mmintent quantize` of it: file sizes, float against int8 figures, single-request latency.
# Expects a build in build/ (scripts/build.sh); the data comes from ../shared/data and
# /usr/share/datasets/fashion-mnist and is written to data/generated/ (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
shared="${MMINTENT_SHARED_DATA:-$root/../shared/data}"
name="${1:?usage: bench/real_data.sh clinc150|clinc150_threshold|clinc150_both|clinc150_calibration|clinc150_ensemble|clinc150_oos|clinc150_int8|snips|snips_ensemble|spoken_snips|fashion_mnist|fashion_mnist_ensemble [overrides]}"
shift

case "$name" in
  clinc150|clinc150_threshold|clinc150_both|clinc150_calibration|clinc150_ensemble|clinc150_oos|clinc150_int8)
    "$bin" import clinc150 "$shared/clinc150" data/generated/clinc150
    config=configs/clinc150.yaml
    extra=()
    ensemble_extra=()
    case "$name" in
      clinc150_threshold) extra=(oos.method=threshold) ;;
      clinc150_both) extra=(oos.method=both oos.max_in_scope_loss=0.01) ;;
      clinc150_calibration) extra=(calibration.method=split) ;;
      clinc150_oos) extra=(oos.method=threshold); ensemble_extra=(oos.max_in_scope_loss=0.01) ;;
    esac
    ;;
  snips|snips_ensemble)
    "$bin" import snips "$shared/snips" data/generated/snips
    config=configs/snips.yaml
    extra=()
    if [ "$name" = snips_ensemble ]; then extra=(ensemble.members=5); fi
    ;;
  spoken_snips)
    # Synthetic speech (espeak-ng; docs/SPEECH.md): about a minute to write, kept between runs.
    if [ ! -f data/generated/spoken_snips/test.jsonl ]; then
      "$bin" import spoken-snips "$shared/snips" data/generated/spoken_snips
    fi
    config=configs/spoken_snips.yaml
    extra=()
    ;;
  fashion_mnist|fashion_mnist_ensemble)
    if [ ! -f data/generated/fashion_mnist/test.jsonl ]; then
      "$bin" import fashion-mnist /usr/share/datasets/fashion-mnist data/generated/fashion_mnist
    fi
    config=configs/fashion_mnist.yaml
    extra=()
    if [ "$name" = fashion_mnist_ensemble ]; then extra=(ensemble.members=3); fi
    ;;
  *) echo "unknown benchmark '$name'" >&2; exit 2 ;;
esac

run_dir="runs/bench_$name"
start=$(date +%s)
if [ "$name" = clinc150_ensemble ] || [ "$name" = clinc150_oos ]; then
  members=()
  for seed in ${MMINTENT_ENSEMBLE_SEEDS:-42 1 7}; do
    member="runs/bench_${name}_s$seed"
    if [ "${MMINTENT_REUSE_MEMBERS:-0}" != 1 ] || [ ! -f "$member/model.pt" ]; then
      "$bin" train "$config" "output.dir=$member" output.overwrite=true train.progress=lines "runtime.seed=$seed" \
        "${extra[@]}" "$@"
    fi
    members+=("$member")
  done
  "$bin" ensemble "${members[@]}" --out "$run_dir" --overwrite "${ensemble_extra[@]}"
elif [ "$name" = clinc150_int8 ]; then
  float_run=runs/bench_clinc150
  if [ "${MMINTENT_REUSE_MEMBERS:-0}" != 1 ] || [ ! -f "$float_run/model.pt" ]; then
    "$bin" train "$config" "output.dir=$float_run" output.overwrite=true train.progress=lines "$@"
  fi
  "$bin" quantize "$float_run" --out "$run_dir" --overwrite
  python3 - "$run_dir/quantize.json" <<'PY'
import json, sys
q = json.load(open(sys.argv[1]))
t, lat = q["splits"]["test"], q["latency"]
print(f"clinc150_int8: model file {q['float_bytes']} -> {q['int8_bytes']} bytes ({q['size_ratio']:.2f}x smaller); "
      f"test in-scope accuracy float {t['float'].get('in_scope_accuracy', t['float']['accuracy']):.4f}, "
      f"int8 {t['int8'].get('in_scope_accuracy', t['int8']['accuracy']):.4f}; same answer {100 * t['agreement']:.2f}%; "
      f"latency (median of {lat['samples']}, one sample) float {lat['float_ms_median']:.3f} ms, "
      f"int8 {lat['int8_ms_median']:.3f} ms (ratio {lat['ratio']:.2f})")
PY
else
  "$bin" train "$config" "output.dir=$run_dir" output.overwrite=true train.progress=lines "${extra[@]}" "$@"
fi
seconds=$(( $(date +%s) - start ))

python3 - "$run_dir/report.json" "$name" "$seconds" <<'PY'
import json, sys
report, name, seconds = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
test = report["test"]
line = f"{name}: test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}"
if "oos" in test:
    o = test["oos"]
    line += (f", in-scope accuracy {o['in_scope_accuracy']:.4f}, out-of-scope recall "
             f"{o['oos_recall']:.4f}, precision {o['oos_precision']:.4f}")
    if "threshold" in o:
        line += f" (threshold {o['threshold']:.4f}, chosen on val)"
print(f"{line}; train + eval wall time {seconds} s")
for i, m in enumerate(test.get("members", [])):
    extra = f", in-scope accuracy {m['in_scope_accuracy']:.4f}, out-of-scope recall {m['oos_recall']:.4f}" if "oos_recall" in m else ""
    print(f"  member {i} ({m['run']}): test accuracy {m['accuracy']:.4f}{extra}")
PY

if [ "$name" = clinc150_calibration ]; then
  # The same weights calibrated four ways, each evaluated on test (the run itself ends at val's share).
  ece() {  # LABEL RUN
    python3 - "$2/report.json" "$1" <<'PY'
import json, sys
test = json.load(open(sys.argv[1]))["test"]
c, o = test["calibration"], test["oos"]
how = f"split, out-of-scope share {c['split']['share']:.4f}" if c["method"] == "split" else f"T = {c['temperature']:.4f}"
print(f"clinc150_calibration {sys.argv[2]} ({how}): test ECE {c['before']['ece']:.4f} -> {c['after']['ece']:.4f} "
      f"(out-of-scope share of test {c['oos_share']:.4f}); in-scope samples {c['in_scope']['before']['ece']:.4f} -> "
      f"{c['in_scope']['after']['ece']:.4f}; served: in-scope accuracy {o['in_scope_accuracy']:.4f}, "
      f"out-of-scope recall {o['oos_recall']:.4f}")
PY
  }
  traffic="$run_dir/test_texts.jsonl"  # the test split without its labels
  python3 -c 'import json, sys
for l in open(sys.argv[1]):
    if l.strip(): print(json.dumps({"text": json.loads(l)["text"]}))' data/generated/clinc150/test.jsonl > "$traffic"
  "$bin" eval "$run_dir" --split test > /dev/null
  ece "val share" "$run_dir"
  "$bin" calibrate "$run_dir" --oos-share-from "$traffic" > /dev/null
  "$bin" eval "$run_dir" --split test > /dev/null
  ece "share estimated on the unlabelled test texts" "$run_dir"
  "$bin" calibrate "$run_dir" --oos-share "$(python3 -c 'print(1000 / 5500)')" > /dev/null
  "$bin" eval "$run_dir" --split test > /dev/null
  ece "stated test share" "$run_dir"
  temperature_run="${run_dir}_temperature"
  rm -rf "$temperature_run" && cp -r "$run_dir" "$temperature_run"
  sed -i -e 's/^  method: "split"$/  method: "temperature"/' \
    -e "s|^  dir: \".*\"\$|  dir: \"$(cd "$temperature_run" && pwd)\"|" "$temperature_run/config.yaml"
  "$bin" calibrate "$temperature_run" > /dev/null
  "$bin" eval "$temperature_run" --split test > /dev/null
  ece "one temperature" "$temperature_run"
fi

if [ "$name" = spoken_snips ]; then
  # Accuracy per noise level of the test split (the manifest's "snr": clean, 20 dB, ...).
  "$bin" predict "$run_dir" --manifest data/generated/spoken_snips/test.jsonl --out "$run_dir/test_predictions.jsonl" > /dev/null
  python3 - data/generated/spoken_snips/test.jsonl "$run_dir/test_predictions.jsonl" <<'PY'
import json, sys
from collections import defaultdict
records = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
right, total = defaultdict(int), defaultdict(int)
for p in (json.loads(l) for l in open(sys.argv[2]) if l.strip()):
    r = records[p["line"] - 1]
    total[r["snr"]] += 1
    right[r["snr"]] += p["top"][0]["intent"] == r["label"]
order = sorted(total, key=lambda s: (s != "clean", -float(s.split()[0]) if s != "clean" else 0))
print("spoken_snips test accuracy by noise: " + ", ".join(f"{s} {right[s] / total[s]:.4f} ({total[s]})" for s in order))
PY
fi
