#!/usr/bin/env bash
# HTTP load on `mmintent serve` with a real load generator (Debian's wrk): the demo model (text
# + image), POST /v1/predict with one demo message and its photo (base64), at 1, 8 and 32
# concurrent connections, with micro-batching (serve.max_batch=32, the default) and without (max_batch=1:
# each request its own forward pass). Prints requests/s and latency p50/p99 per case, the
# server's peak RSS, and the issue's targets (p99 at 8 connections <= 25 ms; throughput at 32
# connections >= 3x one connection); writes OUT/summary.md.
#
#   bench/serve_load.sh [-d SECONDS] [-o OUT] [RUN_DIR] [KEY=VALUE ...]
#
# RUN_DIR: a trained demo run (default: trains configs/demo.yaml into OUT/demo_run first).
# KEY=VALUE: serve overrides for both modes (e.g. serve.threads=16, runtime.threads=1).
# wrk and the server share this machine's cores: on 2 cores the load generator's own CPU is
# part of what is measured. Run on an otherwise idle machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source "$root/bench/serve_common.sh"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
seconds=10
out="$root/runs/bench_serve"
while getopts "d:o:h" opt; do
  case "$opt" in
    d) seconds="$OPTARG" ;;
    o) out="$OPTARG" ;;
    *) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
run_dir=""
extra=()
for a in "$@"; do
  case "$a" in
    *=*) extra+=("$a") ;;
    *) run_dir="$a" ;;
  esac
done
command -v wrk >/dev/null || { echo "serve_load: needs wrk (apt-get install wrk)" >&2; exit 2; }
[ -x "$bin" ] || { echo "serve_load: no mmintent binary at $bin (set MMINTENT_BIN)" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
if [ -z "$run_dir" ]; then
  run_dir="$out/demo_run"
  if [ ! -f "$run_dir/model.pt" ]; then
    echo "== training the demo into $run_dir"
    "$bin" train configs/demo.yaml "output.dir=$run_dir" output.overwrite=true >"$out/train.log" 2>&1 ||
      { echo "serve_load: training failed, see $out/train.log" >&2; exit 1; }
  fi
fi

# The request: the first validation message of the demo and its photo.
/usr/bin/python3 - "$root/data/demo/val.jsonl" "$out/request.json" <<'PY'
import base64, json, os, sys
manifest, dst = sys.argv[1], sys.argv[2]
r = json.loads(open(manifest).readline())
image = os.path.join(os.path.dirname(manifest), r["image"])
json.dump({"text": r["text"], "image": base64.b64encode(open(image, "rb").read()).decode()}, open(dst, "w"))
PY
cat >"$out/post.lua" <<EOF2
local f = io.open("$out/request.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f %.3f %d\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.mean / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF2

results="$out/results.txt"
: >"$results"
for mode in batching none; do
  max_batch=32
  [ "$mode" = none ] && max_batch=1
  log="$out/server_$mode.log"
  start_server "$log" "$run_dir" "serve.max_batch=$max_batch" ${extra[@]+"${extra[@]}"}
  pid=$server_pid
  url="http://127.0.0.1:$server_port/v1/predict"
  wrk -t1 -c1 -d2s -s "$out/post.lua" "$url" >/dev/null  # warm-up
  for c in 1 8 32; do
    threads=$((c < 2 ? 1 : 2))
    line=$(wrk -t"$threads" -c"$c" -d"${seconds}s" --timeout 10s -s "$out/post.lua" "$url" | grep '^RESULT')
    echo "$mode $c $line load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$results"
  done
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "$mode rss_kib $rss" | tee -a "$results"
  kill -TERM "$pid"
  wait "$pid" || true
done

/usr/bin/python3 - "$results" "$out/summary.md" "$seconds" "$(date -u +%Y-%m-%dT%H:%MZ)" "$(git -C "$root" rev-parse --short HEAD)" <<'PY'
import sys
results, dst, seconds, when, commit = sys.argv[1:6]
rows, rss = {}, {}
for line in open(results):
    f = line.split()
    if f[1] == "rss_kib":
        rss[f[0]] = int(f[2]) / 1024
        continue
    mode, c = f[0], int(f[1])
    n, dur_us, p50, p99, mean, errors = int(f[3]), int(f[4]), float(f[5]), float(f[6]), float(f[7]), int(f[8])
    rows[(mode, c)] = (n / (dur_us / 1e6), p50, p99, errors, f[9])
out = [f"{when}, commit {commit}, {seconds} s per case, wrk on the same 2 cores", "",
       "| micro-batching | connections | requests/s | p50 ms | p99 ms | errors | load |", "|---|---|---|---|---|---|---|"]
for (mode, c), (rps, p50, p99, errors, load) in sorted(rows.items(), key=lambda kv: (kv[0][0] != "batching", kv[0][1])):
    out.append(f"| {'on (max_batch 32)' if mode == 'batching' else 'off (max_batch 1)'} | {c} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} | {load.split('=')[1]} |")
out.append("")
for mode in ("batching", "none"):
    if (mode, 1) in rows and (mode, 32) in rows and (mode, 8) in rows:
        scale = rows[(mode, 32)][0] / rows[(mode, 1)][0]
        p99 = rows[(mode, 8)][2]
        out.append(f"{mode}: p99 at 8 connections {p99:.1f} ms (target <= 25: {'met' if p99 <= 25 else 'MISSED'}); "
                   f"throughput at 32 / at 1 connection x{scale:.2f} (target >= 3: {'met' if scale >= 3 else 'MISSED'}); "
                   f"server peak RSS {rss.get(mode, 0):.0f} MiB")
text = "\n".join(out) + "\n"
print(text, end="")
open(dst, "w").write(text)
PY
