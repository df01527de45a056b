#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (-fsanitize=fuzzer,address,undefined) into
# their own build folder and runs each one for a fixed time. Exits non-zero on any finding: a
# crash, a sanitizer report, an exception that is not one of mmintent's errors, a broken
# invariant, a hang (one input over --timeout seconds), a leak or running out of memory.
#   scripts/fuzz.sh [--seconds N | --smoke] [--build-dir DIR] [--timeout S] [TARGET...]
#     --seconds N    run each target N seconds (default 60)
#     --smoke        CI mode: 25 s per target
#     --build-dir    default: build-fuzz/ in the repository
#     --timeout S    seconds one input may take before it counts as a hang (default 10)
#     TARGET         any of fuzz_config fuzz_manifest_jsonl fuzz_manifest_csv fuzz_label_map
#                    (default: all)
# New interesting inputs accumulate in BUILD_DIR/corpus/<target>/ (the seeds in
# fuzz/corpus/<target>/ are only read); findings are saved in BUILD_DIR/findings/<target>/ and
# the output of each run in BUILD_DIR/logs/<target>.log. Reproduce a finding with
#   BUILD_DIR/fuzz/<target> BUILD_DIR/findings/<target>/<file>
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=60
build="$root/build-fuzz"
timeout=10
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --smoke) seconds=25; shift ;;
    --build-dir) build="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    fuzz_*) targets+=("$1"); shift ;;
    *) echo "fuzz: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
all=(fuzz_config fuzz_manifest_jsonl fuzz_manifest_csv fuzz_label_map)
((${#targets[@]})) || targets=("${all[@]}")
if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ not found (scripts/setup.sh installs clang and libclang-rt-14-dev)" >&2
  exit 2
fi

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
build_start=$(date +%s)
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMMINTENT_FUZZ=ON -DMMINTENT_BUILD_TESTS=OFF -DMMINTENT_USE_PCH=OFF >"$build.configure.log" 2>&1 \
    || { cat "$build.configure.log"; exit 2; }
fi
cmake --build "$build" --target "${targets[@]}" -j "$(nproc)"
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - build_start )) s"

dict_of() {
  case "$1" in
    fuzz_config) echo "$root/fuzz/dict/config.dict" ;;
    fuzz_manifest_csv) echo "$root/fuzz/dict/csv.dict" ;;
    *) echo "$root/fuzz/dict/json.dict" ;;
  esac
}

# UBSan already halts (-fno-sanitize-recover=all); these add stack traces. Leak detection is
# on by default under ASan.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
findings=0
summary=()
for t in "${targets[@]}"; do
  work="$build/corpus/$t"
  art="$build/findings/$t"
  log="$build/logs/$t.log"
  mkdir -p "$work" "$art" "$(dirname "$log")"
  start=$(date +%s)
  touch "$art/.started"
  rc=0
  "$build/fuzz/$t" -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
    -max_len=8192 -dict="$(dict_of "$t")" -artifact_prefix="$art/" -print_final_stats=1 \
    "$work" "$root/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  execs=${execs:-0}
  rate=$(( execs / (took > 0 ? took : 1) ))
  corpus=$(find "$work" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    line="$t: ok, $execs executions in $took s ($rate/s), corpus $corpus inputs"
  else
    findings=$((findings + 1))
    line="$t: FINDING (exit $rc) after $execs executions in $took s; see $log"
    echo "---- $t: last lines of $log" >&2
    grep -E 'ERROR|SUMMARY|mmintent fuzz|runtime error|Test unit written|#[0-9]+ 0x' "$log" | head -40 >&2 || true
    find "$art" -type f -newer "$art/.started" ! -name .started | while read -r f; do
      echo "reproduce: $build/fuzz/$t $f" >&2
    done
  fi
  echo "fuzz: $line"
  summary+=("$line")
done

echo "fuzz: summary (${seconds} s per target)"
printf '  %s\n' "${summary[@]}"
if ((findings)); then
  echo "fuzz: $findings target(s) with findings" >&2
  exit 1
fi
